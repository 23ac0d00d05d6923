"""Cloud SQL Admin calls of the database step's resources (and of `credentials rotate`): reads with retries,
writes that wait out another operation on the instance, and waiting for a write's operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow_gcp.engine.base import StepContext
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.gcp.operations import wait

CREATE_TIMEOUT = 45 * 60.0
UPDATE_TIMEOUT = 30 * 60.0
SMALL_TIMEOUT = 10 * 60.0


# What SqlCalls.write waits on when a read-back found its write already applied.
APPLIED = {"status": "DONE", "name": ""}


class SqlCalls:
    """Cloud SQL Admin calls shared by the step's resources: retries and operation waiting."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        transient = ctx.retry_predicate("sqladmin")
        self.read_predicate = transient
        # Cloud SQL runs one operation at a time per instance and answers 409 operationInProgress to others.
        self.write_predicate = retry.any_of(transient, retry.is_sql_operation_in_progress)

    @property
    def api(self):
        return self.ctx.clients.sqladmin()

    def read(self, build: Callable[[Any], Any]) -> Any:
        return retry.call(lambda: execute(build(self.api)), predicate=self.read_predicate)

    def write(
        self, build: Callable[[Any], Any], what: str, timeout: float, *, applied: Callable[[], bool] | None = None
    ) -> dict:
        """Send a write and wait for its operation. `applied` (for inserts, which are not idempotent) tells after
        an ambiguous failure whether Google had applied it, so it is not sent twice."""
        operation = retry.call(
            lambda: execute(build(self.api)),
            predicate=self.write_predicate,
            deadline=retry.SQL_IN_PROGRESS_DEADLINE,
            applied=(lambda: APPLIED if applied() else None) if applied else None,
        )
        return self.wait(operation, what, timeout)

    def wait(self, operation: dict, what: str, timeout: float) -> dict:
        project = self.ctx.project
        return wait(
            lambda: self.read(lambda api: api.operations().get(project=project, operation=operation["name"])),
            is_done=lambda op: op.get("status") == "DONE",
            error_of=lambda op: (
                "; ".join(e.get("message") or e.get("code", "") for e in (op.get("error") or {}).get("errors", []))
                or None
            ),
            what=what,
            timeout=timeout,
            first=operation,
        )
