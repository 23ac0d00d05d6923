"""What `status` reports: every resource read through the steps in plan mode, and live checks of the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.config import Settings
from mlflow_gcp.engine.base import Event
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.inventory import Inventory, read_inventory
from mlflow_gcp.operate.left_behind import INSTANCE, LeftBehindReport, deleted_instance_note, find_left_behind
from mlflow_gcp.remembered import Resolution
from mlflow_gcp.resources.server_check import Check, ServerReport, check_server, read_versions

DEPLOY_STEP = "deploy"

# What kind of problem was found, so the advice fits it.
MISSING = "missing"  # a resource does not exist: `up` makes it
DRIFT = "drift"  # a resource differs from the configuration: `up` resets it
UNREADABLE = "unreadable"  # a step could not be read (API disabled, permission): its error says what to do
UNHEALTHY = "unhealthy"  # the server answers, but not as it should: its logs say why
DATABASE_REFUSED = "database-refused"  # the server answers but its database refuses it: rotate --database
UNREACHABLE = "unreachable"  # the server does not answer at all: the network between here and there
BROKEN = "broken"  # a resource exists but its state makes it unusable (ERROR, STOPPED): its hint says what to do


@dataclass
class StatusReport:
    inventory: Inventory
    url: str | None
    server: ServerReport | None
    problems: list[str] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)  # MISSING, DRIFT, ... for the advice
    # The settings of the deployment (recorded, given, adopted or default), with the live values that differ.
    settings: dict[str, Any] | None = None
    # Labels of the resources holding data that stay while the server is gone (after `down`): shown `kept`.
    kept: set[str] = field(default_factory=set)
    backups: Any = None  # resources.sql_backups.BackupSummary, when the instance runs
    # The deployment's data resources deleted by hand (recorded, now missing): shown `deleted`, with the backups.
    deleted: set[str] = field(default_factory=set)
    # Labelled resources of the deployment the settings no longer name (the old instance after a move...).
    left_behind: LeftBehindReport = field(default_factory=LeftBehindReport)
    # The MLflow version the service runs (its annotation), the image's of this mlflow-gcp, and what the server
    # says at /mlflow-gcp/versions (the schema revision of each database) when it answers the admin.
    mlflow: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.inventory.ctx.project,
            "region": self.inventory.ctx.region,
            "ok": self.ok,
            "problems": list(self.problems),
            "steps": [
                {
                    "step": entry.step,
                    "error": entry.error.message if entry.error else None,
                    "resources": [
                        {
                            "resource": item.state.label,
                            "condition": "kept"
                            if item.state.label in self.kept
                            else "deleted"
                            if item.state.label in self.deleted
                            else item.state.condition,
                            "exists": None if item.state.unreadable else item.state.exists,
                            "drift": list(item.state.drift),
                            "problem": item.state.problem or None,
                            "unreadable": item.state.unreadable or None,
                            "details": dict(item.state.details),
                        }
                        for item in entry.items
                    ],
                }
                for entry in self.inventory.steps
            ],
            "settings": self.settings,
            "backups": self.backups.as_dict() if self.backups is not None else None,
            "left_behind": [
                {"resource": i.label, "location": i.location, "delete": i.delete} for i in self.left_behind.items
            ],
            "mlflow": self.mlflow,
            "service": {
                "url": self.url,
                "checks": [
                    {
                        "check": c.name,
                        "ok": c.ok,
                        "expected": c.expected,
                        "status": c.status,
                        "detail": c.detail,
                        "error": c.error,
                    }
                    for c in (self.server.checks if self.server else ())
                ],
            },
        }


def kept_resources(inventory: Inventory) -> set[str]:
    """With no Cloud Run service (after `down`, which keeps the data), the resources holding data that exist as
    configured are `kept`, not missing: their grants went with the server's service account."""
    from mlflow_gcp.steps.deploy import CloudRunService

    service = inventory.find(DEPLOY_STEP, CloudRunService)
    if service is None or service.current is not None or service.state.unreadable:
        return set()
    return {
        item.state.label for _, item in inventory.items() if item.resource.holds_data and item.state.condition == "ok"
    }


def deleted_resources(inventory: Inventory, resolution: Resolution | None) -> set[str]:
    """The Cloud SQL instance the deployment had under the same name (it has a record) that no longer exists."""
    from mlflow_gcp.moves import recorded_data_resources

    recorded = recorded_data_resources(resolution) if resolution is not None else set()
    return {
        item.state.label
        for _, item in inventory.items()
        if item.state.label in recorded and item.state.label.startswith(INSTANCE) and item.state.condition == "missing"
    }


def mlflow_versions(settings: Settings, service: Any, reported: dict | None) -> dict[str, Any]:
    """`{"running", "image", "server", "tracking_schema", "tracking_head", "auth_schema", "auth_head"}`: None where
    not known (a service of an earlier mlflow-gcp has no annotation, a server in maintenance answers nothing)."""
    from mlflow_gcp.steps.mlflow_version import VERSION_ANNOTATION, annotation, image_version

    reported = reported or {}
    return {
        "running": annotation(service, VERSION_ANNOTATION) or None,
        "image": image_version(settings),
        "server": reported.get("mlflow"),
        **{key: reported.get(key) for key in ("tracking_schema", "tracking_head", "auth_schema", "auth_head")},
    }


