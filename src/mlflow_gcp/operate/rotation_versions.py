"""The MLflow a rotation meets (issue 24): a rotation changes passwords, never MLflow. Its rollouts keep the image the
service runs, so an MLflow upgrade this mlflow-gcp would make stays `up`'s to do (asked, a backup first), and is said.
An upgrade that stopped with the server in maintenance is refused: the new login could not be checked. So is a live
image no longer in Artifact Registry: no revision of it could start, and the rotation would only roll back. So is a
server that runs on another database than the deployment's instance (a restore, or its way back, killed halfway):
the rollout pins the mlflow-env that names the instance, and would put the MLflow the server runs onto a schema that
may be another MLflow's (the older MLflow onto the instance an upgrade migrated)."""

from __future__ import annotations

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.operate.rotation_stops import RotationError


def refuse_an_unfinished_upgrade(service, command: str) -> None:
    from mlflow_gcp.steps.mlflow_version import upgrade_unfinished

    started_from = upgrade_unfinished(service)
    if started_from:
        raise RotationError(
            f"An MLflow upgrade (from MLflow {started_from}) did not finish: the server answers 503 in "
            "maintenance, so a new login could not be checked. Nothing was changed.",
            f"Run `mlflow-gcp up` to finish the upgrade (or roll it back), then `{command}`.",
        )


def refuse_moving_the_server(ctx, service, command: str) -> None:
    """The server's database (DB_HOST of the mlflow-env version it runs with) must be the deployment's instance, whose
    private IP the database step read into `ctx` (not known: not checked)."""
    from mlflow_gcp.operate import login as login_mod

    settings, ip = ctx.settings, ctx.outputs.get("database.private_ip") or ""
    host = login_mod.db_host(login_mod.pinned_env(ctx.clients, settings.project, service)) if ip else ""
    if host and host != ip:
        raise RotationError(
            f"The server runs on the database at {host}, not on the deployment's Cloud SQL instance "
            f"{settings.db_instance} ({ip}): a restore or a move was cut short. A rotation's rollout would move the "
            f"server, with the MLflow it runs, onto {settings.db_instance}. Nothing was changed.",
            f"Run the same `mlflow-gcp restore` again to finish it, or `mlflow-gcp up` to put the server back on "
            f"{settings.db_instance}; then `{command}`.",
        )


def kept_image_line(settings: Settings, clients: Clients, service) -> str | None:
    """What the rotation says about the image it keeps, when it is not this mlflow-gcp's; None when it is."""
    from mlflow_gcp.steps.mlflow_version import pending_upgrade

    pending = pending_upgrade(settings, service)
    if pending:
        return (
            f"an MLflow upgrade is pending ({pending[0]} → {pending[1]}): the rotation keeps the image the server "
            "runs; run `mlflow-gcp up` to upgrade (a backup is taken first)"
        )
    if not runs_this_image(settings, clients, service):
        return (
            "the server runs another image than this mlflow-gcp's: the rotation keeps it; `mlflow-gcp up` rolls "
            "out this one"
        )
    return None


def runs_this_image(settings: Settings, clients: Clients, service) -> bool:
    from mlflow_gcp import build_context
    from mlflow_gcp.engine.base import StepContext
    from mlflow_gcp.steps.image_storage import image_uri
    from mlflow_gcp.steps.mlflow_version import running_image

    try:
        tag = build_context.image_tag(build_context.container_dir(), settings.mlflow_version)
    except (MlflowGcpError, OSError):
        return True  # not known here: nothing to say
    ours = image_uri(StepContext(settings=settings, clients=clients), tag)
    return running_image(service) == ours


def refuse_a_missing_image(settings: Settings, clients: Clients, service, command: str) -> None:
    """Before anything changes: the image the rotation keeps must still be there to start a revision from."""
    from mlflow_gcp.resources.registry_image import image_gone
    from mlflow_gcp.steps.mlflow_version import pending_upgrade, running_image

    image = running_image(service)
    if not image_gone(clients, image):
        return  # there, or not known to be gone: the rollout says it if it cannot pull
    pending = pending_upgrade(settings, service)
    up = f"mlflow-gcp up --mlflow-version {pending[0]}" if pending else "mlflow-gcp up"
    raise RotationError(
        f"The image the server runs, {image}, is no longer in Artifact Registry (deleted by hand or by a cleanup "
        "policy?). A rotation keeps the server's image, and Cloud Run cannot start a revision of an image it cannot "
        "pull. Nothing was changed: the old login keeps working.",
        f"Run `{up}` first: it builds the image again and rolls it out"
        + (f" (on MLflow {pending[0]}, the one the server runs; remembered)" if pending else "")
        + f". Then run `{command}`.",
    )
