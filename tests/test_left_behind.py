"""Issue 20, the rest: every resource the tool makes carries the deployment's label (an older deployment gets it on
its next `up`, labels only, no restart); `status` and `down` list what a move left behind (the old Cloud SQL instance,
the bucket of an earlier name) and `down` does not delete it; `status` says a Cloud SQL instance deleted by hand is
deleted, with what `up` would do and where backups are; `status` and `down` with another region than the
deployment's say where it is. Through the CLI against the fake."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.config import SECRET_ENV, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.labels import DEPLOYMENT_LABEL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat, up_and_clear_log

INSTANCE = "mlflow-tracking-database"
BUCKET = f"{PROJECT}-mlflow-artifacts"
RANGE = "mlflow-private-services"
SERVICE = f"projects/{PROJECT}/locations/europe-west1/services/mlflow"
OURS = {"managed-by": "mlflow-gcp", DEPLOYMENT_LABEL: "mlflow"}


def labelled(fake) -> dict[str, dict]:
    """Every labelled resource of the deployment: its labels."""
    secrets = fake.state["secrets"]
    return {
        "instance": fake.sql_instances[INSTANCE]["settings"].get("userLabels", {}),
        "bucket": fake.state["buckets"][BUCKET].get("labels", {}),
        **{
            s: secrets[f"projects/{PROJECT}/secrets/{s}"].get("labels", {})
            for s in (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW)
        },
        "service": fake.state["run_services"][SERVICE].get("labels", {}),
        "repository": fake.registry_repository("mlflow")["labels"],
        "range": fake.compute_addresses[RANGE].get("labels", {}),
    }


def test_everything_made_carries_the_deployment_label(deployed):
    for name, labels in labelled(deployed).items():
        assert labels.items() >= OURS.items(), (name, labels)


def test_an_older_deployment_gets_the_label_on_its_next_up_without_a_restart(deployed):
    for labels in labelled(deployed).values():  # as made by a version before the deployment label
        labels.pop(DEPLOYMENT_LABEL, None)
    template = json.dumps(deployed.state["run_services"][SERVICE]["template"]["containers"], sort_keys=True)
    result = cli("up")
    assert result.exit_code == 0, result.output
    for name, labels in labelled(deployed).items():
        assert labels.items() >= OURS.items(), (name, labels)
    # The server's container as it was (the fake rolls a revision on any PATCH; the template is unchanged).
    assert json.dumps(deployed.state["run_services"][SERVICE]["template"]["containers"], sort_keys=True) == template
    patches = [r for r in deployed.mutating_requests() if r.api == "sqladmin"]
    assert patches and all(set(json.loads(r.body)["settings"]) == {"userLabels"} for r in patches), (
        patches
    )  # no restart


@pytest.fixture
def moved(deployed):
    return up_and_clear_log(
        deployed, "--db-instance", "other-db", "--bucket", f"{PROJECT}-other-art", "--move-to-new-resources"
    )


def test_status_lists_what_a_move_left_behind(moved):
    result = cli("status")
    text = flat(result.stdout)
    assert f"left behind (keeps billing) Cloud SQL instance {INSTANCE} (europe-west1)" in text, result.stdout
    assert f"left behind (keeps billing) bucket {BUCKET}" in text, result.stdout
    assert f"gcloud sql instances delete {INSTANCE} --project {PROJECT}" in text
    assert "left behind (keeps billing) Cloud SQL instance other-db" not in text  # what the settings name
    document = json.loads(cli("status", "--json").stdout)
    assert {i["resource"] for i in document["left_behind"]} == {f"Cloud SQL instance {INSTANCE}", f"bucket {BUCKET}"}


def test_an_instance_made_before_the_deployment_label_is_listed_too(moved):
    moved.sql_instances[INSTANCE]["settings"]["userLabels"].pop(DEPLOYMENT_LABEL)
    moved.sql_instances[INSTANCE]["settings"]["userLabels"]["team"] = "data"
    assert f"left behind (keeps billing) Cloud SQL instance {INSTANCE}" in flat(cli("status").stdout)
    moved.sql_instances[INSTANCE]["settings"]["userLabels"][DEPLOYMENT_LABEL] = "another-service"
    assert f"Cloud SQL instance {INSTANCE}" not in flat(cli("status").stdout)  # another deployment's


def test_down_names_what_a_move_left_behind_and_does_not_delete_it(moved):
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert "not deleted by `down`" in text, result.stdout
    assert f"left behind (keeps billing) Cloud SQL instance {INSTANCE}" in text
    assert f"left behind (keeps billing) bucket {BUCKET}" in text
    assert INSTANCE in moved.sql_instances and BUCKET in moved.state["buckets"]
    deleted = [r.path for r in moved.mutating_requests() if r.method == "DELETE"]
    assert not any(INSTANCE in path or BUCKET in path for path in deleted), deleted


def test_status_says_an_instance_deleted_by_hand_is_deleted_with_its_backups(deployed):
    del deployed.sql_instances[INSTANCE]  # deleted in the Console (deletion protection turned off first)
    result = cli("status")
    assert result.exit_code == 1, result.output
    marked = [line for line in result.stdout.splitlines() if line.startswith("deleted")]
    assert len(marked) == 1 and "up makes a NEW, EMPTY one" in marked[0], result.stdout
    text = flat(result.stdout)
    assert f"Cloud SQL instance {INSTANCE} was deleted: `up` would create a NEW, EMPTY instance" in text, text
    assert f"gcloud sql backups list --project {PROJECT}" in text
    assert f"Cloud SQL instance {INSTANCE} is missing" not in text
    document = json.loads(cli("status", "--json").stdout)
    conditions = {r["resource"]: r["condition"] for s in document["steps"] for r in s["resources"]}
    assert conditions[f"Cloud SQL instance {INSTANCE}"] == "deleted"


@pytest.mark.parametrize("command", [("status",), ("down", "--yes")], ids=["status", "down"])
def test_another_region_than_the_deployments_is_said_not_listed_as_missing(deployed, command):
    result = cli(*command, "--region", "europe-west4")
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert "The deployment is in europe-west1 (recorded in mlflow-gcp-settings), not in europe-west4" in text, text
    assert "vpc-access connectors list --region europe-west4" in text
    assert "missing" not in text
    assert deployed.mutating_requests() == []
    assert not any("europe-west4" in r.path for r in deployed.requests())
