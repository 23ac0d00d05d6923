"""MLflow upgrades (issue 24) against the fake: the plan line and its question, the order of the stages in the
request log (maintenance, backup, migration job, serving revision), a failed migration rolled back, a newer
schema refused, a downgrade refused before anything is sent.

The deployment's build context pins MLflow in requirements.txt as container/ does; a newer pin is a newer image.
The server double serves the maintenance page during the upgrade and `/mlflow-gcp/versions` to the admin; the
database's data (`fake.sql_data`) carries the schema the fake migration job writes."""

from __future__ import annotations

import json

import pytest

from tests.helpers import cli, refused_with_yes_and_dry_run
from tests.server_double import deploy

OLD, NEW = "3.17.2", "3.18.0"
INSTANCE = "mlflow-tracking-database"
DATA = {"runs": ["a", "b"], "schema": OLD}
RESULT_PREFIX = "mlflow-gcp: migration result: "
PLAN_LINE = f"MLflow {OLD} → {NEW}: database schema migration (irreversible); a backup is taken first"


def pin(tmp_path, version: str) -> None:
    context = tmp_path / "build-context"
    context.mkdir(exist_ok=True)
    (context / "requirements.txt").write_text(f"mlflow[auth]=={version}\nPyMySQL==1.2.4\n")


def result_line(outcome: str, error: str | None = None) -> str:
    result = {
        "outcome": outcome,
        "mlflow": NEW,
        "tracking_before": OLD,
        "tracking_after": NEW if outcome == "migrated" else OLD,
        "auth_before": OLD,
        "auth_after": NEW if outcome == "migrated" else OLD,
        "error": error,
    }
    return RESULT_PREFIX + json.dumps(result)


def migrates(fake):
    """The job's outcome: the schema migrated to the image's MLflow."""

    def outcome(job, execution):
        fake.sql_set_data(INSTANCE, {**fake.sql_data[INSTANCE], "schema": NEW})
        return "succeeded", [result_line("migrated")]

    return outcome


def fails_halfway(fake):
    """The job's outcome: a migration that failed halfway (MLflow issue 23721), the schema left half-migrated."""

    def outcome(job, execution):
        fake.sql_set_data(INSTANCE, {**fake.sql_data[INSTANCE], "schema": "half"})
        return "failed", [result_line("failed", "Table 'secrets' already exists")]

    return outcome


@pytest.fixture
def double(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "5")
    pin(tmp_path, OLD)
    server = deploy(fake, tmp_path, monkeypatch)
    fake.sql_set_data(INSTANCE, dict(DATA))
    fake.clear_log()
    yield server
    server.stop()


def service(fake) -> dict:
    return fake.run_service("mlflow")


def version_of(fake) -> str | None:
    found = service(fake)
    return (found["template"].get("annotations") or {}).get("mlflow-gcp/mlflow-version")


def env_names(fake) -> list[str]:
    return [e["name"] for e in service(fake)["template"]["containers"][0].get("env", [])]


def assert_upgraded(fake, double) -> None:
    assert version_of(fake) == NEW
    assert (service(fake).get("annotations") or {}).get("mlflow-gcp/mlflow-version") == NEW
    assert "MLFLOW_GCP_MAINTENANCE" not in env_names(fake)
    assert not any(k.startswith("mlflow-gcp/upgrade") for k in service(fake)["template"].get("annotations", {}))
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}
    assert double.answer("/health", None)[0] == 200
    assert double.mlflow_version == NEW


def positions(fake) -> dict[str, list[int]]:
    """Where each kind of mutating request is in the log."""
    found: dict[str, list[int]] = {}
    for index, r in enumerate(fake.mutating_requests()):
        if r.api == "sqladmin" and r.route.endswith("/backupRuns"):
            kind = "backup"
        elif r.api == "sqladmin" and r.route.endswith("/restoreBackup"):
            kind = "restore"
        elif r.api == "run" and r.route.endswith(":run"):
            kind = "job-run"
        elif r.api == "run" and "/jobs" in r.route:
            kind = "job"
        elif r.api == "run" and "/services/" in r.route and r.method == "PATCH":
            kind = "revision"
        else:
            kind = f"{r.api} {r.method} {r.route}"
        found.setdefault(kind, []).append(index)
    return found


