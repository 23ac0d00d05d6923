"""How the migration job's container ended, as Google says it apart from its log lines: the execution's failed
conditions, and its task's last attempt (`projects.locations.jobs.executions.tasks`,
https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions.tasks): the exit code, or no
exit code and no signal for a container that never started. The job runs one task and allows no retry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.errors import MlflowGcpError

# The image's `migrate` exits 3 when a schema is newer than its MLflow knows, having changed nothing
# (container/README.md): the outcome `newer-schema` of its result line, told by the exit code when the line is not
# in Logging.
NEWER_SCHEMA_EXIT, NEWER_SCHEMA_OUTCOME = 3, "newer-schema"


def never_started(execution: Any) -> bool:
    """Failed without its container running (a secret version it cannot read, an image it cannot pull, a VPC
    connector not ready): no line of it will reach Logging, not even the exit line. Told by the failed `Completed`
    (or `Started`) condition carrying a Condition.CommonReason
    (https://cloud.google.com/run/docs/reference/rest/v2/Condition#CommonReason) and no NON_ZERO_EXIT_CODE, the
    execution reason of a container that ran and exited."""
    from google.cloud import run_v2

    undefined = run_v2.Condition.CommonReason.COMMON_REASON_UNDEFINED
    for c in execution.conditions:
        if c.type_ not in ("Completed", "Started") or c.state.name != "CONDITION_FAILED":
            continue
        if c.execution_reason == run_v2.Condition.ExecutionReason.NON_ZERO_EXIT_CODE:
            return False
        if c.reason != undefined:
            return True
    return False


@dataclass(frozen=True)
class Attempt:
    """How the container of the execution's task ended (its `lastAttemptResult`,
    https://cloud.google.com/run/docs/reference/rest/v2/projects.locations.jobs.executions.tasks#TaskAttemptResult)."""

    exit_code: int  # 0 also when it never exited with a code
    started: bool  # False: a failed attempt with neither an exit code nor a termination signal (never ran)
    message: str = ""


def attempt_of(task: Any) -> Attempt | None:
    from google.cloud import run_v2

    if task is None or "last_attempt_result" not in task:
        return None
    result = run_v2.TaskAttemptResult.to_dict(task.last_attempt_result)
    status = result.get("status") or {}
    code = int(result.get("exit_code") or 0)
    ran = not status.get("code") or bool(code) or bool(result.get("term_signal"))
    return Attempt(code, ran, str(status.get("message") or ""))


def last_attempt(clients: Any, execution: str, call: Callable[[Callable[[], Any]], Any]) -> Attempt | None:
    """The last attempt of the execution's (one) task; None when Google lists no task or refuses to (the
    execution's conditions and Logging still tell). `call` retries and turns refusals into the tool's errors."""
    from google.api_core import exceptions as gexc

    client = clients.run_tasks()
    try:
        tasks = call(lambda: list(client.list_tasks(parent=execution)))
    except (gexc.NotFound, MlflowGcpError):
        return None
    return attempt_of(tasks[0]) if tasks else None
