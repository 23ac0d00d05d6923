"""End-to-end (issue 24): an MLflow upgrade as `mlflow-gcp up` runs it, every part real but Google.

`up --mlflow-version 3.1.4` deploys into the fake Google APIs; each revision the fake Cloud Run makes ready is
started here as Cloud Run would start it (its pinned secret versions from the fake Secret Manager, the Cloud SQL
private IP its `mlflow-env` names mapped to the session's MariaDB), behind a Cloud Run front at the service's URL:
a revision of the older MLflow runs that MLflow's own server (its cached virtualenv, tests/e2e/e2e_old_mlflow.py),
any other the image's real `container/entrypoint.py` (maintenance mode included). The older client fills it. Then
`up --mlflow-version 3.17.2 --yes`: the fake's backup run dumps the databases, the migration job's execution runs
the real `entrypoint.py migrate` with the environment the job's template gives (its secrets resolved at the
versions the template pins) and ends as its exit status says, its stderr going to the fake Cloud Logging, and the
fake's restoreBackup loads the dump.

First with a table in the migration's way (MLflow issue 23721): `up` fails with the job's line, the dump is
loaded, the older server serves the old data again. The table removed, `up` again: backup, job, serving revision
in that order; the image's server on the migrated schema serves everything to the real client, and `status --json`
shows the versions the real `/mlflow-gcp/versions` route reports.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from e2e_deployment import ENTRYPOINT, ServerProcess, google_endpoints, own_databases
from e2e_front import CloudRunFront
from e2e_mariadb import MariaDB, binary, free_port
from e2e_old_mlflow import OLD_MLFLOW, OldServer, old_mlflow_python
from e2e_schema import ENTRYPOINT_HANG_GUARD, RESULT_PREFIX, heads
from e2e_upgrade_data import CLOSED_EXPERIMENT, EXPERIMENT, second_user_access, snapshot
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat
from tests.server_double import build_context, forbid_non_loopback

from conftest import CLIENT_ENV, Rehearsal, server_log_path
from mlflow_gcp import build_context as contexts
from mlflow_gcp.service_spec import SERVICE_URLS_VAR, container_environment
from mlflow_gcp.steps.mlflow_version import MAINTENANCE_ENV, VERSION_ANNOTATION

sys.path.insert(0, str(ENTRYPOINT.parent))
from mlflow_gcp_server import database
from mlflow_gcp_server.config import Credentials

pytestmark = pytest.mark.e2e

DB_USER = "e2e_chain"
DB_NAME, AUTH_DB_NAME = "e2e_chain_runs", "e2e_chain_auth"  # not the rehearsal's databases
SERVICE = f"projects/{PROJECT}/locations/europe-west1/services/mlflow"
SERVICE_URL = "https://mlflow-chain00xyz-ew.a.run.app"  # the Host the front gives the container
NEW = contexts.mlflow_pin(ENTRYPOINT.parent)
EXPECTED_ACCESS = {EXPERIMENT: "write", CLOSED_EXPERIMENT: "read"}
IN_THE_WAY = "CREATE TABLE secrets (secret_id VARCHAR(36) PRIMARY KEY)"  # MLflow issue 23721


def secret_value(fake, secret_id: str, version: str) -> str:
    stored = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{secret_id}"]
    if version == "latest":
        return stored[-1]["data"].decode()
    return next(v for v in stored if v["name"].endswith(f"/{version}"))["data"].decode()


class CloudRun:
    """What Cloud Run runs for the fake's service and migration job, on this machine."""

    def __init__(self, fake, rehearsal: Rehearsal, old_python: Path, work_dir: Path):
        self.fake, self.rehearsal, self.old_python, self.work_dir = fake, rehearsal, old_python, work_dir
        self.mariadb: MariaDB = rehearsal.mariadb
        self.front = CloudRunFront(SERVICE_URL, backend_port=0).start()
        self._rollouts = threading.Lock()
        self.server: ServerProcess | OldServer | None = None
        self.started: list[tuple[str, str]] = []  # (revision, "old" | "image" | "maintenance")
        self.errors: list[str] = []
        self.executions: list[tuple[int, dict]] = []  # exit status and result of each migrate run
        self.job_environments: list[dict[str, str]] = []
        self.dumps: dict[str, Path] = {}
        self._wrap_rollouts()
        fake.run_jobs.outcome = self.run_migration
        fake.sql_on_backup, fake.sql_on_restore = self.dump, self.load

    def stop(self) -> None:
        self.stop_server()
        self.front.stop()

    # -- the service's revisions ------------------------------------------------------------------------------
    def _wrap_rollouts(self) -> None:
        """A new revision is ready once its container answers /health, as Cloud Run's default startup probe has
        it: the fake's rollout completes only then, the previous revision serving until it does."""
        original = self.fake.after

        def after(kind, action):
            if kind != "run.deploy":
                return original(kind, action)

            def then():
                threading.Thread(target=self.roll_out, args=(action,), daemon=True).start()

            return original(kind, then)

        self.fake.after = after

    def roll_out(self, complete) -> None:
        with self._rollouts:
            service = copy.deepcopy(self.fake.state["run_services"].get(SERVICE))
            previous, self.server = self.server, None
            try:
                if service is not None:
                    self.server = self.start(service)
                    self.front.backend_port = self.server.port
            except Exception as error:  # the revision fails to start: the test's asserts say what it printed
                self.errors.append(f"{service['latestCreatedRevision']}: {error}")
            finally:
                if previous is not None:
                    previous.stop()
                complete()

    def environment(self, containers: list[dict]) -> dict[str, str]:
        """A container's environment as Cloud Run gives it, the database mapped to the MariaDB, Google to fakes."""
        self.mirror_user()
        env = container_environment({"template": {"containers": containers}},
                                    lambda secret, version: secret_value(self.fake, secret, version))
        values = dict(line.split("=", 1) for line in env["MLFLOW_ENV"].splitlines() if "=" in line)
        assert values["DB_HOST"] in self.private_ips(), values["DB_HOST"]
        values.update(DB_HOST="127.0.0.1", DB_PORT=str(self.mariadb.port),
                      DB_CA_CERT_B64=base64.b64encode(self.mariadb.ca_file.read_bytes()).decode("ascii"),
                      ARTIFACTS_DESTINATION=f"gs://{self.rehearsal.settings.bucket_name}/upgrade-chain-e2e")
        env["MLFLOW_ENV"] = "".join(f"{k}={v}\n" for k, v in values.items())
        env.update(google_endpoints(self.rehearsal.google.url, self.rehearsal.work_dir))
        return env

    def start(self, service: dict) -> ServerProcess | OldServer:
        template, revision = service["template"], service["latestCreatedRevision"]
        assert not {"command", "args"} & set(template["containers"][0]), template["containers"][0]
        env = self.environment(template["containers"])
        if (template.get("annotations") or {}).get(VERSION_ANNOTATION) == OLD_MLFLOW and not env.get(MAINTENANCE_ENV):
            self.started.append((revision, "old"))
            values = dict(line.split("=", 1) for line in env["MLFLOW_ENV"].splitlines() if "=" in line)
            user, password = env["MYSQL_CREDENTIALS"].split(":", 1)
            admin = tuple(env["MLFLOW_CREDENTIALS"].split(":", 1))
            uri = lambda name: database.mysql_uri(Credentials(user, password), "127.0.0.1",  # noqa: E731
                                                  self.mariadb.port, name, str(self.mariadb.ca_file))
            old = OldServer(self.old_python, self.work_dir, uri(values["DB_NAME"]), uri(values["AUTH_DB_NAME"]),
                            admin, free_port())
            old.create_user_store()
            return old.start()
        self.started.append((revision, "maintenance" if env.get(MAINTENANCE_ENV) else "image"))
        env[SERVICE_URLS_VAR] = SERVICE_URL
        env["PORT"] = str(free_port())
        return ServerProcess(env, server_log_path()).start()

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- the migration job's executions ----------------------------------------------------------------------
    def run_migration(self, job: dict, execution: dict) -> tuple[str, list[str]]:
        """The task as Cloud Run runs it: the image's ENTRYPOINT (`python /app/entrypoint.py`, which a `command`
        would replace) with the container's args; a job's environment has no PORT or K_SERVICE but CLOUD_RUN_JOB
        and the rest (https://cloud.google.com/run/docs/container-contract#jobs-env-vars)."""
        task = job["template"]["template"]
        container = task["containers"][0]
        assert "command" not in container, container
        env = self.environment(task["containers"])
        for name in ("PORT", "K_SERVICE"):
            env.pop(name)
        env.update(CLOUD_RUN_JOB=job["name"].rsplit("/", 1)[-1], CLOUD_RUN_EXECUTION=execution["name"].rsplit(
            "/", 1)[-1], CLOUD_RUN_TASK_INDEX="0", CLOUD_RUN_TASK_ATTEMPT="0", CLOUD_RUN_TASK_COUNT="1")
        self.job_environments.append(env)
        done = subprocess.run([sys.executable, str(ENTRYPOINT), *container.get("args", [])], env=env,
                              capture_output=True, text=True, timeout=ENTRYPOINT_HANG_GUARD)
        lines = done.stderr.strip().splitlines()
        result = json.loads(lines[-1].removeprefix(RESULT_PREFIX)) if lines and lines[-1].startswith(
            RESULT_PREFIX) else {}
        self.executions.append((done.returncode, result))
        return ("succeeded" if done.returncode == 0 else "failed"), lines[-20:], done.returncode

    # -- Cloud SQL: the backup run and restoreBackup ---------------------------------------------------------
    def socket_args(self) -> list[str]:
        return [f"--socket={self.mariadb.base_dir / 'mysqld.sock'}", "--user=root"]

    def dump(self, instance: str, backup_id: str) -> None:
        path = self.dumps[backup_id] = self.work_dir / f"backup-{backup_id}.sql"
        with path.open("wb") as out:
            subprocess.run([binary("mariadb-dump"), *self.socket_args(), "--databases", DB_NAME, AUTH_DB_NAME],
                           stdout=out, check=True, timeout=120)

    def load(self, target: str, source: str, backup_id: str) -> None:
        drop_databases(self.mariadb)  # Cloud SQL's restore replaces the instance's data, tables a migration made too
        with self.dumps[backup_id].open("rb") as dumped:
            subprocess.run([binary("mariadb"), *self.socket_args()], stdin=dumped, check=True, timeout=120)

    # -- Cloud SQL's users and addresses ---------------------------------------------------------------------
    def private_ips(self) -> list[str]:
        return [a["ipAddress"] for item in self.fake.sql_instances.values() for a in item.get("ipAddresses", [])
                if a["type"] == "PRIVATE"]

    def mirror_user(self) -> None:
        """The MariaDB gets the MySQL user as the fake Cloud SQL instance has it (password included), and the two
        databases `up` made there."""
        user = next(u for users in self.fake.sql_users.values() for u in users if u["name"] == DB_USER)
        connection = self.mariadb.connect()
        with connection.cursor() as cursor:
            for name in (DB_NAME, AUTH_DB_NAME):
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
            cursor.execute(f"CREATE OR REPLACE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY %s", (user["password"],))
            cursor.execute(f"GRANT ALL PRIVILEGES ON `e2e\\_chain\\_%`.* TO '{DB_USER}'@'127.0.0.1'")
            cursor.execute("FLUSH PRIVILEGES")
        connection.close()


