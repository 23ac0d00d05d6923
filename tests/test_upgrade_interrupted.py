"""An MLflow upgrade (issue 24) stopped at every stage (Ctrl-C: SIGINT, a KeyboardInterrupt in the command), or
with the answer of one of its mutating requests lost after Google applied it: the data is never lost, the server
serves the old MLflow or the maintenance page meanwhile, and the rerun converges on the new version serving the
data, with one backup taken for the upgrade. A failed migration stopped while it is rolled back: the rerun finishes
the roll-back."""

from __future__ import annotations

import re
import signal

import pytest

from tests.fake_gcp.apis import run_jobs
from tests.helpers import cli
from tests.test_lost_answers import sent
from tests.test_restore_interrupted import start
from tests.test_resume import kill_when
from tests.test_upgrade import (
    DATA,
    INSTANCE,
    NEW,
    OLD,
    assert_upgraded,
    double,  # noqa: F401 (fixture)
    env_names,
    fails_halfway,
    migrates,
    pin,
    positions,
    service,
    upgrade_backups,
    version_of,
)

SERVICE_PATCH = ("run", "PATCH", "/v2/projects/{project}/locations/{location}/services/{service}")
BACKUP = ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/backupRuns")
JOB_CREATE = ("run", "POST", run_jobs.JOBS)
JOB_RUN = ("run", "POST", run_jobs.JOB + ":run")
RESTORE = ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/restoreBackup")
# The label recording the MLflow version of the schema (`unknown` while the job runs, then the new version).
INSTANCE_PATCH = ("sqladmin", "PATCH", "/v1/projects/{project}/instances/{instance}")
UPGRADE_METHODS = [SERVICE_PATCH, BACKUP, JOB_CREATE, JOB_RUN, INSTANCE_PATCH]

# A line the upgrade prints right after (or while) each stage: killed there, the next stage never starts.
STAGES = {
    "maintenance serving": r"upgrade: maintenance revision serving",
    "while the backup is taken": r"upgrade: backup \d+ of .* started",
    "backup taken": r"upgrade: backup \d+ of .* is SUCCESSFUL",
    "while the migration runs": r"upgrade: migration .* runs",
    "migrated": r"upgrade: migration .* succeeded",
    "serving revision ready": r"upgrade: serving revision of MLflow .* ready",
}
ROLLBACK_STAGES = {
    "while the backup is restored": r"upgrade: restoring backup",
    "backup restored": r"upgrade: backup \d+ restored onto",
}


def assert_safe_meanwhile(fake, double) -> None:  # noqa: F811
    """Stopped anywhere: the data is the data, or migrated; the server serves it or says it is in maintenance."""
    assert fake.sql_data[INSTANCE] in (DATA, {**DATA, "schema": NEW})
    if "MLFLOW_GCP_MAINTENANCE" in env_names(fake):
        assert double.answer("/api/2.0/mlflow/experiments/search", None)[0] == 503
    else:
        assert double.answer("/health", None)[0] == 200
        assert fake.sql_data[INSTANCE]["schema"] == version_of(fake)


def slow_stages(fake) -> None:
    """Each stage lasts long enough for the interrupt to land while it runs."""
    fake.latency["sqladmin.backup"] = 0.5
    fake.latency["run.execution"] = 0.5


def assert_rolled_back(fake, double, result) -> None:  # noqa: F811
    assert result.exit_code != 0
    assert "rolled back" in " ".join(result.output.split())
    assert fake.sql_data[INSTANCE] == DATA
    assert version_of(fake) == OLD
    assert "MLFLOW_GCP_MAINTENANCE" not in env_names(fake)
    assert double.answer("/health", None)[0] == 200


@pytest.mark.parametrize("stage", STAGES)
def test_upgrade_interrupted_at_any_stage_then_rerun(fake, double, tmp_path, stage):  # noqa: F811
    slow_stages(fake)
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    printed = kill_when(start("up", "--yes"), STAGES[stage], signal.SIGINT)
    assert re.search(STAGES[stage], printed), printed
    assert_safe_meanwhile(fake, double)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    assert upgrade_backups() == [f"mlflow-gcp: before the upgrade of MLflow {OLD} to {NEW}"]
    assert len(fake.run_jobs.executions(f"{service(fake)['name'].rsplit('/', 1)[-1]}-migrate")) == 1


