"""`mlflow-gcp status`: a row per resource (exists, state, settings, drift) read through the steps in plan mode,
live checks of the server, exit code 0 only when everything is present and healthy, `--json`, and never a
mutating request."""

from __future__ import annotations

import json

from mlflow_gcp.config import SECRET_MLFLOW
from tests.helpers import ALL_APIS_ENABLED, cli, run_steps
from tests.server_double import build_context, forbid_non_loopback

INSTANCE = "mlflow-tracking-database"


def resources_of(document: dict) -> dict[str, dict]:
    return {r["resource"]: {**r, "step": s["step"]} for s in document["steps"] for r in s["resources"]}


def status_json(*flags: str) -> tuple[int, dict]:
    result = cli("status", "--json", *flags)
    return result.exit_code, json.loads(result.stdout)  # stdout is the JSON document and nothing else


def test_complete_deployment_is_all_present_and_healthy(fake, double):
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "sql instance mlflow-tracking-database" in result.stdout and "run service mlflow" in result.stdout
    assert "missing" not in result.stdout and "drift" not in result.stdout
    assert "Everything is present" in result.stdout
    wide = cli("status", "--wide")
    assert wide.exit_code == 0
    assert "Cloud SQL instance" in wide.stdout and "Cloud Run service" in wide.stdout
    for text in ("apis", "network", "database", "connector", "service-account", "bucket", "secrets", "image"):
        assert text in wide.stdout
    assert fake.mutating_requests() == []

    code, document = status_json()
    assert code == 0 and document["ok"] is True and document["problems"] == []
    rows = resources_of(document)
    assert len(rows) >= 20
    assert all(r["exists"] and r["drift"] == [] for r in rows.values())
    instance = rows[f"Cloud SQL instance {INSTANCE}"]
    assert instance["step"] == "database"
    assert instance["details"]["public ip"] == "off" and instance["details"]["deletion protection"] == "on"
    assert rows["Cloud Run service mlflow"]["details"]["ready"] == "succeeded"
    assert document["service"]["url"] == double.urls[1]
    checks = {c["check"]: c for c in document["service"]["checks"]}
    assert {name: (c["ok"], c["status"]) for name, c in checks.items()} == {
        "health": (True, 200),
        "login": (True, 200),
        "no login refused": (True, 401),
    }
    assert fake.mutating_requests() == []
    # The checks went to the double: with the admin login, and once without (once per status command).
    assert [path for _, path, _ in double.requests].count("/health") == 3  # status, --wide, --json


def test_status_never_shows_a_secret(fake, double):
    password = fake.secret_value(SECRET_MLFLOW).split(":", 1)[1]
    for flags in ((), ("--json",)):
        result = cli("status", *flags)
        assert password not in result.output


def test_partial_deployment_lists_what_is_missing_and_fails(fake, tmp_path, monkeypatch):
    forbid_non_loopback(monkeypatch)
    build_context(tmp_path, monkeypatch)
    fake.enabled |= ALL_APIS_ENABLED
    run_steps("service-account", "bucket")
    fake.clear_log()

    result = cli("status")
    assert result.exit_code == 1
    assert "missing" in result.stdout
    assert "problem(s)" in result.stdout and "mlflow-gcp up" in result.stdout

    code, document = status_json()
    assert code == 1 and document["ok"] is False
    rows = resources_of(document)
    assert rows["bucket demo-project-mlflow-artifacts"]["exists"] is True
    assert rows["service account run-mlflow@demo-project.iam.gserviceaccount.com"]["exists"] is True
    assert rows[f"Cloud SQL instance {INSTANCE}"]["exists"] is False
    assert rows["Cloud Run service mlflow"]["exists"] is False
    assert rows["VPC connector vpc-connector-mlflow"]["exists"] is False
    assert document["service"] == {"url": None, "checks": []}
    assert any("no live check" in p for p in document["problems"])
    # Children of missing parents are read as absent, nothing is created: reads only.
    assert fake.mutating_requests() == []


