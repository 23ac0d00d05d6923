"""Changes made by hand in the Console after `up`, and what `status`, `up --dry-run` and `up` say of them: the state
of each resource decides its mark (a connector in ERROR, a stopped instance are not ok), what a stopped instance
holds is unreadable (not missing), `--dry-run` predicts what `up` refuses, a secret that is gone is one problem
(not a drift of the service), labels removed by hand are reported and put back, and a `mysql-credentials` for
another user than --db-user is reported even when that user exists."""

from __future__ import annotations

import json

from mlflow_gcp.config import SECRET_ENV, SECRET_MLFLOW, SECRET_MYSQL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

INSTANCE = "mlflow-tracking-database"
CONNECTOR = f"projects/{PROJECT}/locations/europe-west1/connectors/vpc-connector-mlflow"
RANGE = "mlflow-private-services"


def status_json(*flags: str) -> tuple[int, dict]:
    result = cli("status", "--json", *flags)
    return result.exit_code, json.loads(result.stdout)


def rows(document: dict) -> dict[str, dict]:
    """Label → row; a secret several steps read is the row of the step that owns its value (the last one)."""
    return {r["resource"]: r for s in document["steps"] for r in s["resources"]}


def drifts(document: dict, label: str) -> set[str]:
    return {f for s in document["steps"] for r in s["resources"] if r["resource"] == label for f in r["drift"]}


def versions(fake) -> dict[str, int]:
    return {name: len(v) for name, v in fake.state["secret_versions"].items()}


def test_a_connector_in_error_is_failed_and_dry_run_predicts_the_refusal(fake, double):
    fake.state["vpc_connectors"][CONNECTOR]["state"] = "ERROR"
    code, document = status_json()
    assert code == 1
    connector = rows(document)["VPC connector vpc-connector-mlflow"]
    assert connector["condition"] == "failed" and "ERROR" in connector["problem"]
    assert any("ERROR state" in p for p in document["problems"])
    assert "failed" in cli("status").stdout.split("connector vpc-connector-mlflow")[0].splitlines()[-1]

    plan = cli("up", "--dry-run")
    assert plan.exit_code == 1, plan.output
    assert "ERROR state" in " ".join(plan.stderr.split())
    assert [line for line in plan.stdout.splitlines() if line.startswith("connector ") and "up to date" in line] == []
    assert fake.mutating_requests() == []


def test_a_stopped_instance_is_failed_and_what_it_holds_unreadable_not_missing(fake, double):
    instance = fake.sql_instances[INSTANCE]
    instance["state"], instance["settings"]["activationPolicy"] = "STOPPED", "NEVER"  # Console: Stop
    code, document = status_json()
    assert code == 1
    found = rows(document)
    assert found[f"Cloud SQL instance {INSTANCE}"]["condition"] == "failed"
    for label in ("MySQL database mlflow_tracking_database", "MySQL database mlflow_auth_database", "MySQL user root"):
        assert found[label]["condition"] == "unreadable" and found[label]["exists"] is None, found[label]
        assert "STOPPED" in found[label]["unreadable"]
    assert not any("missing" in p for p in document["problems"]), document["problems"]
    text = cli("status").stdout
    assert "missing" not in text and "unknown" in text and "--activation-policy=ALWAYS" in " ".join(text.split())

    plan = cli("up", "--dry-run")
    assert plan.exit_code == 1, plan.output
    assert "is stopped" in plan.stderr and "+ sql database" not in plan.stdout and "to create" not in plan.stdout
    assert fake.mutating_requests() == []


def test_dry_run_predicts_a_database_version_change_up_refuses(fake, double):
    plan = cli("up", "--dry-run", "--db-version", "MYSQL_8_0")
    assert plan.exit_code == 1, plan.output
    assert "cannot be downgraded" in " ".join(plan.stderr.split())
    assert fake.mutating_requests() == []


def test_a_secret_deleted_by_hand_is_one_problem_and_no_drift_of_the_service(fake, double):
    del fake.state["secrets"][f"projects/{PROJECT}/secrets/{SECRET_MYSQL}"]  # Console: Delete secret
    code, document = status_json()
    assert code == 1
    problems = document["problems"]
    assert sum(p.startswith(f"secret {SECRET_MYSQL}") for p in problems) == 1, problems
    assert not any("Cloud Run service" in p for p in problems), problems
    assert rows(document)["Cloud Run service mlflow"]["drift"] == []


def test_step_image_is_a_command_like_the_step_up_shows(fake, double):
    for args in (("step", "image", "--dry-run"), ("step", "image")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert "image" in result.stdout
    assert fake.mutating_requests() == []  # the image is built already: nothing to do
    assert "image" in cli("step", "--help").stdout


def test_labels_removed_by_hand_are_reported_and_put_back(fake, double):
    before = versions(fake)
    for secret_id in (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW):
        fake.state["secrets"][f"projects/{PROJECT}/secrets/{secret_id}"]["labels"] = {"team": "data"}
    fake.sql_instances[INSTANCE]["settings"]["userLabels"] = {}
    fake.compute_addresses[RANGE]["labels"] = {}

    code, document = status_json()
    assert code == 1
    for label in (
        f"secret {SECRET_ENV}",
        f"secret {SECRET_MYSQL}",
        f"secret {SECRET_MLFLOW}",
        f"Cloud SQL instance {INSTANCE}",
        f"address range {RANGE}",
    ):
        assert "labels" in drifts(document, label), label

    result = cli("up")
    assert result.exit_code == 0, result.output
    for secret_id in (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW):
        labels = fake.state["secrets"][f"projects/{PROJECT}/secrets/{secret_id}"]["labels"]
        assert labels == {
            "team": "data",
            "managed-by": "mlflow-gcp",
            "mlflow-gcp-deployment": "mlflow",
        }  # theirs kept, ours back
    assert fake.sql_instances[INSTANCE]["settings"]["userLabels"] == {
        "managed-by": "mlflow-gcp",
        "mlflow-gcp-deployment": "mlflow",
    }
    assert fake.compute_addresses[RANGE]["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    assert versions(fake) == before  # no new secret version, no new password
    assert status_json()[0] == 0


def test_a_range_someone_else_made_gets_no_label(fake, double):
    address = fake.compute_addresses[RANGE]
    address["labels"], address["description"] = {}, "made by the network team"
    assert "labels" not in rows(status_json()[1])[f"address range {RANGE}"]["drift"]


def test_mysql_credentials_for_another_user_is_reported_when_that_user_exists(fake, double):
    fake.sql_users[INSTANCE].append({"name": "mlflow", "host": "%", "password": "made-by-hand"})
    code, document = status_json("--db-user", "mlflow")
    assert code == 1
    assert any(f"{SECRET_MYSQL} is for the MySQL user root" in p for p in document["problems"]), document["problems"]

    for args in (("up", "--dry-run", "--db-user", "mlflow"), ("up", "--db-user", "mlflow")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        assert "is for the MySQL user root, but the settings ask for mlflow" in " ".join(result.stderr.split())
    assert not [r for r in fake.mutating_requests() if r.api in ("secretmanager", "sqladmin")]