def drop_databases(mariadb: MariaDB) -> None:
    mariadb.execute(None, *(f"DROP DATABASE IF EXISTS `{name}`" for name in (DB_NAME, AUTH_DB_NAME)))


@pytest.fixture
def old_python():
    python, why = old_mlflow_python()
    if python is None:
        pytest.skip(why)
    return python


@pytest.fixture
def cloud_run(fake, rehearsal, old_python, tmp_path, monkeypatch):
    own_databases(monkeypatch, DB_USER, DB_NAME, AUTH_DB_NAME)
    drop_databases(rehearsal.mariadb)
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "60")  # a revision starts before its operation ends
    forbid_non_loopback(monkeypatch)
    context = build_context(tmp_path, monkeypatch)
    (context / "requirements.txt").write_text(f"mlflow[auth]=={NEW}\nPyMySQL==1.2.4\n")  # the image's pin
    from tests.fake_gcp.apis import run
    from tests.helpers import ALL_APIS_ENABLED

    fake.enabled |= ALL_APIS_ENABLED
    work_dir = tmp_path / "cloud-run"
    work_dir.mkdir()
    running = CloudRun(fake, rehearsal, old_python, work_dir)
    urls = [f"http://localhost:{running.front.port}", running.front.url]
    monkeypatch.setattr(run, "service_urls", lambda project, location, service: urls)
    yield running
    running.stop()
    drop_databases(rehearsal.mariadb)


