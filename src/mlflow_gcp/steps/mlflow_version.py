"""The MLflow version each side runs: the image `up` is about to deploy (the `mlflow-version` setting, else the
pin of the build context's requirements.txt) and the live service (the annotation the deploy step records, else
its image when it is the one deployed now, else what the server says at /mlflow-gcp/versions, else unknown); and
the refusal of a downgrade."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_gcp import build_context
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError

VERSION_ANNOTATION = "mlflow-gcp/mlflow-version"
UPGRADE_ID = "mlflow-gcp/upgrade-id"
UPGRADE_FROM = "mlflow-gcp/upgrade-from"
PREVIOUS_IMAGE = "mlflow-gcp/upgrade-previous-image"
UPGRADE_ANNOTATIONS = (UPGRADE_ID, UPGRADE_FROM, PREVIOUS_IMAGE)
MAINTENANCE_ENV = "MLFLOW_GCP_MAINTENANCE"
MAINTENANCE_REASON = "upgrade"
UNKNOWN = "unknown"
# Set in StepContext.outputs by `restore` while it moves the server onto a restored instance: the data there is the
# backup's, of whichever MLflow made it, and is migrated (backup first) before the server uses it.
DATABASE_MOVING = "database.moving"
# StepContext.created_now holds this for the Cloud SQL instance the run created: its databases are empty.
INSTANCE_CREATED = "sql-instance:{}"
# Set in StepContext.outputs by `credentials rotate`: its rollouts keep the image the service runs (its `image.uri`
# output is the live image) and neither upgrade MLflow nor change the version recorded on the service.
KEEP_RUNNING_IMAGE = "deploy.keep-running-image"
FIELD = "mlflow"
SERVING_OUTCOMES = ("current", "migrated")
NEWER_SCHEMA = "newer-schema"


def image_version(settings: Settings) -> str | None:
    """The MLflow version of the image `up` builds: the `mlflow-version` setting, else the pin of the build
    context's requirements.txt; None when neither says (a context of one's own without the pin)."""
    if settings.mlflow_version:
        return settings.mlflow_version
    try:
        return build_context.mlflow_pin(build_context.container_dir())
    except MlflowGcpError:
        return None


def version_key(version: str) -> tuple[int, ...] | None:
    """`3.17.2` → (3, 17, 2); None for what is not a plain release number (compared only for equality)."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        return None
    return tuple(int(part) for part in version.split("."))


def is_older(image: str, running: str) -> bool:
    a, b = version_key(image), version_key(running)
    return a is not None and b is not None and a < b


def annotation(service: Any, key: str) -> str:
    return service.template.annotations.get(key, "") or service.annotations.get(key, "")


def in_maintenance(service: Any) -> bool:
    return any(env.name == MAINTENANCE_ENV for c in service.template.containers[:1] for env in c.env)


def running_image(service: Any) -> str:
    return service.template.containers[0].image if service.template.containers else ""


@dataclass(frozen=True)
class MlflowVersions:
    """What runs and what `up` is about to deploy."""

    running: str  # the live server's MLflow version, or "unknown"
    image: str  # the new image's
    upgrade_id: str = ""  # set while the service is in maintenance for an upgrade a run has not finished
    previous_image: str = ""  # the image that served before that upgrade
    source: str = ""  # how `running` is known: annotation, image, server, instance, or "" (unknown)
    # No service runs (after `down`, or deleted by hand) but the instance was there before this run: its databases
    # may hold a schema of any MLflow, which the new server would refuse to serve. Nothing to put in maintenance.
    no_server: bool = False
    # The MLflow version whose schema the instance's databases hold, as recorded on it (steps/schema_record.py);
    # "" when not recorded.
    schema: str = ""

    @property
    def pending(self) -> bool:
        return bool(self.upgrade_id) or self.running != self.image

    @property
    def schema_newer(self) -> bool:
        """The databases hold the schema of a newer MLflow than the image: it would refuse them."""
        return is_older(self.image, self.schema)

    @property
    def downgrade(self) -> bool:
        return self.schema_newer or (not self.upgrade_id and is_older(self.image, self.running))

    def describe(self) -> str:
        return (
            f"MLflow {self.running} → {self.image}: database schema migration (irreversible); a backup is taken first"
        )


