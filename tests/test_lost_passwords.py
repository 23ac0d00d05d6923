"""Password secrets changed by hand in the Console (issue 14, items 1 and 4): a lost password is never replaced by
one that nothing applies, and a disabled version never crashes `status`, `credentials` or `rotate`."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.gcp.clients import Clients
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat
from tests.server_double import api_login, deploy
from tests.test_credentials import credentials, db_password, pinned, team_login_works, versions


@pytest.fixture
def double(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "1")
    server = deploy(fake, tmp_path, monkeypatch)
    yield server
    server.stop()


def secret_path(secret_id: str) -> str:
    return f"projects/{PROJECT}/secrets/{secret_id}"


def lose(how: str, secret_id: str) -> None:
    """What a person does in the Console."""
    client = Clients(PROJECT).secrets()
    if how == "deleted":
        client.delete_secret(name=secret_path(secret_id))
    elif how == "destroyed":
        client.destroy_secret_version(name=f"{secret_path(secret_id)}/versions/1")
    elif how == "disabled":
        client.disable_secret_version(name=f"{secret_path(secret_id)}/versions/1")


# -- item 1: a lost password ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deleted", "destroyed"])
def test_a_lost_database_password_is_replaced_and_applied_to_the_mysql_user_in_the_same_run(fake, double, how):
    old_db = db_password(fake)
    lose(how, SECRET_MYSQL)
    result = cli("up")
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "made a NEW password" in text
    assert "the MySQL user root now has the password of version" in text
    value = fake.secret_value(SECRET_MYSQL)
    assert value == f"root:{db_password(fake)}" and db_password(fake) != old_db  # the user has the new one
    assert versions(fake, SECRET_MYSQL)[-1][0] == pinned(fake, SECRET_MYSQL)  # and the service uses it
    assert double.database_ok() and team_login_works()
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


def test_a_disabled_database_password_stops_up_with_how_to_restore_it(fake, double):
    lose("disabled", SECRET_MYSQL)
    fake.clear_log()
    result = cli("up")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    text = flat(result.stderr)
    assert "gcloud secrets versions enable 1 --secret mysql-credentials" in text
    assert [r for r in fake.mutating_requests() if r.api in ("secretmanager", "sqladmin")] == []
    Clients(PROJECT).secrets().enable_secret_version(name=f"{secret_path(SECRET_MYSQL)}/versions/1")
    assert cli("up").exit_code == 0
    assert double.database_ok() and team_login_works()


@pytest.mark.parametrize("how", ["deleted", "destroyed"])
def test_a_lost_admin_password_is_replaced_said_plainly_and_rolled_out(fake, double, how):
    old = credentials()
    lose(how, SECRET_MLFLOW)
    startups = double.startups
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert "made a NEW password" in flat(result.output)
    assert double.startups > startups  # a revision that uses it, even when the number is again 1
    new = credentials()
    assert new["MLFLOW_TRACKING_PASSWORD"] != old["MLFLOW_TRACKING_PASSWORD"]
    assert team_login_works()
    assert api_login(old["MLFLOW_TRACKING_URI"], "admin", old["MLFLOW_TRACKING_PASSWORD"]) == 401
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


# -- item 4: a disabled or destroyed version of mlflow-credentials ------------------------------------------
@pytest.mark.parametrize("how", ["disabled", "destroyed"])
def test_status_still_prints_its_table_and_json_with_the_row_marked(fake, double, how):
    lose(how, SECRET_MLFLOW)
    result = cli("status")
    assert result.exit_code == 1
    assert "Unexpected error" not in result.output and "Traceback" not in result.output
    assert f"version 1 is {how}" in flat(result.stdout)
    as_json = cli("status", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    rows = [r for s in report["steps"] for r in s["resources"] if r["resource"] == f"secret {SECRET_MLFLOW}"]
    assert [f"version 1 is {how}"] in [r["drift"] for r in rows]


@pytest.mark.parametrize("how", ["disabled", "destroyed"])
@pytest.mark.parametrize("command", [("credentials",), ("credentials", "rotate", "--mlflow")])
def test_credentials_and_rotate_give_a_clear_error(fake, double, how, command):
    lose(how, SECRET_MLFLOW)
    fake.clear_log()
    result = cli(*command)
    assert result.exit_code == 1
    assert "Unexpected error" not in result.output and "Traceback" not in result.output
    text = flat(result.stderr)
    assert f"{SECRET_MLFLOW}" in text and "mlflow-gcp up" in text
    if how == "disabled":
        assert f"gcloud secrets versions enable 1 --secret {SECRET_MLFLOW}" in text
    assert fake.mutating_requests() == []
