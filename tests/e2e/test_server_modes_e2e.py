"""End-to-end (issue 24): the image's modes on a real MariaDB. A first deploy on an empty database gets fresh
schemas; `/mlflow-gcp/versions` tells an admin the MLflow and schema revisions and nobody else; a schema newer than
the image's MLflow (the tool was downgraded) is neither migrated (exit 3, nothing changed) nor served; the
maintenance revision answers 503 to everything but /health and opens no database connection."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
from e2e_schema import Databases, heads

from conftest import Rehearsal

pytestmark = pytest.mark.e2e

NON_ADMIN = ("e2e-modes-viewer", "viewer-password-123456")
UNKNOWN_REVISION = "f00dcafe0123"  # written by an MLflow newer than the image's


@pytest.fixture(scope="module")
def databases(rehearsal: Rehearsal):
    found = Databases.fresh(rehearsal, "e2e_modes")
    yield found
    found.drop()


def test_an_empty_database_gets_fresh_schemas_and_only_an_admin_reads_the_versions(databases: Databases):
    server, url = databases.serve()
    try:
        versions = f"{url}/mlflow-gcp/versions"
        answer = requests.get(versions, auth=databases.admin, timeout=60)
        assert answer.status_code == 200, answer.text
        expected = heads()
        assert answer.json() == {"mlflow": "3.17.2", "tracking_schema": expected["tracking"],
                                 "tracking_head": expected["tracking"], "auth_schema": expected["auth"],
                                 "auth_head": expected["auth"]}
        created = requests.post(f"{url}/api/2.0/mlflow/users/create", auth=databases.admin, timeout=60,
                                json=dict(zip(("username", "password"), NON_ADMIN, strict=True)))
        assert created.ok, created.text
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", auth=NON_ADMIN,
                            timeout=60).ok
        assert requests.get(versions, auth=NON_ADMIN, timeout=60).status_code == 403
        assert requests.get(versions, timeout=60).status_code == 401
        assert requests.post(versions, auth=databases.admin, timeout=60).status_code == 405
    finally:
        server.stop()


def test_a_newer_schema_is_neither_migrated_nor_served(databases: Databases):
    databases.execute(databases.runs, f"UPDATE alembic_version SET version_num = '{UNKNOWN_REVISION}'")
    before = {name: databases.tables(name) for name in (databases.runs, databases.auth)}

    code, result, stderr = databases.migrate()

    assert code == 3, stderr[-3000:]
    assert result["outcome"] == "newer-schema" and UNKNOWN_REVISION in result["error"], result
    assert result["tracking_before"] == result["tracking_after"] == UNKNOWN_REVISION
    assert result["auth_before"] == result["auth_after"] == heads()["auth"]
    assert {name: databases.tables(name) for name in before} == before
    assert databases.execute(databases.runs, "SELECT version_num FROM alembic_version") == [(UNKNOWN_REVISION,)]

    serving = databases.run_entrypoint()
    assert serving.returncode == 1
    refusal = serving.stderr.strip().splitlines()[-1]
    assert f"is at revision {UNKNOWN_REVISION}, newer than this image's MLflow 3.17.2" in refusal, serving.stderr
    assert "run `mlflow-gcp up`" in refusal and "Traceback" not in serving.stderr


class ConnectionCounter:
    """A TCP port where the database would be: counts the connections made to it."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


def test_maintenance_answers_503_to_all_but_health_and_opens_no_database_connection(databases: Databases):
    database = ConnectionCounter()
    server, url = databases.serve(db_port=database.port, MLFLOW_GCP_MAINTENANCE="upgrade")
    try:
        health = requests.get(f"{url}/health", timeout=30)
        assert (health.status_code, health.text) == (200, "OK")
        for method, path in (("GET", "/api/2.0/mlflow/experiments/search"), ("POST", "/api/2.0/mlflow/runs/create"),
                             ("GET", "/"), ("GET", "/mlflow-gcp/versions"), ("DELETE", "/health")):
            answer = requests.request(method, f"{url}{path}", auth=databases.admin, json={}, timeout=30)
            assert answer.status_code == 503, (method, path, answer.status_code)
            assert answer.headers["Retry-After"] == "60"
            assert answer.json() == {"error_code": "TEMPORARILY_UNAVAILABLE", "message":
                                     "MLflow is being upgraded (maintenance: upgrade); try again in a few minutes."}
        assert server.process.poll() is None
    finally:
        server.stop()
        database.socket.close()
    assert database.accepted == 0
