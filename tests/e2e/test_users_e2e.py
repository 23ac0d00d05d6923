"""End-to-end: `mlflow-gcp users` against the real server of the rehearsal, through MLflow's basic-auth REST API.

The command finds the server and its admin login through Cloud Run and Secret Manager (`current_login`, tested
against the fake Google APIs elsewhere); here that one function answers the rehearsal's URL and admin login, so
that everything after it is the real thing: the CLI, the REST calls, MLflow's user store on MariaDB."""

from __future__ import annotations

import socket

import pytest
import requests
from typer.testing import CliRunner

from conftest import Rehearsal
from mlflow_gcp.cli import app
from mlflow_gcp.operate import login as login_module
from mlflow_gcp.operate.login import Login

pytestmark = pytest.mark.e2e

SEARCH = "/api/2.0/mlflow/experiments/search"


@pytest.fixture
def users(rehearsal: Rehearsal, monkeypatch):
    """Run `mlflow-gcp users ...` against the rehearsal's server, as the admin it runs with now."""

    def current_login(settings, clients=None):
        secrets = rehearsal.secrets
        return Login(rehearsal.tracking_uri, secrets.admin_user, secrets.admin_password)

    monkeypatch.setattr(login_module, "current_login", current_login)
    monkeypatch.setenv("MLFLOW_GCP_PROJECT", rehearsal.settings.project)
    # No Secret Manager here: the deployment has no recorded settings (tests/test_remembered.py covers them).
    import mlflow_gcp.remembered as remembered

    monkeypatch.setattr(remembered, "read_record", lambda clients, project: None)
    # ...and no labelled Cloud SQL instance or Cloud Run service to recognise a deployment without a record by.
    import mlflow_gcp.recognise as recognise

    monkeypatch.setattr(recognise, "check_recognised", lambda settings, clients: None)

    def run(*args: str, stdin: str | None = None):
        return CliRunner().invoke(app, ["users", *args], input=stdin, catch_exceptions=False)

    return run


def call(rehearsal: Rehearsal, method: str, path: str, auth, **kwargs) -> requests.Response:
    return requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=30, **kwargs)


def admin(rehearsal: Rehearsal) -> tuple[str, str]:
    return rehearsal.secrets.admin_user, rehearsal.secrets.admin_password


def test_a_new_user_logs_in_is_refused_without_permission_and_allowed_after_grant(rehearsal, users):
    added = users("add", "bob")
    assert added.exit_code == 0, added.output
    password = added.stdout.strip()
    assert len(password) >= 24 and "\n" not in password  # the generated password, alone on stdout
    bob = ("bob", password)
    assert call(rehearsal, "GET", SEARCH, bob, params={"max_results": 1}).status_code == 200

    experiment = call(
        rehearsal, "POST", "/api/2.0/mlflow/experiments/create", admin(rehearsal), json={"name": "users-e2e"}
    )
    assert experiment.ok, experiment.text
    experiment_id = experiment.json()["experiment_id"]
    new_run = {"experiment_id": experiment_id}
    assert call(rehearsal, "POST", "/api/2.0/mlflow/runs/create", bob, json=new_run).status_code == 403

    granted = users("grant", "bob", "--experiment", "users-e2e", "--permission", "EDIT")
    assert granted.exit_code == 0, granted.output
    assert f"bob has EDIT on the experiment users-e2e (id {experiment_id})" in granted.output
    assert call(rehearsal, "POST", "/api/2.0/mlflow/runs/create", bob, json=new_run).status_code == 200

    # A new grant replaces the old one; the experiment may be given by id.
    regrant = users("grant", "bob", "--experiment", experiment_id, "--permission", "NO_PERMISSIONS")
    assert regrant.exit_code == 0, regrant.output
    get = call(rehearsal, "GET", "/api/2.0/mlflow/experiments/get", bob, params={"experiment_id": experiment_id})
    assert get.status_code == 403

    listed = users("list")
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "bob" in lines and "user" in lines["bob"]
    assert "(mlflow-credentials)" in lines[rehearsal.secrets.admin_user]

    assert users("remove", "bob").exit_code == 0
    assert call(rehearsal, "GET", SEARCH, bob, params={"max_results": 1}).status_code == 401