def ends_after_the_next_look(fake, execution_id: str) -> None:
    """The execution ends right after the next listing of the job's executions has answered it running."""
    route = next(r for r in fake.routes if r.method == "GET" and r.template == run_jobs.EXECUTIONS)
    listed = route.handler

    def then_ends(req):
        answer = listed(req)
        route.handler = listed
        fake.run_jobs.finish(execution_id)
        return answer

    route.handler = then_ends


def test_a_migration_seen_running_by_the_rerun_and_ending_before_it_would_start_one_is_not_run_again(
    fake, double, tmp_path  # noqa: F811
):
    """The rerun sees the interrupted run's execution running, then it ends before the job would be run: it is
    that migration's result the rerun takes (CI saw a second execution when the timing fell so)."""
    fake.latency["run.execution"] = 600.0
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    kill_when(start("up", "--yes"), STAGES["while the migration runs"], signal.SIGINT)
    job = f"{service(fake)['name'].rsplit('/', 1)[-1]}-migrate"
    [running] = fake.run_jobs.executions(job)
    ends_after_the_next_look(fake, running["name"].rsplit("/", 1)[-1])
    fake.latency["run.execution"] = 0.0  # a second execution would end at once
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    assert len(fake.run_jobs.executions(job)) == 1


@pytest.mark.parametrize("stage", ROLLBACK_STAGES)
def test_rollback_interrupted_then_rerun_finishes_it(fake, double, tmp_path, stage):  # noqa: F811
    fake.latency["sqladmin.restore"] = 0.5
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    printed = kill_when(start("up", "--yes"), ROLLBACK_STAGES[stage], signal.SIGINT)
    assert re.search(ROLLBACK_STAGES[stage], printed), printed
    # Never serving a half-migrated schema: in maintenance until the backup is back, then the previous image.
    if "MLFLOW_GCP_MAINTENANCE" not in env_names(fake):
        assert fake.sql_data[INSTANCE] == DATA and version_of(fake) == OLD
    assert_rolled_back(fake, double, cli("up", "--yes"))


def test_the_lists_cover_every_mutating_method_of_an_upgrade(fake, double, tmp_path):  # noqa: F811
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert {m for m in sent(fake) if m[0] in ("run", "sqladmin")} == set(UPGRADE_METHODS)


@pytest.mark.parametrize("how", ["503", "reset"])
@pytest.mark.parametrize("api,method,route", UPGRADE_METHODS, ids=lambda v: v)
def test_upgrade_converges_when_an_answer_is_lost(fake, double, tmp_path, api, method, route, how):  # noqa: F811
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    # The service is patched twice (maintenance, then serving): both answers lost.
    lost = fake.lose_answer(how, api=api, method=method, route=route, times=2 if route == SERVICE_PATCH[2] else 1)
    result = cli("up", "--yes")
    if result.exit_code != 0:  # an answer lost is said as an error at worst: the rerun converges
        result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    assert_upgraded(fake, double)
    assert upgrade_backups() == [f"mlflow-gcp: before the upgrade of MLflow {OLD} to {NEW}"]
    assert len(positions(fake)["job-run"]) >= 1


@pytest.mark.parametrize("how", ["503", "reset"])
@pytest.mark.parametrize("api,method,route", [RESTORE, SERVICE_PATCH], ids=lambda v: v)
def test_rollback_converges_when_an_answer_is_lost(fake, double, tmp_path, api, method, route, how):  # noqa: F811
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    lost = fake.lose_answer(how, api=api, method=method, route=route, times=2 if route == SERVICE_PATCH[2] else 1)
    result = cli("up", "--yes")
    assert lost.times == 0
    assert_rolled_back(fake, double, result)
