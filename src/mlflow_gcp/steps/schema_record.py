"""The MLflow version whose schema the Cloud SQL instance's databases hold, recorded on the instance as the label
`mlflow-gcp-mlflow-version` (issue 24).

The service's annotation says what the server runs; it goes with the service when `down` deletes it, while the
instance and its data stay. The label stays with the data, so the `up` after `down` knows the schema: the same
MLflow deploys at once, another one is an upgrade (or refused when older), and no label (an instance of a hand
setup, or of an earlier mlflow-gcp with no service left) keeps the migration of an unknown schema.

Who writes it: the upgrade, `unknown` before its migration job runs (the schema may be half-migrated until it ends),
the new version once the job succeeded, the previous one again after a roll-back restored the backup; the deploy
step's `SchemaRecord` after a serving revision (a first deploy makes fresh schemas; a deployment of an earlier
mlflow-gcp, its annotation); `restore` writes `unknown` on the instance it restores into (a backup or a clone of
any time) until the move's migration records the version. Terraform's module ignores the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow_gcp.engine.base import Effect, Impact, Resource, StepContext
from mlflow_gcp.labels import SCHEMA_LABEL, SCHEMA_NOT_KNOWN, schema_label_value
from mlflow_gcp.steps.sql_calls import SMALL_TIMEOUT, SqlCalls
from mlflow_gcp.steps.sql_instance import SCHEMA_OUTPUT

FIELD = "label"
# Set by the deploy step's service (its outputs): the MLflow version the serving revision runs ("" in maintenance).
SERVING_OUTPUT = "service.mlflow_version"


def record(ctx: StepContext, version: str, why: str) -> None:
    """Label the instance of the settings with `version` (or `unknown` for ""); the live labels are kept."""
    instance = ctx.settings.db_instance
    value = schema_label_value(version) if version else SCHEMA_NOT_KNOWN
    sql = SqlCalls(ctx)
    current = sql.read(lambda api: api.instances().get(project=ctx.project, instance=instance))
    live = current.get("settings", {}).get("userLabels") or {}
    if live.get(SCHEMA_LABEL) != value:
        labels = {**live, SCHEMA_LABEL: value}
        sql.write(
            lambda api: api.instances().patch(
                project=ctx.project, instance=instance, body={"settings": {"userLabels": labels}}
            ),
            f"Recording on {instance} {why}",
            SMALL_TIMEOUT,
        )
    ctx.outputs.set(SCHEMA_OUTPUT, version)


@dataclass(frozen=True)
class Recorded:
    recorded: str  # the version the label says; "" when none (or `unknown`)
    serving: str  # the version the service serves, "" when not known (no service, in maintenance, no annotation)


class SchemaRecord(Resource):
    """The label, compared after the service: the version its serving revision runs, once it runs it."""

    kind = "MLflow schema recorded on"
    absent_is_desired = True  # no instance yet: nothing to record on
    deletable = False  # a label: it goes with the instance

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.db_instance)

    def read(self) -> Recorded | None:
        recorded = self.ctx.outputs.get(SCHEMA_OUTPUT)
        if recorded is None:
            return None  # the instance was not read (it does not exist yet)
        return Recorded(recorded, self.ctx.outputs.get(SERVING_OUTPUT) or "")

    def drift(self, current: Recorded) -> list[str]:
        return [FIELD] if current.serving and current.recorded != current.serving else []

    def effect(self, field: str, current: Any) -> Effect:
        return Effect(Impact.NONE, "a label")

    def details(self, current: Recorded) -> dict[str, str]:
        return {"schema": f"MLflow {current.recorded}" if current.recorded else "not recorded"}

    def create(self) -> None:  # absent_is_desired: never asked
        raise NotImplementedError

    def update(self, current: Recorded, fields: list[str]) -> None:
        record(self.ctx, current.serving, f"the MLflow version its schema is at ({current.serving})")