def upgrade_backups() -> list[str]:
    """The descriptions of the backups taken for upgrades, without their run's token."""
    listed = json.loads(cli("backup", "list", "--json").stdout)
    return [
        b["description"].split(" (upgrade ")[0]
        for b in listed["backups"]
        if (b["description"] or "").startswith("mlflow-gcp: before the upgrade")
    ]


def test_the_deploy_step_records_the_version_on_the_service_and_its_template(fake, double):
    assert version_of(fake) == OLD
    assert service(fake)["annotations"]["mlflow-gcp/mlflow-version"] == OLD


def test_the_plan_says_the_upgrade_as_a_change_that_interrupts_the_server(fake, double, tmp_path):
    pin(tmp_path, NEW)
    result = cli("up", "--dry-run")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert PLAN_LINE in flat
    assert "up` asks before it" in flat
    assert fake.mutating_requests() == []


def test_without_a_terminal_or_yes_the_upgrade_is_refused_before_it_starts(fake, double, tmp_path):
    pin(tmp_path, NEW)
    result = cli("up")
    assert result.exit_code != 0
    flat = " ".join(result.output.split())
    assert "interrupts the server" in flat and PLAN_LINE in flat and "--yes" in flat
    assert "backup" not in positions(fake) and "revision" not in positions(fake)
    assert version_of(fake) == OLD


def test_on_a_terminal_the_upgrade_is_asked_and_a_no_changes_nothing(fake, double, tmp_path, monkeypatch):
    from mlflow_gcp.cli import approval

    pin(tmp_path, NEW)
    monkeypatch.setattr(approval, "interactive", lambda: True)
    result = cli("up", input="n\n")
    assert result.exit_code != 0
    assert f"{PLAN_LINE}. Go ahead?" in " ".join(result.output.split())
    assert "backup" not in positions(fake) and "revision" not in positions(fake)
    assert version_of(fake) == OLD


def test_upgrade_backs_up_then_migrates_then_serves(fake, double, tmp_path):
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    at = positions(fake)
    maintenance, *_, serving = at["revision"]
    assert maintenance < at["backup"][0] < at["job-run"][0] < serving
    assert len(at["backup"]) == 1 and len(at["job-run"]) == 1 and "restore" not in at
    assert upgrade_backups() == [f"mlflow-gcp: before the upgrade of MLflow {OLD} to {NEW}"]
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


def test_the_server_is_in_maintenance_while_the_job_runs(fake, double, tmp_path):
    seen = []

    def outcome(job, execution):
        seen.append((double.answer("/health", None)[0], double.answer("/api/2.0/mlflow/experiments/search", None)[0]))
        return migrates(fake)(job, execution)

    fake.run_jobs.outcome = outcome
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert seen == [(200, 503)]


def test_a_failed_migration_is_rolled_back(fake, double, tmp_path):
    previous_image = service(fake)["template"]["containers"][0]["image"]
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    flat = " ".join(result.output.split())
    assert "Table 'secrets' already exists" in flat
    assert "rolled back" in flat and f"--mlflow-version {OLD}" in flat
    assert "Traceback" not in result.output
    at = positions(fake)
    assert at["backup"][0] < at["job-run"][0] < at["restore"][0] < at["revision"][-1]
    assert fake.sql_data[INSTANCE] == DATA  # the backup's data, not the half-migrated schema
    assert service(fake)["template"]["containers"][0]["image"] == previous_image
    assert version_of(fake) == OLD
    assert "MLFLOW_GCP_MAINTENANCE" not in env_names(fake)
    assert double.answer("/health", None)[0] == 200


def test_a_migration_whose_container_never_started_is_rolled_back_with_googles_reason(fake, double, tmp_path):
    """Cloud Run could not start the job's container (its secret unreadable): no log line at all. The upgrade does
    not wait out the log bound (one Logging read) and says Google's reason."""
    fake.latency["logging.ingest"] = 60.0
    fake.run_jobs.outcome = lambda job, execution: ("not_started", [])
    fake.run_jobs.start_failure = ("SECRETS_ACCESS_CHECK_FAILED", "Permission denied on secret: mlflow-env.")
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    flat = " ".join(result.output.split())
    assert "failed to start: Permission denied on secret: mlflow-env." in flat
    assert "rolled back" in flat and "Traceback" not in result.output
    assert len([r for r in fake.requests() if r.api == "logging"]) == 1
    assert fake.sql_data[INSTANCE] == DATA
    assert version_of(fake) == OLD