def serving_host(settings: Settings, clients: Clients, service: Any) -> str:
    """The database host the server runs with (DB_HOST of its mlflow-env version); "" when not known."""
    from google.api_core.exceptions import GoogleAPICallError

    from mlflow_gcp.operate.login import db_host, pinned_env

    try:
        return db_host(pinned_env(clients, settings.project, service)) if service is not None else ""
    except (MlflowGcpError, GoogleAPICallError):
        return ""  # not readable: the login check, made the same way, says why


def server_elsewhere(settings: Settings, host: str, instance_ip: str, instance: str = "") -> str | None:
    """The problem when the server runs on another database (`host`, instance `instance` when known) than the
    deployment's instance (private IP `instance_ip`): a restore or a move cut short. Its failed checks are then that
    database's, not a password."""
    if not host or not instance_ip or host == instance_ip:
        return None
    host = f"{host} (Cloud SQL instance {instance})" if instance else host
    return (
        f"the server runs on the database at {host}, not on the deployment's Cloud SQL instance "
        f"{settings.db_instance}: a restore or a move was cut short. Run the same `mlflow-gcp restore` again to "
        f"finish it, or `mlflow-gcp up` to put the server back on {settings.db_instance}"
    )


def collect_status(
    settings: Settings,
    *,
    clients: Clients | None = None,
    on_event: Callable[[Event], None] | None = None,
    resolution: Resolution | None = None,
) -> StatusReport:
    from mlflow_gcp.operate.login import login_of
    from mlflow_gcp.steps.deploy import CloudRunService

    clients = clients or Clients(settings.project)
    inventory = read_inventory(settings, clients=clients, on_event=on_event)
    kept = kept_resources(inventory)
    deleted = deleted_resources(inventory, resolution)
    problems: list[str] = []
    kinds: set[str] = set()
    seen: set[tuple[str, str]] = set()  # a resource two steps read (mysql-credentials) is one problem
    instance_unusable = False  # the instance missing, stopped, suspended...: its own problem says what to do
    for entry in inventory.steps:
        if entry.error is not None:
            problems.append(f"{entry.step}: {entry.error.message}")
            kinds.add(UNREADABLE)
        for item in entry.items:
            state = item.state
            identity = (item.resource.kind, str(getattr(item.resource, "path", state.label)))
            if state.condition == "ok" or identity in seen or getattr(item.resource, "target", None) in kept:
                continue  # a kept resource's grants went with the service account; `up` makes them again
            seen.add(identity)
            if item.resource.kind == INSTANCE and (state.problem or not state.exists):
                instance_unusable = True
            if state.unreadable:
                problems.append(f"{state.label} could not be read: {state.unreadable}")
                kinds.add(UNREADABLE)
            elif state.label in deleted:
                problems.append(deleted_instance_note(state.label.removeprefix(f"{INSTANCE} "), settings.project))
                kinds.add(MISSING)
            elif not state.exists:
                problems.append(f"{state.label} is missing" + (f": {state.problem}" if state.problem else ""))
                kinds.add(BROKEN if state.problem else MISSING)
            elif state.problem:
                problems.append(state.problem)
                kinds.add(BROKEN)
            if state.exists and state.drift:
                problems.append(f"{state.label} differs from the configuration: {', '.join(state.drift)}")
                kinds.add(DRIFT)
    service = inventory.find(DEPLOY_STEP, CloudRunService)
    url = service.current.uri if service is not None and service.current is not None else None
    host = serving_host(settings, clients, service.current) if url else ""
    left_behind = find_left_behind(settings, clients, host)
    server = None
    mlflow = mlflow_versions(settings, service.current, None) if url else None
    if url:
        try:
            login = login_of(clients, settings, service.current)
            server = check_server(url, login.username, login.password)
            mlflow = mlflow_versions(settings, service.current, read_versions(url, login.username, login.password))
        except MlflowGcpError as error:
            server = ServerReport(url, (Check("login", False, 200, None, error.message),))
        failed = [c for c in server.checks if not c.ok]
        instance_ip = inventory.outputs.get("database.private_ip") or ""
        elsewhere = server_elsewhere(settings, host, instance_ip, left_behind.serving)
        if elsewhere:
            problems.append(elsewhere)
            kinds.add(DRIFT)
        if failed and not server.reachable and all(c.error for c in failed):
            causes = sorted({c.detail for c in failed})
            problems.append(f"{url} does not answer: {', '.join(causes)}")
            kinds.add(UNREACHABLE)
        elif failed:
            problems += [f"{url}: {c.name} check failed ({c.detail})" for c in failed]
            if server.database_refused and not elsewhere and not instance_unusable:
                problems.append(
                    "the server cannot use its database: it most likely refuses the MySQL password of "
                    "mysql-credentials (was the Cloud SQL user's password reset by hand, e.g. in the Console?); "
                    "`mlflow-gcp credentials rotate --database` sets a new one on the user and the server together"
                )
                kinds.add(DATABASE_REFUSED)
            # A check with neither an answer nor a network error could not be made (the login was unreadable).
            kinds.add(UNHEALTHY if server.reachable else UNREADABLE)
    else:
        problems.append("the service has no URL: no live check was made")
        kinds.add(MISSING)
    report = StatusReport(
        inventory, url, server, problems, kinds, kept=kept, deleted=deleted, mlflow=mlflow
    )
    if inventory.outputs.get("database.private_ip"):  # the instance exists and has run: its backups can be read
        from mlflow_gcp.resources.sql_backups import summarize

        report.backups = summarize(settings, clients)
    report.left_behind = left_behind
    if resolution is not None:
        report.settings = resolution.as_dict(inventory.observed_settings())
    return report