def use_the_login(monkeypatch) -> None:
    """The client's environment as the README's `eval "$(mlflow-gcp credentials)"` sets it."""
    login = json.loads(cli("credentials", "--format", "json").stdout)
    for key, value in {**CLIENT_ENV, "MLFLOW_TRACKING_USERNAME": login["MLFLOW_TRACKING_USERNAME"],
                       "MLFLOW_TRACKING_PASSWORD": login["MLFLOW_TRACKING_PASSWORD"]}.items():
        monkeypatch.setenv(key, value)


def kinds(fake) -> list[str]:
    """The upgrade's mutating requests in order, by kind."""
    found = []
    for r in fake.mutating_requests():
        if r.api == "sqladmin" and r.route.endswith("/backupRuns"):
            found.append("backup")
        elif r.api == "sqladmin" and r.route.endswith("/restoreBackup"):
            found.append("restore")
        elif r.api == "run" and r.route.endswith(":run"):
            found.append("job-run")
        elif r.api == "run" and "/services/" in r.route and r.method == "PATCH":
            found.append("revision")
    return found


def test_up_upgrades_an_older_mlflows_deployment_through_the_real_job_after_a_failed_attempt_rolled_back(
    fake, cloud_run, monkeypatch
):
    deployed = cli("up", "--mlflow-version", OLD_MLFLOW)
    assert deployed.exit_code == 0, deployed.output + "\n".join(cloud_run.errors)
    assert [kind for _, kind in cloud_run.started] == ["old"] and not cloud_run.errors, cloud_run.errors
    made = cloud_run.server.client_script("fill")  # the team's older client, on the older server
    assert made.pop("second_user_access") == EXPECTED_ACCESS, made
    mariadb = cloud_run.mariadb
    old_revision = mariadb.execute(DB_NAME, "SELECT version_num FROM alembic_version")[0][0]

    # A failed attempt: a table in the migration's way. The dump is loaded, the older server serves again.
    mariadb.execute(DB_NAME, IN_THE_WAY)
    fake.clear_log()
    failed = cli("up", "--mlflow-version", NEW, "--yes")
    assert failed.exit_code != 0, failed.output
    assert [code for code, _ in cloud_run.executions] == [1], cloud_run.executions
    result = cloud_run.executions[0][1]
    assert result["outcome"] == "failed" and "secrets" in result["error"], result
    assert "secrets" in flat(failed.output) and "already exists" in flat(failed.output), failed.output
    assert kinds(fake) == ["revision", "backup", "job-run", "restore", "revision"], kinds(fake)
    assert [kind for _, kind in cloud_run.started] == ["old", "maintenance", "old"], cloud_run.errors
    assert mariadb.execute(DB_NAME, "SELECT version_num FROM alembic_version")[0][0] == old_revision
    read = cloud_run.server.client_script("read")
    assert read.pop("second_user_access") == EXPECTED_ACCESS and read == made

    # The table removed by hand: `up` again migrates with a new backup and serves the image on the new schema.
    mariadb.execute(DB_NAME, "DROP TABLE secrets")
    fake.clear_log()
    upgraded = cli("up", "--mlflow-version", NEW, "--yes")
    assert upgraded.exit_code == 0, upgraded.output + "\n".join(cloud_run.errors)
    assert kinds(fake) == ["revision", "backup", "job-run", "revision"], kinds(fake)
    code, result = cloud_run.executions[-1]
    assert code == 0 and result["outcome"] == "migrated", result
    assert result["tracking_before"] == old_revision and result["tracking_after"] == heads()["tracking"]
    assert [kind for _, kind in cloud_run.started][-2:] == ["maintenance", "image"], cloud_run.errors
    assert not cloud_run.errors, cloud_run.errors

    # The job ran with the secret versions the serving revision pins.
    serving = fake.state["run_services"][SERVICE]["template"]["containers"][0]["env"]
    job = fake.run_jobs.job("mlflow-migrate")["template"]["template"]["containers"][0]["env"]
    assert [e for e in job if "valueSource" in e] == [e for e in serving if "valueSource" in e]

    use_the_login(monkeypatch)
    url = cloud_run.front.url  # the service's URL: Cloud Run's front, the new revision's server behind it
    assert snapshot(MlflowClient(tracking_uri=url), get_app_client("basic-auth", tracking_uri=url)) == made
    assert second_user_access(MlflowClient, url) == EXPECTED_ACCESS

    status = cli("status", "--json")
    assert status.exit_code == 0, status.output
    expected = heads()
    mlflow = json.loads(status.stdout)["mlflow"]
    assert mlflow["server"] == NEW and mlflow["image"] == NEW, mlflow
    assert (mlflow["tracking_schema"], mlflow["tracking_head"]) == (expected["tracking"], expected["tracking"])
    assert (mlflow["auth_schema"], mlflow["auth_head"]) == (expected["auth"], expected["auth"])