def test_a_newer_schema_is_refused_and_the_previous_image_serves_again(fake, double, tmp_path):
    previous_image = service(fake)["template"]["containers"][0]["image"]
    fake.run_jobs.outcome = lambda job, execution: ("failed", [result_line("newer-schema")])
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    assert "newer than MLflow" in " ".join(result.output.split())
    assert "restore" not in positions(fake)
    assert fake.sql_data[INSTANCE] == DATA
    assert service(fake)["template"]["containers"][0]["image"] == previous_image
    assert version_of(fake) == OLD


def test_a_newer_schema_told_only_by_the_exit_code_is_refused_without_a_restore(fake, double, tmp_path, monkeypatch):
    """The result line never reaches Logging (late beyond the bound here; unreadable or excluded alike): the task's
    exit code 3 (the image's "newer schema, nothing changed") says it, so no backup is restored for nothing and the
    message says why."""
    from mlflow_gcp.resources import migration_job

    monkeypatch.setattr(migration_job, "LOG_INGEST_SECONDS", 1.0)
    fake.latency["logging.ingest"] = 600.0
    previous_image = service(fake)["template"]["containers"][0]["image"]
    fake.run_jobs.outcome = lambda job, execution: ("failed", [result_line("newer-schema")], 3)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "newer than MLflow" in text and "Nothing was changed" in text, text
    assert "restore" not in positions(fake)
    assert fake.sql_data[INSTANCE] == DATA
    assert service(fake)["template"]["containers"][0]["image"] == previous_image
    assert version_of(fake) == OLD


def test_a_downgrade_is_refused_before_any_mutating_request(fake, double, tmp_path):
    assert cli("backup", "--why", "test").exit_code == 0
    pin(tmp_path, NEW)
    fake.run_jobs.outcome = migrates(fake)
    assert cli("up", "--yes").exit_code == 0
    fake.clear_log()
    pin(tmp_path, OLD)
    for said in refused_with_yes_and_dry_run(fake, "up"):
        assert f"runs MLflow {NEW}, newer than the MLflow {OLD}" in said
        assert "the newest successful one is" in said and f"--mlflow-version {NEW}" in said
    assert version_of(fake) == NEW


def test_a_server_of_an_earlier_tool_reports_its_version(fake, double, tmp_path):
    """No annotation (an earlier mlflow-gcp deployed it): the version the server reports is taken."""
    stored = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    stored["annotations"].pop("mlflow-gcp/mlflow-version")
    stored["template"]["annotations"].pop("mlflow-gcp/mlflow-version")
    double.version_default = NEW
    double.mlflow_version = None
    (tmp_path / "build-context" / "entrypoint.py").write_text("# another image of the same MLflow\n")
    for args in (("up", "--dry-run"), ("up", "--yes")):
        result = cli(*args)
        assert result.exit_code != 0
        assert f"runs MLflow {NEW}, newer" in " ".join(result.output.split())
        assert fake.mutating_requests() == []


def test_an_unknown_version_is_upgraded_with_a_backup(fake, double, tmp_path):
    stored = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    stored["annotations"].pop("mlflow-gcp/mlflow-version")
    stored["template"]["annotations"].pop("mlflow-gcp/mlflow-version")
    double.has_versions_route = False
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    plan = cli("up", "--dry-run")
    assert f"MLflow unknown → {NEW}" in " ".join(plan.output.split())
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert "backup" in positions(fake) and version_of(fake) == NEW


def test_status_shows_the_version_and_each_schema(fake, double, tmp_path):
    result = cli("status")
    flat = " ".join(result.output.split())
    assert f"MLflow {OLD}" in flat and f"tracking schema {OLD}" in flat and f"auth schema {OLD}" in flat
    pin(tmp_path, NEW)
    document = json.loads(cli("status", "--json").stdout)
    assert document["mlflow"] == {
        "running": OLD,
        "image": NEW,
        "server": OLD,
        "tracking_schema": OLD,
        "tracking_head": OLD,
        "auth_schema": OLD,
        "auth_head": OLD,
    }
    flat = " ".join(cli("status").output.split())
    assert f"MLflow {OLD}; `up` upgrades to {NEW}" in flat


