"""Putting the server back on the previous instance after a failed restore (`roll_back`): `up`'s steps with the
previous instance, except after a restore onto an OLDER MLflow (`restore BACKUP --mlflow-version OLD`, the way back
after an upgrade). There `up`'s steps cannot do it: with the older image they meet the downgrade refusal (the
previous instance is migrated to the newer MLflow), and once the service runs the older image they would deploy it
onto that instance, which it refuses. So the service template read before the move (its image, settings and pinned
secret versions) is put back as it was, as the upgrade's own roll-back does (steps/upgrade.py,
`roll_back_template`), the settings record names the previous instance and MLflow again, and the latest version of
`mlflow-env` holds what the previous server uses (the move added one naming the new instance, which a later `up` or
rotation would pin). Ctrl-C or SIGTERM during a roll-back is noted and ignored until it is done: cut short, it
would leave the server on the instance that failed. A way back interrupted after its move has no such template on a
rerun (the service runs the older image already): `up`'s steps then deploy the MLflow the previous instance's
schema is recorded at (`previous_server_settings`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.operate.restore_plan import RestoreError, delete_commands
from mlflow_gcp.operate.rotation_stops import Shield


def template_of(service: Any) -> dict[str, Any]:
    from mlflow_gcp.steps.service_json import to_json_dict

    return to_json_dict(service).get("template", {}) if service is not None else {}


def env_back(restore) -> None:
    """`mlflow-env`'s latest version holds what the previous server uses again (the move added one naming the new
    instance): a later `up` or rotation, which pins the latest version, keeps the server on its instance."""
    from mlflow_gcp.config import SECRET_ENV
    from mlflow_gcp.operate import login as login_mod
    from mlflow_gcp.resources.secret import add_version_once

    project = restore.settings.project
    if not restore.server_env or login_mod.access(restore.clients, project, SECRET_ENV)[0] == restore.server_env:
        return
    name = add_version_once(restore.clients.secrets(), f"projects/{project}/secrets/{SECRET_ENV}", restore.server_env)
    restore.log(f"{SECRET_ENV}: version {name.rsplit('/', 1)[-1]} names {restore.plan.previous} again, as the server")


def put_back(restore, before: Any, running: str) -> str:
    """The service as it was `before` the move, on MLflow `running`; says what was done. The record and
    `mlflow-env` first: killed before the service is back, `up` then finds the previous instance and MLflow."""
    from mlflow_gcp.engine.loop import run_step
    from mlflow_gcp.resources import live_service
    from mlflow_gcp.steps import BY_NAME
    from mlflow_gcp.steps.deploy import update_service
    from mlflow_gcp.steps.mlflow_version import VERSION_ANNOTATION
    from mlflow_gcp.steps.service_json import to_json_dict

    previous: Settings = dataclasses.replace(restore.previous_settings(), mlflow_version=running)
    live = live_service.read_service(previous, restore.clients)
    env_back(restore)
    if live is not None and template_of(live) == template_of(before):
        return "The previous revision still serves (the service was not changed)"
    # The move may have recorded the restore's settings: the previous instance and MLflow are the deployment's again.
    run_step(BY_NAME["settings"], restore._context(previous))
    body = to_json_dict(live) if live is not None else to_json_dict(before)
    body["template"] = template_of(before)
    annotations = body.setdefault("annotations", {})
    version = (to_json_dict(before).get("annotations") or {}).get(VERSION_ANNOTATION)
    if version:
        annotations[VERSION_ANNOTATION] = version
    else:
        annotations.pop(VERSION_ANNOTATION, None)
    what = f"Putting back the previous revision of {previous.service}"

    def applied():  # an update whose answer was lost: read back
        current = live_service.read_service(previous, restore.clients)
        return current if template_of(current) == template_of(before) else None

    update_service(restore.clients.run_services(), body, what, applied)
    return f"The previous image (MLflow {running}) serves again on {previous.db_instance}"


def previous_server_settings(restore) -> Settings:
    """The settings that put the previous server back with `up`'s steps: the previous instance, at the MLflow its
    schema is recorded at (steps/schema_record.py) when that is newer than the restore's image. A way back that was
    interrupted after its move has no template to put back (the service runs the older image already): the newer
    MLflow's image is deployed onto its own schema again (the upgrade's stages: a backup first, the job finds it
    current), never the older one onto the migrated instance."""
    from mlflow_gcp.labels import schema_version
    from mlflow_gcp.steps.mlflow_version import image_version, is_older

    previous: Settings = restore.previous_settings()
    labels = (restore.plan.previous_state.get("settings") or {}).get("userLabels") or {}
    served, image = schema_version(labels), image_version(previous)
    if served and image and is_older(image, served):
        return dataclasses.replace(previous, mlflow_version=served)
    return previous


def roll_back(restore, error: BaseException) -> RestoreError:
    """Put the server back on the previous instance after a failed move; the error that says what happened."""
    plan = restore.plan
    assert plan is not None
    reason = error.message.rstrip(".") if isinstance(error, MlflowGcpError) else f"{type(error).__name__}: {error}"
    kept = (
        f"The new instance {plan.new} is kept (delete it with `{delete_commands(plan.new)}`, or run the restore "
        "again)."
    )
    done = f"The server runs on {plan.previous} again"
    previous = previous_server_settings(restore)
    version = restore.way_back[1] if restore.way_back else previous.mlflow_version
    if version != restore.settings.mlflow_version:
        done += f" (MLflow {version})"
    try:
        with Shield(restore.log).installed() as shield:
            # Cut short, the way back would leave the older MLflow on a stopped instance, or the record on it.
            shield.hold("interrupted: ignored until the server is back on the previous instance (a moment)")
            restore.log(f"putting the server back on {plan.previous}")
            if restore.way_back:
                done = put_back(restore, *restore.way_back)
            else:
                restore.run_up(previous)
            restore.verify(previous)
    except Exception as second:  # said with what to do by hand
        detail = second.message if isinstance(second, MlflowGcpError) else str(second)
        return RestoreError(
            f"The restore stopped ({reason}), and putting the server back on {plan.previous} failed too "
            f"({detail}). {kept}",
            f"Run `mlflow-gcp up --db-instance {plan.previous}"
            + (f" --mlflow-version {version}" if version != restore.settings.mlflow_version else "")
            + "` to put the server back on the previous instance, "
            "or run the restore again.",
        )
    return RestoreError(
        f"The restore stopped ({reason}). {done} (checked with a logged-in call), and {plan.previous} was not "
        f"changed. {kept}",
        "Fix the cause and run the same command again: what is done is not redone.",
    )
