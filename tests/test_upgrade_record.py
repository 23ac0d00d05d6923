"""The MLflow version whose schema the Cloud SQL instance holds, recorded on the instance as the label
`mlflow-gcp-mlflow-version` (issue 24): it survives `down`, which deletes the service and its annotation, so the
next `up` knows what the kept data is. The same MLflow deploys at once; an older one is refused before any change;
an instance with no record (a hand setup) is migrated as a schema of an unknown MLflow, as before. With a service,
a record newer than the image is refused up front, before the maintenance and the backup."""

from __future__ import annotations

import datetime as dt
import time

from tests.helpers import cli, refused_with_yes_and_dry_run
from tests.test_upgrade import (
    DATA,
    INSTANCE,
    NEW,
    OLD,
    PLAN_LINE,
    assert_upgraded,
    double,  # noqa: F401 (fixture)
    fails_halfway,
    migrates,
    pin,
    positions,
    result_line,
    version_of,
)

LABEL = "mlflow-gcp-mlflow-version"


def recorded(fake, instance: str = INSTANCE) -> str | None:
    return (fake.sql_instances[instance]["settings"].get("userLabels") or {}).get(LABEL)


def test_the_record_follows_the_schema_through_deploy_upgrade_and_roll_back(fake, double, tmp_path):  # noqa: F811
    assert recorded(fake) == "3_17_2"  # the first deploy made fresh schemas of its MLflow
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code != 0
    assert recorded(fake) == "3_17_2" and fake.sql_data[INSTANCE] == DATA  # the backup restored: the old schema
    fake.run_jobs.outcome = migrates(fake)
    assert cli("up", "--yes").exit_code == 0
    assert recorded(fake) == "3_18_0"
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


def test_up_after_down_with_the_same_mlflow_deploys_without_migrating(fake, double):  # noqa: F811
    assert cli("down", "--yes").exit_code == 0
    fake.clear_log()
    plan = cli("up", "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "→" not in plan.output and "migration" not in plan.output
    result = cli("up")
    assert result.exit_code == 0, result.output
    at = positions(fake)
    assert "backup" not in at and "job-run" not in at and "job" not in at
    assert version_of(fake) == OLD and fake.sql_data[INSTANCE] == DATA
    assert double.answer("/health", None)[0] == 200


def test_up_after_down_with_a_newer_mlflow_upgrades_from_the_recorded_one(fake, double, tmp_path):  # noqa: F811
    assert cli("down", "--yes").exit_code == 0
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert PLAN_LINE in " ".join(cli("up", "--dry-run").output.split())
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    assert recorded(fake) == "3_18_0"


def test_up_after_down_with_an_older_mlflow_is_refused_before_any_change(fake, double, tmp_path):  # noqa: F811
    assert cli("backup", "--why", "test").exit_code == 0
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert cli("down", "--yes").exit_code == 0
    fake.clear_log()
    pin(tmp_path, OLD)
    expected = f"{INSTANCE} hold the schema of MLflow {NEW} (recorded on the instance), newer than the MLflow {OLD}"
    for said in refused_with_yes_and_dry_run(fake, "up"):
        assert expected in said
        assert f"--mlflow-version {NEW}" in said and "the newest successful one is" in said
        assert "Traceback" not in said
    assert fake.run_service("mlflow") is None


def test_an_instance_with_no_record_is_migrated_as_a_schema_of_unknown_mlflow(fake, double, tmp_path):  # noqa: F811
    """A hand setup's instance, or one of an earlier mlflow-gcp: as before the record, backup and migration."""
    assert cli("down", "--yes").exit_code == 0
    fake.sql_instances[INSTANCE]["settings"]["userLabels"].pop(LABEL)
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert f"MLflow unknown → {NEW}" in " ".join(cli("up", "--dry-run").output.split())
    result = cli("up")
    assert result.exit_code == 0, result.output
    at = positions(fake)
    assert at["backup"][0] < at["job-run"][0]
    assert_upgraded(fake, double)
    assert recorded(fake) == "3_18_0"


def test_going_back_during_an_unfinished_upgrade_is_refused_up_front(fake, double, tmp_path):  # noqa: F811
    """The migration succeeded, the serving revision did not come (the run stopped): the database holds the new
    schema while the service, in maintenance, still records the old MLflow. Going back to the old image is refused
    before anything, not found by a second backup and migration job; `up` with the new one finishes the upgrade."""

    def migrates_then_the_rollout_fails(job, execution):
        fake.fail(400, api="run", method="PATCH", path_contains="/services/mlflow", message="Injected: refused.")
        return migrates(fake)(job, execution)

    fake.run_jobs.outcome = migrates_then_the_rollout_fails
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code != 0
    assert recorded(fake) == "3_18_0" and fake.sql_data[INSTANCE]["schema"] == NEW
    fake.clear_log()
    for said in refused_with_yes_and_dry_run(fake, "up", "--mlflow-version", OLD):
        assert f"hold the schema of MLflow {NEW}" in said and f"--mlflow-version {NEW}" in said
    fake.run_jobs.outcome = migrates(fake)
    result = cli("up", "--mlflow-version", NEW, "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    assert len(fake.run_jobs.executions("mlflow-migrate")) == 1


def test_a_restore_to_a_time_before_the_upgrade_does_not_carry_the_newer_record(fake, double, tmp_path):  # noqa: F811
    """A point-in-time clone carries its source's labels as they are NOW (3.18.0) while its data is as it was
    before the upgrade (3.17.2): the restore marks it unknown until the move's migration records the version. Here
    the move fails before that migration (mlflow-env's new version refused): the clone must not say 3.18.0."""
    time.sleep(0.01)
    when = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    new = f"{INSTANCE}-restore-t{when.strftime('%Y%m%d-%H%M%S')}"
    fake.fail(400, api="secretmanager", method="POST", path_contains="mlflow-env:addVersion")
    result = cli("restore", "--to-time", stamp, "--mlflow-version", OLD, "--yes")
    assert result.exit_code != 0
    assert fake.sql_data[new] == DATA  # the data as it was under MLflow 3.17.2
    assert recorded(fake, new) == "unknown"
    assert recorded(fake) == "3_18_0"  # the previous instance, untouched
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    again = cli("restore", "--to-time", stamp, "--mlflow-version", OLD, "--yes")
    assert again.exit_code == 0, again.output
    assert recorded(fake, new) == "3_17_2" and version_of(fake) == OLD
