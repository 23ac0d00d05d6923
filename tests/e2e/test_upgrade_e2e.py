"""End-to-end (issue 24): a database made and filled by an older MLflow (its own virtualenv, its own server and
client), upgraded by the image's migration job (`entrypoint.py migrate`), then served by the image: every run,
metric, model and user is still there for the real mlflow client and both logins. A migration made to fail
halfway (a table in its way, as in MLflow issue 23721 "Table 'secrets' already exists") exits 1 with the `failed`
result, the image refuses to serve the half-migrated schema, and the database restored from the dump taken before
(it stands for the Cloud SQL backup) serves the old data to the old MLflow again.

The tests run in order on one database pair: the failed upgrade and its rollback, then the upgrade that succeeds.
"""

from __future__ import annotations

import pytest
import requests
from e2e_old_mlflow import OldServer, old_mlflow_python
from e2e_schema import Databases, heads
from e2e_upgrade_data import CLOSED_EXPERIMENT, EXPERIMENT, second_user_access, snapshot

from conftest import CLIENT_ENV, Rehearsal

pytestmark = pytest.mark.e2e

# The tracking migration that creates the `secrets` table (MLflow 3.8), between the older MLflow and the image's.
SECRETS_MIGRATION = "1bd49d398cd23"
EXPECTED_ACCESS = {EXPERIMENT: "write", CLOSED_EXPERIMENT: "read"}


@pytest.fixture(scope="module")
def old_python():
    python, why = old_mlflow_python()
    if python is None:
        pytest.skip(why)
    return python


@pytest.fixture(scope="module")
def team(rehearsal: Rehearsal, old_python, tmp_path_factory):
    """The databases as the older MLflow left them after a team's work, a dump of them, and what was made."""
    databases = Databases.fresh(rehearsal, "e2e_upgrade")
    databases.create()
    work_dir = tmp_path_factory.mktemp("old-mlflow")
    old = old_server(databases, old_python, work_dir)
    old.create_user_store()
    old.start()
    try:
        made = old.client_script("fill")
    finally:
        old.stop()
    assert made["second_user_access"] == EXPECTED_ACCESS, made
    yield databases, made, databases.dump(work_dir), work_dir
    databases.drop()


def old_server(databases: Databases, python, work_dir) -> OldServer:
    from e2e_mariadb import free_port

    return OldServer(python, work_dir, databases.uri(databases.runs), databases.uri(databases.auth),
                     databases.admin, free_port())


def tracking_script():
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config(""))


def test_a_migration_failing_halfway_exits_1_is_refused_by_the_server_and_the_restored_backup_serves_the_old_data(
    team, old_python
):
    databases, made, dumps, work_dir = team
    old_revision = databases.execute(databases.runs, "SELECT version_num FROM alembic_version")[0][0]
    # What a crashed earlier attempt leaves behind (MLflow issue 23721): the table a later migration creates.
    databases.execute(databases.runs, "CREATE TABLE secrets (secret_id VARCHAR(36) PRIMARY KEY)")

    code, result, stderr = databases.migrate()

    assert code == 1, stderr[-3000:]
    assert result["outcome"] == "failed" and "secrets" in result["error"], result
    assert result["tracking_before"] == old_revision and result["mlflow"] == "3.17.2"
    # Halfway: every migration before the one that creates `secrets` was applied.
    assert result["tracking_after"] == tracking_script().get_revision(SECRETS_MIGRATION).down_revision
    assert "Traceback" not in stderr

    serving = databases.run_entrypoint()
    assert serving.returncode == 1
    refusal = serving.stderr.strip().splitlines()[-1]
    assert f"tracking database schema is at revision {result['tracking_after']}" in refusal
    assert heads()["tracking"] in refusal and "run `mlflow-gcp up`" in refusal, serving.stderr[-2000:]
    assert "Traceback" not in serving.stderr
    assert databases.execute(databases.runs, "SELECT version_num FROM alembic_version")[0][0] == result[
        "tracking_after"]

    databases.restore(dumps)
    old = old_server(databases, old_python, work_dir).start()
    try:
        assert old.client_script("read") == made
    finally:
        old.stop()


def test_the_migration_job_upgrades_an_older_mlflows_database_and_the_image_serves_all_of_it(team, monkeypatch):
    databases, made, _, _ = team
    expected_heads = heads()

    # The job is made from the service's template, the maintenance revision's: it migrates all the same.
    code, result, stderr = databases.migrate(MLFLOW_GCP_MAINTENANCE="upgrade")

    assert code == 0, stderr[-3000:]
    assert result["outcome"] == "migrated" and result["error"] is None, result
    assert result["tracking_before"] != expected_heads["tracking"]
    assert result["auth_before"] is None  # MLflow before 3.6 kept no version table for its user store
    assert (result["tracking_after"], result["auth_after"]) == (expected_heads["tracking"], expected_heads["auth"])
    code, again, _ = databases.migrate()
    assert code == 0 and again["outcome"] == "current"

    server, url = databases.serve()
    try:
        for key, value in {**CLIENT_ENV, "MLFLOW_TRACKING_USERNAME": databases.admin[0],
                           "MLFLOW_TRACKING_PASSWORD": databases.admin[1]}.items():
            monkeypatch.setenv(key, value)
        from mlflow.server import get_app_client
        from mlflow.tracking import MlflowClient

        served = snapshot(MlflowClient(tracking_uri=url), get_app_client("basic-auth", tracking_uri=url))
        assert served == {key: value for key, value in made.items() if key != "second_user_access"}
        assert second_user_access(MlflowClient, url) == EXPECTED_ACCESS
        versions = requests.get(f"{url}/mlflow-gcp/versions", auth=databases.admin, timeout=60).json()
        assert versions == {"mlflow": "3.17.2", "tracking_schema": expected_heads["tracking"],
                            "tracking_head": expected_heads["tracking"], "auth_schema": expected_heads["auth"],
                            "auth_head": expected_heads["auth"]}
    finally:
        server.stop()

