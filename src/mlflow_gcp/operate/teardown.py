"""`down`: delete what `up` made, in reverse step order, keeping what holds data unless asked.

Kept always: the enabled APIs and the `default` network. Kept unless `delete_data`: resources with
`holds_data` (the Cloud SQL instance, its databases and user, the bucket, the secrets) and the network step's
resources (the private services range and connection the instance needs; with `delete_data` they go only after
the instance is gone). Deleting stops at the first failure, since later resources may still be in use by the
one that failed; a rerun resumes. What is already gone is not touched, so a second run sends no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.engine.base import Mode, Resource
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.inventory import Inventory

NEVER_TOUCHED_STEPS = ("apis", "encryption")  # encryption: a setting of the instance, nothing to delete
NETWORK_STEP = "network"

DELETE, KEEP = "delete", "keep"
DELETED, KEPT, FAILED, UNSUPPORTED = "deleted", "kept", "failed", "not supported"


@dataclass
class Removal:
    step: str
    resource: Resource
    current: Any
    action: str  # DELETE or KEEP
    reason: str = ""
    outcome: str = ""  # after run_teardown: DELETED, KEPT, FAILED or UNSUPPORTED
    error: str = ""

    @property
    def label(self) -> str:
        return self.resource.label


def holds_data(resource: Resource) -> bool:
    """Secrets hold data whatever their class says: passwords nobody else knows."""
    from mlflow_gcp.resources.secret import Secret

    return resource.holds_data or isinstance(resource, Secret)


def _is_default_network(step: str, resource: Resource) -> bool:
    from mlflow_gcp.steps.network import Network

    return step == NETWORK_STEP and isinstance(resource, Network) and resource.name == "default"


def nothing_deployed(inventory: Inventory) -> bool:
    """A project whose APIs are not enabled yet (a new one): what could not be read cannot exist, and nothing that
    could be read exists either (the default network aside)."""
    from mlflow_gcp.errors import ApiDisabledError

    errors = [s.error for s in inventory.steps if s.error is not None and s.step not in NEVER_TOUCHED_STEPS]
    if not errors or not all(isinstance(e, ApiDisabledError) for e in errors):
        return False
    return all(
        item.current is None or _is_default_network(step, item.resource)
        for step, item in inventory.items()
        if step not in NEVER_TOUCHED_STEPS
    )


def nothing_exists(inventory: Inventory) -> bool:
    """Nothing of the deployment exists: its APIs are not enabled (nothing_deployed), or they are and every
    resource was read as absent (the default network aside)."""
    if nothing_deployed(inventory):
        return True
    if any(s.error is not None for s in inventory.steps if s.step not in NEVER_TOUCHED_STEPS):
        return False
    return all(
        (item.current is None and not item.state.unreadable) or _is_default_network(step, item.resource)
        for step, item in inventory.items()
        if step not in NEVER_TOUCHED_STEPS
    )


def plan_teardown(inventory: Inventory, *, delete_data: bool) -> list[Removal]:
    """What exists, in deletion order, each marked delete or keep with the reason."""
    failed = [s for s in inventory.steps if s.error is not None and s.step not in NEVER_TOUCHED_STEPS]
    if failed:
        first = failed[0]
        raise MlflowGcpError(
            f"The {first.step} step's resources could not be read, so nothing was deleted: {first.error.message}",
            first.error.hint,
        )
    plan: list[Removal] = []
    for entry in reversed(inventory.steps):
        if entry.step in NEVER_TOUCHED_STEPS:
            continue
        for item in reversed(entry.items):
            if item.current is None or not item.resource.deletable:
                continue
            resource = item.resource
            if _is_default_network(entry.step, resource):
                plan.append(Removal(entry.step, resource, item.current, KEEP, "the default network is never touched"))
            elif holds_data(resource) and not delete_data:
                plan.append(Removal(entry.step, resource, item.current, KEEP, "holds data (--delete-data removes it)"))
            elif entry.step == NETWORK_STEP and not delete_data:
                plan.append(
                    Removal(
                        entry.step,
                        resource,
                        item.current,
                        KEEP,
                        "the kept database reaches the network through it (--delete-data removes it)",
                    )
                )
            elif entry.step == NETWORK_STEP and (reason := _abandoned(resource, entry.items)):
                plan.append(Removal(entry.step, resource, item.current, KEEP, reason))
            else:
                plan.append(Removal(entry.step, resource, item.current, DELETE))
    return _once_per_secret(plan)


ABANDON_SOURCE = "hashicorp/terraform-provider-google#16275"


def _abandoned(resource: Resource, items) -> str | None:
    """Why a network resource is left in place even with --delete-data, or None.

    Google refuses to delete a private services connection while Cloud SQL is registered as a producer on it,
    which lasts days after the last instance is deleted (hashicorp/terraform-provider-google#16275). As
    Terraform's `deletion_policy = "ABANDON"` does, the connection is left; so are the range it reserves and
    the network it is on, which cannot go while it exists."""
    from mlflow_gcp.steps.network import Network, PeeringRange, PrivateConnection

    connection = next((i.current for i in items if isinstance(i.resource, PrivateConnection)), None)
    if connection is None:
        return None
    if isinstance(resource, PrivateConnection):
        return (
            "Google refuses to delete it while Cloud SQL stays registered as a producer, days after the instance "
            f"is gone ({ABANDON_SOURCE}): left in place"
        )
    if isinstance(resource, PeeringRange) and resource.name in connection.get("reservedPeeringRanges", []):
        return "the private services connection left in place reserves it"
    if isinstance(resource, Network):
        return "the private services connection left in place is on it"
    return None


def abandoned_notes(plan: list[Removal]) -> list[str]:
    """What `down --delete-data` left in place on purpose, and how to remove it later."""
    from mlflow_gcp.steps.network import Network, PeeringRange, PrivateConnection

    kept = [r for r in plan if r.step == NETWORK_STEP and r.action == KEEP and ABANDON_SOURCE in r.reason]
    if not kept:
        return []
    connection = kept[0].resource
    assert isinstance(connection, PrivateConnection)
    network = connection.ctx.settings.network
    commands = [
        "`gcloud services vpc-peerings delete --service=servicenetworking.googleapis.com "
        f"--network={network}` (if nothing else uses it)"
    ]
    for removal in plan:
        if removal.action == KEEP and isinstance(removal.resource, PeeringRange) and "left in place" in removal.reason:
            commands.append(f"`gcloud compute addresses delete {removal.resource.name} --global`")
        if removal.action == KEEP and isinstance(removal.resource, Network) and "left in place" in removal.reason:
            commands.append(f"`gcloud compute networks delete {removal.resource.name}`")
    return [
        f"The private services connection on {network} was left in place: Google refuses to delete it while "
        f"Cloud SQL stays registered as a producer, for days after the instance is deleted ({ABANDON_SOURCE}). "
        f"It costs nothing. To remove it later: {', then '.join(commands)}."
    ]


def _once_per_secret(plan: list[Removal]) -> list[Removal]:
    """A secret read by two steps (mysql-credentials: made by the database step, checked by the secrets step)
    is listed once, where its owner deletes it: the last occurrence in deletion order."""
    from mlflow_gcp.resources.secret import Secret

    last = {r.resource.path: i for i, r in enumerate(plan) if isinstance(r.resource, Secret)}
    return [r for i, r in enumerate(plan) if not isinstance(r.resource, Secret) or last[r.resource.path] == i]


def run_teardown(plan: list[Removal], *, log: Callable[[str], None] = print) -> list[Removal]:
    """Delete what the plan marks DELETE, in order; stop at the first failure (its error is raised after the
    outcomes are recorded, so the caller can show them)."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp.errors import translate

    for removal in plan:
        if removal.action == KEEP:
            removal.outcome = KEPT
            continue
        resource = removal.resource
        resource.ctx.mode = Mode.APPLY  # it was read in plan mode; deleting is applying
        log(f"deleting {removal.label}")
        try:
            resource.delete(removal.current)
        except NotImplementedError as e:
            removal.outcome, removal.error = UNSUPPORTED, str(e)
            log(f"{removal.label} cannot be deleted by this tool: delete it yourself")
            continue
        except gexc.NotFound:
            pass  # gone meanwhile
        except gexc.GoogleAPICallError as e:
            removal.outcome, removal.error = FAILED, str(e)
            raise translate(e, f"deleting {removal.label}", resource.ctx.project) from e
        except Exception as e:
            removal.outcome, removal.error = FAILED, str(e)
            raise
        removal.outcome = DELETED
    return plan


def reserved_names(plan: list[Removal], *, done: bool = True) -> list[str]:
    """Names Google keeps for a while after a deletion (`done`), or would keep (a dry run)."""
    from mlflow_gcp.steps.bucket import Bucket
    from mlflow_gcp.steps.sql_instance import Instance

    notes = []
    for removal in plan:
        if (removal.outcome != DELETED) if done else (removal.action != DELETE):
            continue
        if isinstance(removal.resource, Instance):
            notes.append(
                f"The Cloud SQL instance name {removal.resource.name} stays reserved for about a week: a new `up` "
                "before then needs another name (--db-instance NAME)."
            )
        elif isinstance(removal.resource, Bucket):
            notes.append(
                f"The bucket name {removal.resource.name} is free again for anyone once deleted; to be sure to get "
                "it back, run `up` soon or pick another with --bucket NAME."
            )
    return notes
