"""The MLflow versions a restore meets: a restore moves the server onto restored data at the MLflow the service runs;
it does not upgrade it too (issue 24).

With an image of a NEWER MLflow than the service records (a newer mlflow-gcp, a pending upgrade), the move would
upgrade the server untold, and putting it back after a failure would meet the upgrade on the previous instance:
refused before anything, with the two ways on. The way back after an upgrade (an OLDER image, `--mlflow-version
OLD`) stays allowed: the restored data is migrated to it, the upgraded instance untouched.
"""

from __future__ import annotations

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.operate import login as login_mod
from mlflow_gcp.operate.restore_plan import RestoreError, RestorePoint
from mlflow_gcp.resources.sql_backups import iso


def refuse_an_upgrade(
    settings: Settings, clients: Clients | None, point: RestorePoint, service
) -> tuple[object, str] | None:
    """Raise RestoreError when the restore would upgrade MLflow or an upgrade is unfinished; else None, or for the
    way back (an older image) `(service, running version)`: what a failed restore puts back
    (operate/restore_put_back.py)."""
    from mlflow_gcp.steps.mlflow_version import UNKNOWN, is_older, pending_upgrade, upgrade_unfinished

    started_from = upgrade_unfinished(service)
    if started_from:
        raise RestoreError(
            f"An MLflow upgrade (from MLflow {started_from}) did not finish: the server is in maintenance. "
            "Nothing was changed.",
            "Run `mlflow-gcp up` to finish the upgrade (or roll it back), then run the restore again.",
        )
    pending = pending_upgrade(settings, service) or reported_versions(settings, clients, service)
    if pending is not None and pending[0] == UNKNOWN:
        raise RestoreError(
            "The MLflow version the server runs is not recorded (an earlier mlflow-gcp deployed it) and the server "
            "does not say it: the restore could upgrade MLflow on the way, which it does not do. Nothing was "
            "changed.",
            "Run `mlflow-gcp up` first (it records the version, and asks before an upgrade), then restore.",
        )
    if pending is None or pending[0] == pending[1]:
        return None
    running, image = pending
    if is_older(image, running):
        return service, running
    argument = point.backup_id or f"--to-time {iso(point.time)}"
    raise RestoreError(
        f"The server runs MLflow {running}, and this mlflow-gcp deploys MLflow {image}: the restore would also "
        "upgrade MLflow, which it does not do. Nothing was changed.",
        f"Restore on MLflow {running}: `mlflow-gcp restore {argument} --mlflow-version {running}` "
        f"(remembered). Or upgrade first with `mlflow-gcp up` (a backup is taken first), then restore.",
    )


def reported_versions(settings: Settings, clients: Clients | None, service) -> tuple[str, str] | None:
    """(running, image) for a service without the version annotation (an earlier tool's) and a pinned image:
    the version the server reports (admin login), or "unknown"; None when the annotation or no pin says."""
    from mlflow_gcp.steps import mlflow_version as mv

    image = mv.image_version(settings)
    if image is None or mv.annotation(service, mv.VERSION_ANNOTATION):
        return None
    try:
        current = login_mod.current_login(settings, clients)
        login: tuple[str, str] | None = (current.username, current.password)
    except MlflowGcpError:
        login = None
    return mv.live_versions(service, image, login=login).running, image