def test_drift_in_the_cloud_is_shown_with_its_fields(fake, double):
    fake.sql_instances[INSTANCE]["settings"]["tier"] = "db-g1-small"
    fake.sql_instances[INSTANCE]["settings"]["deletionProtectionEnabled"] = False

    result = cli("status")
    assert result.exit_code == 1
    assert "drift" in result.stdout and "tier" in result.stdout

    code, document = status_json()
    assert code == 1
    row = resources_of(document)[f"Cloud SQL instance {INSTANCE}"]
    assert row["exists"] is True
    assert set(row["drift"]) == {"tier", "deletionProtectionEnabled"}
    assert row["details"]["tier"] == "db-g1-small"
    assert any("tier" in p for p in document["problems"])
    assert fake.mutating_requests() == []


def test_drift_against_a_changed_setting(fake, double):
    code, document = status_json("--max-instances", "5")
    assert code == 1
    assert resources_of(document)["Cloud Run service mlflow"]["drift"] == ["scaling"]
    assert fake.mutating_requests() == []


def test_a_server_that_refuses_the_login_fails_the_check(fake, double):
    double.admin = ("admin", "another-password")
    code, document = status_json()
    assert code == 1
    checks = {c["check"]: c for c in document["service"]["checks"]}
    assert checks["login"]["ok"] is False and checks["login"]["status"] == 401
    assert checks["health"]["ok"] is True
    assert all(r["exists"] and not r["drift"] for r in resources_of(document).values())


def test_a_server_without_its_database_fails_health(fake, double):
    fake.sql_users[INSTANCE][0]["password"] = "changed-behind-our-back"
    result = cli("status")
    assert result.exit_code == 1
    assert "health check failed" in result.stdout
    _, document = status_json()
    checks = {c["check"]: c for c in document["service"]["checks"]}
    assert (checks["health"]["status"], checks["login"]["status"], checks["no login refused"]["status"]) == (
        503,
        500,
        401,
    )


def test_an_unreachable_server_fails_the_checks(fake, double):
    double.stop()
    code, document = status_json()
    assert code == 1
    assert all(c["ok"] is False and c["status"] is None for c in document["service"]["checks"])


def test_an_unreadable_step_is_reported_and_the_others_are_read(fake, double):
    fake.fail(403, times=100, api="vpcaccess", reason="IAM_PERMISSION_DENIED", message="Permission denied.")
    result = cli("status")
    assert result.exit_code == 1
    assert "unreadable" in result.stdout
    _, document = status_json()
    by_step = {s["step"]: s for s in document["steps"]}
    assert by_step["connector"]["error"] and "permission" in by_step["connector"]["error"]
    assert by_step["deploy"]["resources"][0]["exists"] is True
    assert "Traceback" not in result.output


def test_a_stopped_instance_is_said_with_how_to_start_it_and_no_password_advice(fake, double):
    """The server fails on its database because the instance is stopped: the cure is to start it, not to rotate a
    password that is fine."""
    fake.sql_instances[INSTANCE]["state"] = "STOPPED"
    code, document = status_json()
    assert code == 1
    assert any("is stopped" in p for p in document["problems"]), document["problems"]
    assert "--activation-policy=ALWAYS" in " ".join(cli("status").stdout.split())
    assert not any("credentials rotate --database" in p for p in document["problems"]), document["problems"]


def test_a_database_password_reset_by_hand_names_rotate_database_and_rotate_fixes_it(fake, double):
    """Issue 20: the MySQL password reset in the Console; status says so and names the command that fixes it."""
    fake.sql_users[INSTANCE][0]["password"] = "reset-in-the-console"
    result = cli("status")
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "the server cannot use its database: it most likely refuses the MySQL password" in text
    assert "Run `mlflow-gcp credentials rotate --database`" in text
    _, document = status_json()
    assert any("credentials rotate --database" in p for p in document["problems"])

    rotate = cli("credentials", "rotate", "--database")
    assert rotate.exit_code == 0, rotate.output
    assert double.database_ok()
    assert cli("status").exit_code == 0


def test_up_does_not_say_ready_when_the_database_refuses_the_password(fake, double, monkeypatch):
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "1")
    fake.sql_users[INSTANCE][0]["password"] = "reset-in-the-console"
    up = cli("up")
    text = " ".join(up.output.split())
    assert up.exit_code == 1, text
    assert "MLflow is ready" not in text
    assert "cannot use its database: an authenticated call answered 500" in text
    assert "Run `mlflow-gcp credentials rotate --database`" in text
    assert cli("credentials", "rotate", "--database").exit_code == 0
    up = cli("up")
    assert up.exit_code == 0 and "MLflow is ready" in up.output
