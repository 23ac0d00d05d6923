"""What a team keeps on its server, made and read with whichever MLflow client runs this module.

Run as a script by an older MLflow's own virtualenv (`python e2e_upgrade_data.py fill|read`, tracking URI and the
admin login in the environment, JSON on stdout), and imported by the tests to read the same things with this
machine's MLflow after the upgrade. Only client calls that both MLflow versions have.
"""

from __future__ import annotations

import json
import os
import sys

EXPERIMENT = "e2e-upgrade-team"
CLOSED_EXPERIMENT = "e2e-upgrade-closed"  # the second user has no grant here: READ, the default
MODEL = "e2e-upgrade-model"
USER = ("e2e-upgrade-analyst", "analyst-password-123456")
RUNS = 3
STEPS = 5
OUTPUT_PREFIX = "e2e-upgrade-data: "


def fill(client, auth_client) -> dict:
    """Runs with params and metric histories, a registered model with a version, a second user with EDIT on one
    experiment; returns `snapshot` of it all."""
    experiment = client.create_experiment(EXPERIMENT, tags={"team": "forecasting"})
    client.create_experiment(CLOSED_EXPERIMENT)
    run_ids = []
    for index in range(RUNS):
        run = client.create_run(experiment, run_name=f"run-{index}", tags={"stage": f"s{index}"})
        client.log_param(run.info.run_id, "learning_rate", str(0.1 * (index + 1)))
        client.log_param(run.info.run_id, "layers", str(index + 2))
        for step in range(STEPS):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + index + 1), step=step)
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)
    client.create_registered_model(MODEL, description="the team's forecaster")
    client.create_model_version(MODEL, f"{client.get_run(run_ids[0]).info.artifact_uri}/model", run_id=run_ids[0])
    auth_client.create_user(*USER)
    auth_client.create_experiment_permission(experiment, USER[0], "EDIT")
    return snapshot(client, auth_client)


def snapshot(client, auth_client) -> dict:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    versions = client.search_model_versions(f"name='{MODEL}'")
    user = auth_client.get_user(USER[0])
    return {
        "experiment": {"id": experiment.experiment_id, "name": experiment.name,
                       "team": experiment.tags.get("team")},
        "runs": [{
            "id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "params": dict(run.data.params), "stage": run.data.tags.get("stage"),
            "loss": [[m.step, m.value] for m in sorted(client.get_metric_history(run.info.run_id, "loss"),
                                                       key=lambda m: m.step)],
        } for run in runs],
        "model": {"name": MODEL, "description": client.get_registered_model(MODEL).description,
                  "versions": sorted([v.version, v.run_id] for v in versions)},
        "user": {"username": user.username, "is_admin": user.is_admin},
    }


def second_user_access(client_class, tracking_uri: str) -> dict:
    """What the second user's login may do: write to the experiment it has EDIT on, not to the other one."""
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = USER
    try:
        client = client_class(tracking_uri=tracking_uri)
        access = {}
        for name in (EXPERIMENT, CLOSED_EXPERIMENT):
            experiment = client.get_experiment_by_name(name)
            try:
                client.set_experiment_tag(experiment.experiment_id, "probe", "same-value-each-time")
                access[name] = "write"
            except Exception as error:  # MLflow's RestException: PERMISSION_DENIED
                denied = "PERMISSION_DENIED" in str(error) or "error code 403" in str(error)
                access[name] = "read" if denied else f"error: {error}"
        return access
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(action: str) -> None:
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client, auth_client = MlflowClient(tracking_uri=uri), get_app_client("basic-auth", tracking_uri=uri)
    data = fill(client, auth_client) if action == "fill" else snapshot(client, auth_client)
    data["second_user_access"] = second_user_access(MlflowClient, uri)
    print(OUTPUT_PREFIX + json.dumps(data))  # MLflow's client prints lines of its own on stdout


if __name__ == "__main__":
    main(sys.argv[1])
