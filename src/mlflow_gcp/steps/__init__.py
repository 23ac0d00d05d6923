"""The setup steps, their order and what each needs first."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow_gcp.engine.base import Resource, StepContext


@dataclass(frozen=True)
class StepDef:
    name: str
    summary: str
    requires: tuple[str, ...]
    module: str

    def resources(self, ctx: StepContext) -> Iterator[Resource]:
        return import_module(f"mlflow_gcp.steps.{self.module}").resources(ctx)


STEPS: tuple[StepDef, ...] = (
    StepDef("apis", "Enable the Google APIs the deployment uses", (), "apis"),
    StepDef("network", "VPC network and private services access for Cloud SQL", ("apis",), "network"),
    StepDef(
        "database", "Cloud SQL for MySQL instance (private IP), databases and root password", ("network",), "database"
    ),
    StepDef(
        "connector", "Serverless VPC Access connector, or the subnet of Direct VPC egress", ("network",), "connector"
    ),
    StepDef("service-account", "Service account the server runs as", ("apis",), "service_account"),
    StepDef("bucket", "GCS artifact bucket, writable by the service account only", ("service-account",), "bucket"),
    StepDef(
        "secret-access",
        "Secret Manager secrets and the service account's access, early: grants take minutes to apply",
        ("service-account",),
        "secret_access",
    ),
    StepDef(
        "secrets",
        "Secret versions: passwords, and the server's settings once the database's IP is known",
        ("database", "bucket", "secret-access"),
        "secrets",
    ),
    StepDef("image", "Server image built by Cloud Build into Artifact Registry", ("apis",), "image"),
    StepDef("deploy", "Cloud Run service", ("secrets", "connector", "service-account", "image"), "deploy"),
    StepDef("encryption", "Cloud SQL accepts only encrypted connections, once the server uses TLS", ("deploy",),
            "encryption"),
    # Last: the settings are recorded once everything they describe is applied.
    StepDef("settings", "Record the applied settings with the deployment", ("encryption",), "settings"),
)

BY_NAME = {step.name: step for step in STEPS}

# `mlflow-gcp step deploy` builds the image too (for a user the image is part of deploying), then requires
# encryption (the server uses TLS first) and records the settings, as `up` does. `step image` alone builds it.
COMMAND_STEPS: dict[str, tuple[str, ...]] = {
    step.name: (step.name,) for step in STEPS if step.name not in ("encryption", "settings")
}
COMMAND_STEPS["deploy"] = ("image", "deploy", "encryption", "settings")
# Likewise `step secrets` makes the secrets and their grants if the early step has not.
COMMAND_STEPS["secrets"] = ("secret-access", "secrets")


def prerequisites(names: tuple[str, ...]) -> list[StepDef]:
    """Every step the given ones need, transitively, in run order, excluding the given ones."""
    needed: set[str] = set()
    stack = [r for n in names for r in BY_NAME[n].requires]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(BY_NAME[name].requires)
    return [step for step in STEPS if step.name in needed and step.name not in names]


def load_prerequisites(names: tuple[str, ...], ctx: StepContext) -> None:
    """Read the steps that `names` need, so their outputs are known; a missing resource says which step to
    run first. In plan mode a missing resource is fine: it is simply not there yet."""
    from mlflow_gcp.engine.base import Mode
    from mlflow_gcp.engine.loop import run_step  # google.api_core: not at import time, `--help` must stay fast

    check_ctx = ctx.for_step("", Mode.PLAN if ctx.dry_run else Mode.CHECK)
    for step in prerequisites(names):
        run_step(step, check_ctx)