def test_after_a_rolled_back_upgrade_the_next_one_migrates_anew(fake, double, tmp_path):
    """The failed execution of the upgrade rolled back is not taken for the next upgrade's: a new backup, a new
    execution."""
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code != 0
    fake.run_jobs.outcome = migrates(fake)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    assert len(fake.run_jobs.executions("mlflow-migrate")) == 2
    assert len(upgrade_backups()) == 2


def test_down_deletes_the_migration_job_with_the_service(fake, double, tmp_path):
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert "Cloud Run job mlflow-migrate" in " ".join(cli("status").output.split())
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.run_jobs.job("mlflow-migrate") is None
    assert fake.run_service("mlflow") is None


def test_after_down_the_kept_databases_are_migrated_before_the_server_is_made(fake, double, tmp_path):
    """`down` keeps the data; a newer mlflow-gcp's `up` must not make a server that refuses the old schema."""
    assert cli("down", "--yes").exit_code == 0
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    fake.clear_log()
    plan = cli("up", "--dry-run")
    assert PLAN_LINE in " ".join(plan.output.split())  # the version recorded on the kept instance
    result = cli("up")  # no server to interrupt: not asked
    assert result.exit_code == 0, result.output
    at = positions(fake)
    creates = [i for i, r in enumerate(fake.mutating_requests()) if r.api == "run" and r.route.endswith("/services")]
    assert at["backup"][0] < at["job-run"][0] < creates[0]
    assert_upgraded(fake, double)


def test_after_down_a_failed_migration_restores_and_deploys_no_server(fake, double, tmp_path):
    assert cli("down", "--yes").exit_code == 0
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    assert "No server uses it" in " ".join(result.output.split())
    assert fake.sql_data[INSTANCE] == DATA
    assert fake.run_service("mlflow") is None


def test_an_execution_started_before_the_backup_and_still_running_is_not_taken_for_the_upgrades(
    fake, double, tmp_path
):
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.resources.migration_job import MigrationJob
    from tests.helpers import settings

    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    fake.latency["run.execution"] = 600.0
    stray = MigrationJob(settings(), Clients("demo-project")).start()  # someone ran the job by hand
    pin(tmp_path, "3.19.0")
    result = cli("up", "--yes")
    assert result.exit_code != 0
    flat = " ".join(result.output.split())
    assert f"The migration {stray.rsplit('/', 1)[-1]}" in flat and "started before this upgrade's backup" in flat
    fake.run_jobs.finish(stray.rsplit("/", 1)[-1])
    fake.latency["run.execution"] = 0.0
    again = cli("up", "--yes")
    assert again.exit_code == 0, again.output
    assert version_of(fake) == "3.19.0"


def test_a_backup_from_before_the_upgrade_is_migrated_before_restore_moves_the_server_onto_it(fake, double, tmp_path):
    """Restored into a new instance, a backup taken under MLflow 3.17.2 holds its schema: the server of 3.18.0
    would refuse it, so the restore's deploy migrates it (a backup of the new instance first) before the move."""
    from tests.test_backups import take_backup

    backup = take_backup()
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    new = f"{INSTANCE}-restore-b{backup['id']}"

    def migrates_the_restored(job, execution):
        fake.sql_set_data(new, {**fake.sql_data[new], "schema": NEW})
        return "succeeded", [result_line("migrated")]

    fake.run_jobs.outcome = migrates_the_restored
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    assert fake.sql_data[new] == {**DATA, "schema": NEW}
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}  # the previous instance, untouched
    assert double.database_instance() == new and version_of(fake) == NEW
    assert len(fake.run_jobs.executions("mlflow-migrate")) == 2


def test_going_back_to_the_older_mlflow_is_a_restore_with_its_version(fake, double, tmp_path):
    """After an upgrade, the way back: a backup taken before it restored into a new instance, served by the older
    MLflow (`--mlflow-version`, remembered); the upgraded instance stays untouched."""
    from tests.test_backups import take_backup

    backup = take_backup()
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert cli("up", "--mlflow-version", OLD, "--dry-run").exit_code != 0  # a downgrade in place is refused
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    assert result.exit_code == 0, result.output
    new = f"{INSTANCE}-restore-b{backup['id']}"
    assert double.database_instance() == new and version_of(fake) == OLD
    assert fake.sql_data[new] == DATA and fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}
    fake.clear_log()
    again = cli("up")  # the version is remembered
    assert again.exit_code == 0, again.output
    assert version_of(fake) == OLD and fake.mutating_requests() == []