def test_password_from_stdin_admin_users_and_model_grants(rehearsal, users):
    assert users("add", "carol", "--admin", "--password-stdin", stdin="carol-password-0123456789\n").exit_code == 0
    carol = ("carol", "carol-password-0123456789")
    created = call(
        rehearsal, "POST", "/api/2.0/mlflow/users/create", carol, json={"username": "dave", "password": "x" * 16}
    )
    assert created.ok  # an admin manages users

    old_login = ("dave", "x" * 16)
    assert call(rehearsal, "GET", SEARCH, old_login, params={"max_results": 1}).ok  # now in MLflow's login cache
    assert call(rehearsal, "GET", SEARCH, ("dave", "x" * 15 + "y"), params={"max_results": 1}).status_code == 401
    assert users("password", "dave", "--password-stdin", stdin="dave-new-password-0123\n").exit_code == 0
    assert call(rehearsal, "GET", SEARCH, ("dave", "dave-new-password-0123"), params={"max_results": 1}).ok
    # The instance that served the change forgets the cached login at once (the README's bound).
    assert call(rehearsal, "GET", SEARCH, old_login, params={"max_results": 1}).status_code == 401

    model = call(
        rehearsal,
        "POST",
        "/api/2.0/mlflow/registered-models/create",
        admin(rehearsal),
        json={"name": "users-e2e-model"},
    )
    assert model.ok, model.text
    dave = ("dave", "dave-new-password-0123")
    rename = {"name": "users-e2e-model", "description": "changed by dave"}
    assert call(rehearsal, "PATCH", "/api/2.0/mlflow/registered-models/update", dave, json=rename).status_code == 403
    assert users("grant", "dave", "--model", "users-e2e-model", "--permission", "edit").exit_code == 0
    assert call(rehearsal, "PATCH", "/api/2.0/mlflow/registered-models/update", dave, json=rename).ok

    for name in ("carol", "dave"):
        assert users("remove", name).exit_code == 0


def test_clear_errors(rehearsal, users, monkeypatch):
    name = rehearsal.secrets.admin_user
    for args in (
        ("remove", name),
        ("password", name),
        ("grant", name, "--experiment", "Default", "--permission", "READ"),
    ):
        result = users(*args)
        assert result.exit_code == 1
        assert "admin of mlflow-credentials" in result.output and "Traceback" not in result.output

    # MariaDB's collation finds the admin under these names too (the premise, checked): all are refused.
    for variant in (name.upper(), name.capitalize() + "  "):
        found = call(rehearsal, "GET", "/api/2.0/mlflow/users/get", admin(rehearsal), params={"username": variant})
        assert found.json()["user"]["username"] == name
        for args in (("remove", variant), ("password", variant, "--password-stdin")):
            result = users(*args, stdin="a-long-enough-password\n")
            assert result.exit_code == 1 and "admin of mlflow-credentials" in " ".join(result.output.split())
    assert call(rehearsal, "GET", SEARCH, admin(rehearsal), params={"max_results": 1}).status_code == 200

    result = users("remove", "nobody")
    assert result.exit_code == 1 and "There is no user nobody" in result.output

    assert users("add", "erin").exit_code == 0
    result = users("add", "erin")
    assert result.exit_code == 1 and "exists already" in result.output
    result = users("grant", "erin", "--experiment", "no-such-experiment", "--permission", "READ")
    assert result.exit_code == 1 and "no experiment named no-such-experiment" in result.output
    result = users("grant", "erin", "--experiment", "Default", "--permission", "OWNER")
    assert result.exit_code == 1 and "Unknown permission OWNER" in result.output
    assert users("remove", "erin").exit_code == 0

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(
        login_module, "current_login", lambda settings, clients=None: Login(f"http://127.0.0.1:{port}", "admin", "pw")
    )
    result = users("list")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "cannot be reached: connection refused" in text and "Traceback" not in text