def live_versions(
    service: Any, image: str, *, new_image_uri: str = "", login: tuple[str, str] | None = None, schema: str = ""
) -> MlflowVersions:
    """The versions, the running one known from the service's annotation, else from its image when it is the one
    `up` deploys, else from the server's /mlflow-gcp/versions (admin login), else unknown. `schema`: the version
    recorded on the instance (refused when newer than the image)."""
    if service is not None and annotation(service, UPGRADE_ID) and in_maintenance(service):
        return MlflowVersions(
            annotation(service, UPGRADE_FROM) or UNKNOWN,
            image,
            annotation(service, UPGRADE_ID),
            annotation(service, PREVIOUS_IMAGE),
            "annotation",
            schema=schema,
        )
    if service is None:
        return without_service(image, schema)
    recorded = annotation(service, VERSION_ANNOTATION)
    if recorded:
        return MlflowVersions(recorded, image, source="annotation", schema=schema)
    if new_image_uri and running_image(service) == new_image_uri:
        return MlflowVersions(image, image, source="image", schema=schema)
    reported = server_reported(service.uri, login)
    if reported:
        return MlflowVersions(reported, image, source="server", schema=schema)
    return MlflowVersions(UNKNOWN, image, schema=schema)


def without_service(image: str, schema: str) -> MlflowVersions:
    """No service (after `down`) on an instance that holds databases: the version recorded on the instance is what
    the data is at; none recorded (a hand setup's instance), unknown."""
    if schema:
        return MlflowVersions(schema, image, source="instance", no_server=True, schema=schema)
    return MlflowVersions(UNKNOWN, image, no_server=True)


def server_reported(url: str, login: tuple[str, str] | None) -> str:
    """The MLflow version the server says it runs (an earlier tool's server has no such route: "")."""
    from mlflow_gcp.resources.server_check import checkable, read_versions

    if not url or login is None or not checkable(url):
        return ""
    answer = read_versions(url, *login)
    return str((answer or {}).get("mlflow") or "")


def downgrade_error(versions: MlflowVersions, newest_backup: str, instance: str = "") -> MlflowGcpError:
    server_newer = not (versions.upgrade_id or versions.no_server) and is_older(versions.image, versions.running)
    newer = versions.running if server_newer else versions.schema
    said = (
        f"The server runs MLflow {newer}"
        if server_newer
        else f"The databases of the Cloud SQL instance {instance} hold the schema of MLflow {newer} (recorded on the "
        "instance)"
    )
    restore = (
        f"To go back to MLflow {versions.image} with the data as it was before the upgrade, restore a backup taken "
        f"before it into a new instance: the newest successful one is {newest_backup} "
        "(`mlflow-gcp backup list` shows them all; `mlflow-gcp restore BACKUP_ID`)."
        if newest_backup
        else "No successful backup of the instance was found (`mlflow-gcp backup list`)."
    )
    return MlflowGcpError(
        f"{said}, newer than the MLflow {versions.image} of the image this mlflow-gcp would deploy: MLflow "
        f"{versions.image} cannot use a schema migrated by {newer}, and a migration cannot be undone in place. "
        "Nothing was changed.",
        f"Stay on MLflow {newer}: run `mlflow-gcp up --mlflow-version {newer}` (remembered), or "
        f"install the mlflow-gcp that deployed it. {restore}",
    )


