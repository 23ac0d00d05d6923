"""End-to-end: after a failed rotation, or a password lost by hand, and an `up`, the revision Cloud Run would start
works for real: the server container, given exactly the secret versions the service pins (read from the fake
Secret Manager), reaches MariaDB with the password the Cloud SQL user has (mirrored from the fake Cloud SQL),
and the login `mlflow-gcp credentials` prints lets the stock mlflow client log a run.
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from e2e_deployment import ServerProcess, google_endpoints, own_databases
from e2e_mariadb import free_port
from mlflow.tracking import MlflowClient
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, settings

from conftest import CLIENT_ENV, Rehearsal, server_log_path
from mlflow_gcp.config import SECRET_MYSQL
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.service_spec import SERVICE_URLS_VAR, container_environment, render_env_file, server_settings

pytestmark = pytest.mark.e2e

DB_USER = "e2e_rotation"
DB_NAME, AUTH_DB_NAME = "e2e_rotation_runs", "e2e_rotation_auth"  # not the rehearsal's databases
SERVICE = "projects/demo-project/locations/europe-west1/services/mlflow"


@pytest.fixture
def fake(fake, monkeypatch):
    """The fake Google APIs (tests/conftest.py); the deployment names this file's own user and databases."""
    own_databases(monkeypatch, DB_USER, DB_NAME, AUTH_DB_NAME)
    return fake


def secret_value(fake, secret_id: str, version: str) -> str:
    stored = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{secret_id}"]
    found = next(v for v in stored if v["name"].endswith(f"/{version}"))
    assert found["state"] == "ENABLED", (secret_id, version, found["state"])
    return found["data"].decode()


def mirror_cloud_sql_user(fake, rehearsal: Rehearsal) -> None:
    """MariaDB gets the user exactly as the fake Cloud SQL has it (password included)."""
    user = next(u for u in fake.sql_users["mlflow-tracking-database"] if u["name"] == DB_USER)
    connection = rehearsal.mariadb.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE OR REPLACE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY %s", (user["password"],))
        cursor.execute(f"GRANT ALL PRIVILEGES ON `e2e\\_rotation\\_%`.* TO '{DB_USER}'@'127.0.0.1'")
        cursor.execute("FLUSH PRIVILEGES")
    connection.close()


def start_the_revision(fake, rehearsal: Rehearsal) -> tuple[ServerProcess, str]:
    """The server container started as Cloud Run starts the service's current revision: its pinned secret
    versions, with the database and Google endpoints of this machine."""
    service = fake.state["run_services"][SERVICE]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = container_environment(service, lambda secret, version: secret_value(fake, secret, version))
    local = server_settings(settings(db_user=DB_USER, db_name=DB_NAME, auth_db_name=AUTH_DB_NAME), "127.0.0.1")
    local.update(
        DB_PORT=str(rehearsal.mariadb.port), ARTIFACTS_DESTINATION=f"gs://{rehearsal.settings.bucket_name}/rot"
    )
    env["MLFLOW_ENV"] = render_env_file(local)  # the fake's env file names the fake Cloud SQL's private IP
    env[SERVICE_URLS_VAR] = url
    env.update(google_endpoints(rehearsal.google.url, rehearsal.work_dir))
    env["PORT"] = str(port)
    return ServerProcess(env, server_log_path()).start(), url


def client_logs_a_run(url: str) -> None:
    printed = cli("credentials", "--format", "json")
    assert printed.exit_code == 0, printed.output
    login = json.loads(printed.stdout)
    env = {
        **CLIENT_ENV,
        "MLFLOW_TRACKING_USERNAME": login["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": login["MLFLOW_TRACKING_PASSWORD"],
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        # A client of its own: the global tracking URI of this process belongs to the other e2e tests.
        client = MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment(f"after-credential-trouble-{uuid.uuid4().hex[:8]}")
        run = client.create_run(experiment_id)
        client.log_param(run.info.run_id, "p", 1)
        client.log_metric(run.info.run_id, "m", 0.5)
        client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).data.params == {"p": "1"}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def break_by_failed_rotation(fake) -> None:
    service = fake.state["run_services"][SERVICE]
    reachable, service["uri"] = service["uri"], closed_port_url()  # the laptop cannot reach the server
    assert cli("credentials", "rotate").exit_code == 1
    service["uri"] = reachable


def break_by_losing_the_database_password(fake) -> None:
    Clients(PROJECT).secrets().delete_secret(name=f"projects/{PROJECT}/secrets/{SECRET_MYSQL}")


@pytest.mark.parametrize(
    "trouble", [break_by_failed_rotation, break_by_losing_the_database_password], ids=["failed-rotation", "lost"]
)
def test_after_trouble_and_up_the_real_server_accepts_the_login_and_logs_a_run(fake, double, rehearsal, trouble):
    trouble(fake)
    up = cli("up")
    assert up.exit_code == 0, up.output
    mirror_cloud_sql_user(fake, rehearsal)
    server, url = start_the_revision(fake, rehearsal)  # healthy only if it reached MariaDB with its password
    try:
        client_logs_a_run(url)
    finally:
        server.stop()
