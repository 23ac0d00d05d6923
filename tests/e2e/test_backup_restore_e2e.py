"""End-to-end (issue 23): `mlflow-gcp backup` and `mlflow-gcp restore` against the fake Google APIs, with real
MariaDB servers behind the fake Cloud SQL instances and the real server container and mlflow client.

A dump of the two databases stands in for Cloud SQL's backup (taken when the fake starts the backup run); the
restore loads it into a second MariaDB server, the new instance (when the fake's restoreBackup operation runs).
The server is then started as Cloud Run would start the revision the service pins: its `mlflow-env` version names
the new instance (its private IP is mapped to the MariaDB that stands for it). Runs logged, a backup taken, a run
deleted and another logged, restore: the deleted run is back, the later run is in the previous instance, which is
still there and unchanged.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_deployment import ServerProcess, google_endpoints, new_password, own_databases
from e2e_mariadb import MariaDB, binary, free_port, running_mariadb
from mlflow.tracking import MlflowClient
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

from conftest import CLIENT_ENV, Rehearsal, server_log_path
from mlflow_gcp.service_spec import SERVICE_URLS_VAR, container_environment

pytestmark = pytest.mark.e2e

DB_USER = "e2e_backup"
DB_NAME, AUTH_DB_NAME = "e2e_backup_runs", "e2e_backup_auth"  # not the rehearsal's databases
SERVICE = "projects/demo-project/locations/europe-west1/services/mlflow"
OLD = "mlflow-tracking-database"


@pytest.fixture
def fake(fake, monkeypatch):
    """The fake Google APIs (tests/conftest.py); the deployment names this file's own user and databases."""
    own_databases(monkeypatch, DB_USER, DB_NAME, AUTH_DB_NAME)
    return fake


@pytest.fixture
def new_mariadb():
    """The MariaDB server that stands for the new Cloud SQL instance."""
    with running_mariadb("mlflow-e2e-restored-", new_password()) as server:
        yield server


def drop_databases(mariadb: MariaDB) -> None:
    connection = mariadb.connect()
    with connection.cursor() as cursor:
        for name in (DB_NAME, AUTH_DB_NAME):
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    connection.close()


def mirror_user(fake, instance: str, mariadb: MariaDB) -> None:
    """The MariaDB gets the MySQL user exactly as the fake Cloud SQL instance has it (password included)."""
    user = next(u for u in fake.sql_users[instance] if u["name"] == DB_USER)
    connection = mariadb.connect()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE OR REPLACE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY %s", (user["password"],))
        cursor.execute(f"GRANT ALL PRIVILEGES ON `e2e\\_backup\\_%`.* TO '{DB_USER}'@'127.0.0.1'")
        cursor.execute("FLUSH PRIVILEGES")
    connection.close()


def socket_args(mariadb: MariaDB) -> list[str]:
    return [f"--socket={mariadb.base_dir / 'mysqld.sock'}", "--user=root"]


def secret_value(fake, secret_id: str, version: str) -> str:
    stored = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{secret_id}"]
    return next(v for v in stored if v["name"].endswith(f"/{version}"))["data"].decode()


def start_the_revision(fake, rehearsal: Rehearsal, databases: dict[str, MariaDB]) -> tuple[ServerProcess, str]:
    """The server container as Cloud Run starts the service's current revision: its pinned secret versions; the
    Cloud SQL private IP its mlflow-env names is the MariaDB standing for that instance."""
    service = fake.state["run_services"][SERVICE]
    env = container_environment(service, lambda secret, version: secret_value(fake, secret, version))
    values = dict(line.split("=", 1) for line in env["MLFLOW_ENV"].splitlines() if "=" in line)
    instance = next(
        name
        for name, item in fake.sql_instances.items()
        if values["DB_HOST"] in [a["ipAddress"] for a in item["ipAddresses"] if a["type"] == "PRIVATE"]
    )
    mariadb = databases[instance]
    values.update(
        DB_HOST="127.0.0.1",
        DB_PORT=str(mariadb.port),
        DB_CA_CERT_B64=base64.b64encode(mariadb.ca_file.read_bytes()).decode("ascii"),
        ARTIFACTS_DESTINATION=f"gs://{rehearsal.settings.bucket_name}/backup-e2e",
    )
    env["MLFLOW_ENV"] = "".join(f"{k}={v}\n" for k, v in values.items())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env[SERVICE_URLS_VAR] = url
    env.update(google_endpoints(rehearsal.google.url, rehearsal.work_dir))
    env["PORT"] = str(port)
    return ServerProcess(env, server_log_path()).start(), url


