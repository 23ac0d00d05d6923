"""The project itself: its number (Resource Manager) and its IAM policy.

Bucket names are global: anyone can create `PROJECT_cloudbuild` or `PROJECT-mlflow-artifacts` first. A bucket is
ours only when its `projectNumber` is this project's number, so every bucket the tool reads is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import StepContext
from mlflow_gcp.errors import NameTakenError
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.resources.iam import Policy

RESOURCE_MANAGER = "cloudresourcemanager"
NUMBER_OUTPUT = "project.number"


def project_number(ctx: StepContext) -> str | None:
    """This project's number, read once per run. None only while planning on a project whose Resource Manager
    API is not enabled yet (the apis step enables it)."""
    number = ctx.outputs.get(NUMBER_OUTPUT)
    if number:
        return number
    try:
        project = ctx.call(
            RESOURCE_MANAGER,
            lambda: execute(ctx.clients.resource_manager().projects().get(projectId=ctx.project)),
        )
    except gexc.GoogleAPICallError as e:
        if ctx.absent_in_plan(e):
            return None
        raise
    number = str(project["projectNumber"])
    ctx.outputs.set(NUMBER_OUTPUT, number)
    return number


def check_owned_bucket(ctx: StepContext, bucket, what: str, hint: str) -> None:
    """Raise NameTakenError when `bucket` (a google.cloud.storage Bucket) belongs to another project."""
    ours = project_number(ctx)
    owner = str(bucket.project_number or "")
    if ours is None or owner == ours:
        return
    raise NameTakenError(
        f"{what} gs://{bucket.name} belongs to another project (number {owner or 'unknown'}), not to {ctx.project} "
        f"(number {ours}). Bucket names are global, so anyone can create this one first; mlflow-gcp never puts "
        "anything in, nor grants anything on, a bucket of another project.",
        hint,
    )


def project_policy_io(ctx: StepContext) -> tuple[Callable[[], Policy], Callable[[Policy], None]]:
    """Getter and setter of the project's IAM policy (Resource Manager v1 getIamPolicy / setIamPolicy). While
    Resource Manager is not enabled (planning), the getter gives an empty policy, so a binding reads as absent."""

    def projects():
        return ctx.clients.resource_manager().projects()

    def get() -> Policy:
        try:
            return ctx.call(
                RESOURCE_MANAGER,
                lambda: execute(
                    projects().getIamPolicy(resource=ctx.project, body={"options": {"requestedPolicyVersion": 3}})
                ),
            )
        except gexc.GoogleAPICallError as e:
            if ctx.absent_in_plan(e):
                return {}
            raise

    def set_(policy: Policy) -> None:
        ctx.call(
            RESOURCE_MANAGER,
            lambda: execute(projects().setIamPolicy(resource=ctx.project, body={"policy": policy})),
        )

    return get, set_