def newest_backup_named(settings: Settings, clients: Any) -> str:
    """`1234 (2026-12-07T18:30:00Z)`, the newest successful backup of the instance; "" when none or unreadable."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.resources.sql_backups import Backups, iso

    try:
        newest = Backups(settings, clients).newest_successful()
    except (MlflowGcpError, gexc.GoogleAPICallError):
        return ""
    return f"{newest.id} ({iso(newest.ended or newest.time)})" if newest else ""


def refuse_downgrade(settings: Settings, clients: Any, login: Callable[[], tuple[str, str] | None]) -> None:
    """Before any step of `up` runs: a deployment running a newer MLflow than this image is refused, and so is an
    upgrade whose way back is gone (`lost_way_back`). What cannot be read here (nothing deployed yet, an API not
    enabled) is left to the deploy step, which checks again."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.resources.live_service import read_service

    image = image_version(settings)
    if image is None:
        return
    try:
        service = read_service(settings, clients)
    except (MlflowGcpError, gexc.GoogleAPICallError):
        return
    schema = recorded_schema(settings, clients)
    versions = live_versions(service, image, schema=schema)
    if service is not None and versions.running == UNKNOWN and not annotation(service, VERSION_ANNOTATION):
        versions = live_versions(service, image, login=login(), schema=schema)
    if versions.downgrade:
        raise downgrade_error(versions, newest_backup_named(settings, clients), settings.db_instance)
    lost = lost_way_back(clients, service, versions)
    if lost is not None:
        raise lost


def lost_way_back(clients: Any, service: Any, versions: MlflowVersions) -> MlflowGcpError | None:
    """An upgrade about to start (not one a run left in maintenance) while the image the server runs is no longer in
    Artifact Registry: a failed migration restores the backup and deploys that image again, which Cloud Run could
    not start, so the server would stay in maintenance. Refused before anything changes; None when all is well or
    the registry cannot tell (resources/registry_image.py)."""
    from mlflow_gcp.resources.registry_image import image_gone

    if service is None or versions.no_server or versions.upgrade_id or not versions.pending or versions.downgrade:
        return None
    image = running_image(service)
    if not image_gone(clients, image):
        return None
    running, new = versions.running, versions.image
    known = running != UNKNOWN
    said = (
        f"The image the server runs, {image} (MLflow {running if known else 'of an unknown version'}), is no longer "
        "in Artifact Registry (deleted by hand or by a cleanup policy?). Should the migration to MLflow "
        f"{new} fail, the upgrade restores the backup and deploys that image again, and Cloud Run cannot start a "
        "revision of an image it cannot pull: the server would stay in maintenance (503). Nothing was changed: the "
        "server keeps serving as it does."
    )
    if known:
        return MlflowGcpError(
            said,
            f"Run `mlflow-gcp up --mlflow-version {running}` first: it builds the image of MLflow {running} again "
            "(rolled out only when it is not the image the server runs; the version is remembered). Then upgrade "
            f"with `mlflow-gcp up --mlflow-version {new}`.",
        )
    return MlflowGcpError(
        said,
        "Build that image again with the mlflow-gcp that deployed the server (its `mlflow-gcp up`), then run "
        "`mlflow-gcp up` with this one.",
    )


def recorded_schema(settings: Settings, clients: Any) -> str:
    """The MLflow version recorded on the instance (steps/schema_record.py); "" when none, or it cannot be read."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp.errors import execute
    from mlflow_gcp.labels import schema_version

    try:
        instance = execute(clients.sqladmin().instances().get(project=settings.project, instance=settings.db_instance))
    except (MlflowGcpError, gexc.GoogleAPICallError):
        return ""
    return schema_version(instance.get("settings", {}).get("userLabels"))


def upgrade_unfinished(service: Any) -> str:
    """The MLflow version an upgrade started from when it left the service in maintenance (a run stopped before the
    new version served); else ""."""
    if service is None or not (annotation(service, UPGRADE_ID) and in_maintenance(service)):
        return ""
    return annotation(service, UPGRADE_FROM) or UNKNOWN


def pending_upgrade(settings: Settings, service: Any) -> tuple[str, str] | None:
    """(running, image) when the image this mlflow-gcp deploys runs another MLflow than the one the live service
    records (`up` would upgrade, or refuse a downgrade); None when they agree or either is not known."""
    image = image_version(settings)
    running = annotation(service, VERSION_ANNOTATION) if service is not None else ""
    if image is None or not running or running == image:
        return None
    return running, image


def new_upgrade_id() -> str:
    return secrets.token_hex(4)


Log = Callable[[str], None]