def client(url: str, monkeypatch) -> MlflowClient:
    login = json.loads(cli("credentials", "--format", "json").stdout)
    for key, value in {
        **CLIENT_ENV,
        "MLFLOW_TRACKING_USERNAME": login["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": login["MLFLOW_TRACKING_PASSWORD"],
    }.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=url)  # its own: the process-wide URI belongs to the other e2e tests


def log_run(mlflow: MlflowClient, experiment_id: str, name: str) -> str:
    run = mlflow.create_run(experiment_id, run_name=name)
    mlflow.log_metric(run.info.run_id, "m", 1.0)
    mlflow.set_terminated(run.info.run_id)
    return run.info.run_id


def stages(mariadb: MariaDB) -> dict[str, str]:
    """run id -> lifecycle stage, read straight from the database."""
    connection = mariadb.connect(DB_NAME)
    with connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid, lifecycle_stage FROM runs")
        found = dict(cursor.fetchall())
    connection.close()
    return found


def test_runs_deleted_after_a_backup_are_back_after_restore_and_the_old_instance_keeps_the_rest(
    fake, double, rehearsal, new_mariadb, tmp_path, monkeypatch
):
    old_mariadb = rehearsal.mariadb
    drop_databases(old_mariadb)
    databases = {OLD: old_mariadb}
    dumps: dict[str, Path] = {}

    def dump(instance: str, backup_id: str) -> None:
        path = dumps[backup_id] = tmp_path / f"backup-{backup_id}.sql"
        with path.open("wb") as out:
            subprocess.run(
                [binary("mariadb-dump"), *socket_args(databases[instance]), "--databases", DB_NAME, AUTH_DB_NAME],
                stdout=out,
                check=True,
                timeout=120,
            )

    def load(target: str, source: str, backup_id: str) -> None:
        databases[target] = new_mariadb
        with dumps[backup_id].open("rb") as dumped:
            subprocess.run([binary("mariadb"), *socket_args(new_mariadb)], stdin=dumped, check=True, timeout=120)

    fake.sql_on_backup, fake.sql_on_restore = dump, load
    mirror_user(fake, OLD, old_mariadb)
    server, url = start_the_revision(fake, rehearsal, databases)
    try:
        mlflow = client(url, monkeypatch)
        experiment = mlflow.create_experiment(f"backups-{uuid.uuid4().hex[:8]}")
        kept, deleted_by_mistake = log_run(mlflow, experiment, "kept"), log_run(mlflow, experiment, "mistake")

        backup = cli("backup", "--why", "before a clean-up", "--json")
        assert backup.exit_code == 0, backup.output
        backup_id = json.loads(backup.stdout)["id"]

        mlflow.delete_run(deleted_by_mistake)
        later = log_run(mlflow, experiment, "later")
    finally:
        server.stop()

    restored = cli("restore", backup_id, "--yes")
    assert restored.exit_code == 0, restored.output
    new = f"{OLD}-restore-b{backup_id}"
    assert databases[new] is new_mariadb
    mirror_user(fake, new, new_mariadb)  # the password restore set on the new instance (the secret's)
    server, url = start_the_revision(fake, rehearsal, databases)  # healthy only if it reached the new database
    try:
        mlflow = client(url, monkeypatch)
        runs = {r.info.run_id: r.info.lifecycle_stage for r in mlflow.search_runs([experiment], run_view_type=3)}
        assert runs == {kept: "active", deleted_by_mistake: "active"}  # the deleted run is back
        assert later not in runs
        log_run(mlflow, experiment, "after the restore")  # and the restored server takes new runs
    finally:
        server.stop()
    # The previous instance is there, unchanged: the later run, and the deletion.
    old = stages(old_mariadb)
    assert old[later] == "active" and old[deleted_by_mistake] == "deleted" and old[kept] == "active"
    assert OLD in fake.sql_instances
    drop_databases(old_mariadb)
