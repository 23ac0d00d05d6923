"""`backup`, `backup list` and `restore` against the fake (issue 23): an on-demand backup waited for, the list with
the point-in-time window, and restores by id and by time into a NEW instance the server moves onto, the previous
instance kept untouched."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from mlflow_gcp.config import SECRET_MYSQL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat

OLD = "mlflow-tracking-database"


def take_backup(why: str = "taken by hand") -> dict:
    result = cli("backup", "--why", why, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def server_instance(double) -> str | None:
    double.sync()
    return double.database_instance()


def recorded_instance(fake) -> str:
    versions = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/mlflow-gcp-settings"]
    return json.loads(versions[-1]["data"])["settings"]["db_instance"]


def assert_serving_from(fake, double, instance: str) -> None:
    """The running revision connects to `instance`, which runs, with the password of the secret it pins."""
    assert server_instance(double) == instance
    assert fake.sql_instances[instance]["state"] == "RUNNABLE"
    assert double.database_ok()
    login = json.loads(cli("credentials", "--format", "json").stdout)
    from tests.server_double import api_login

    assert (
        api_login(login["MLFLOW_TRACKING_URI"], login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"])
        == 200
    )


def nothing_deleted(fake) -> None:
    deletes = [r for r in fake.requests(api="sqladmin") if r.method == "DELETE"]
    assert deletes == [], deletes


# -- backup ---------------------------------------------------------------------------------------------------
def test_backup_is_taken_waited_for_and_listed(fake, double):
    fake.latency["sqladmin.backup"] = 0.3  # a backup takes a while: the command waits for it
    fake.sql_automated_backup(OLD)
    result = cli("backup", "--why", "before an upgrade")
    assert result.exit_code == 0, result.output
    runs = fake.sql_backup_runs[OLD]
    assert runs[0]["status"] == "SUCCESSFUL" and runs[0]["type"] == "ON_DEMAND"
    assert runs[0]["description"].startswith("mlflow-gcp: before an upgrade")
    assert f"Backup {runs[0]['id']}" in flat(result.stdout)
    listed = cli("backup", "list", "--json")
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert [b["kind"] for b in document["backups"]] == ["ON_DEMAND", "AUTOMATED"]
    assert document["newest_successful"]["id"] == runs[0]["id"]
    assert document["warning"] is None
    window = document["point_in_time_window"]
    assert window["earliest"] and window["latest"] and window["earliest"] < window["latest"]
    text = flat(cli("backup", "list").stdout)
    assert "on demand" in text and "automated" in text and "Point-in-time window:" in text


def test_a_failed_backup_is_an_error_that_says_so(fake, double):
    fake.sql_fail_next("sqladmin.backup", "Backup failed: disk error.")
    result = cli("backup")
    assert result.exit_code == 1
    assert "ended FAILED: Backup failed: disk error." in flat(result.stderr)
    listed = json.loads(cli("backup", "list", "--json").stdout)
    assert listed["warning"] == "no successful backup"


def test_backup_waits_for_an_operation_in_progress(fake, double):
    fake.sql_busy[OLD] = "someone-elses-operation"

    def free():
        fake.sql_busy.pop(OLD, None)

    fake.latency["sqladmin.maintenance"] = 0.3
    fake.after("sqladmin.maintenance", free)
    assert take_backup()["status"] == "SUCCESSFUL"
    assert len(fake.sql_backup_runs[OLD]) == 1


# -- restore by id ------------------------------------------------------------------------------------------------
def test_restore_by_id_moves_the_server_to_a_new_instance_and_keeps_the_old_one(fake, double):
    fake.sql_set_data(OLD, {"runs": ["a", "b"]})
    backup = take_backup()
    fake.sql_set_data(OLD, {"runs": ["a"]})  # run b deleted by mistake, and then
    fake.sql_set_data(OLD, {"runs": ["a", "c"]})  # run c logged after the backup
    fake.clear_log()
    dry = cli("restore", backup["id"], "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert fake.mutating_requests() == []
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    new = f"{OLD}-restore-b{backup['id']}"
    assert new in fake.sql_instances
    assert fake.sql_data[new] == {"runs": ["a", "b"]}  # the deleted run is back
    assert fake.sql_data[OLD] == {"runs": ["a", "c"]}  # and what came after is in the old instance, untouched
    assert_serving_from(fake, double, new)
    assert recorded_instance(fake) == new
    settings = fake.sql_instances[new]["settings"]
    assert settings["deletionProtectionEnabled"] is True
    assert settings["ipConfiguration"]["ipv4Enabled"] is False
    assert settings["backupConfiguration"]["binaryLogEnabled"] is True
    assert settings["ipConfiguration"]["sslMode"] == fake.sql_instances[OLD]["settings"]["ipConfiguration"]["sslMode"]
    text = flat(result.stdout)
    assert f"gcloud sql instances delete {OLD}" in text and "a month" in text
    nothing_deleted(fake)
    # From now on the new instance is THE instance: up changes nothing, status reads it, backups are its own.
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []
    status = cli("status", "--json")
    assert new in status.stdout
    rerun = cli("restore", backup["id"], "--yes")
    assert rerun.exit_code == 0, rerun.output
    assert "already holds" in flat(rerun.stdout)
    down = flat(cli("down", "--delete-data", "--dry-run").stdout)
    plan, _, left_behind = down.partition("Left behind by earlier settings")
    assert new in plan and f"instance {OLD} " not in f"{plan} "
    # The previous instance is named as left behind (issue 20), never deleted by `down`.
    assert f"left behind (keeps billing) Cloud SQL instance {OLD} " in left_behind


def test_restore_sets_the_password_the_secret_holds(fake, double):
    backup = take_backup()
    # A rotation after the backup: the backup holds the old MySQL password.
    rotated = cli("credentials", "rotate", "--database")
    assert rotated.exit_code == 0, rotated.output
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 0, result.output
    new = f"{OLD}-restore-b{backup['id']}"
    assert_serving_from(fake, double, new)
    assert double.mysql[1] == next(u["password"] for u in fake.sql_users[new] if u["name"] == "root")
    assert double.mysql[0] == "root" and SECRET_MYSQL


def test_an_unknown_or_failed_backup_is_refused_before_anything_changes(fake, double):
    result = cli("restore", "42", "--yes")
    assert result.exit_code == 1
    assert "has no backup 42" in flat(result.stderr)
    fake.sql_automated_backup(OLD, failed="disk full")
    fake.clear_log()
    failed = fake.sql_backup_runs[OLD][0]["id"]
    result = cli("restore", failed, "--yes")
    assert result.exit_code == 1
    assert "is FAILED" in flat(result.stderr)
    assert fake.mutating_requests() == []


def test_restore_needs_yes_without_a_terminal(fake, double):
    result = cli("restore", "1")
    assert result.exit_code == 2
    assert "--yes" in flat(result.stderr)
    assert fake.requests() == []


# -- restore by time ----------------------------------------------------------------------------------------------
def test_restore_to_a_time_clones_and_moves(fake, double):
    fake.sql_set_data(OLD, {"runs": ["a", "b"]})
    time.sleep(0.01)
    when = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    fake.sql_set_data(OLD, {"runs": ["a"]})
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    result = cli("restore", "--to-time", stamp, "--yes")
    assert result.exit_code == 0, result.output
    new = f"{OLD}-restore-t{when.strftime('%Y%m%d-%H%M%S')}"
    assert fake.sql_data[new] == {"runs": ["a", "b"]}
    assert fake.sql_data[OLD] == {"runs": ["a"]}
    assert_serving_from(fake, double, new)
    assert recorded_instance(fake) == new
    assert fake.sql_instances[new]["settings"]["deletionProtectionEnabled"] is True
    nothing_deleted(fake)


@pytest.mark.parametrize("when", ["2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"])
def test_a_time_outside_the_window_is_refused_before_anything_changes(fake, double, when):
    result = cli("restore", "--to-time", when, "--yes")
    assert result.exit_code == 1
    assert "outside the point-in-time window" in flat(result.stderr)
    assert fake.mutating_requests() == []


def test_the_fake_refuses_a_clone_outside_the_window(fake, double):
    """What the tool checks first, Google checks too (400): the fake's clone refuses it on its own."""
    from googleapiclient.errors import HttpError

    from mlflow_gcp.gcp.clients import Clients

    api = Clients(PROJECT).sqladmin()
    body = {"cloneContext": {"destinationInstanceName": "x-clone", "pointInTime": "2020-01-01T00:00:00Z"}}
    with pytest.raises(HttpError) as caught:
        api.instances().clone(project=PROJECT, instance=OLD, body=body).execute()
    assert caught.value.resp.status == 400
    assert "x-clone" not in fake.sql_instances


def test_a_time_without_a_zone_is_a_setting_error(fake):
    result = cli("restore", "--to-time", "2026-12-07T18:30:00", "--yes")
    assert result.exit_code == 2
    assert "no time zone" in flat(result.stderr)


# -- the artifact bucket's soft delete ----------------------------------------------------------------------------
def test_bucket_soft_delete_is_a_setting_shown_in_status(fake, double):
    name = f"{PROJECT}-mlflow-artifacts"
    bucket = fake.bucket(name)
    assert bucket["softDeletePolicy"]["retentionDurationSeconds"] == str(7 * 86400)  # Google's default, kept
    assert "soft delete: 7 d" in flat(cli("status", "--wide").stdout)
    result = cli("up", "--bucket-soft-delete-days", "30")
    assert result.exit_code == 0, result.output
    assert fake.bucket(name)["softDeletePolicy"]["retentionDurationSeconds"] == str(30 * 86400)
    fake.clear_log()
    assert cli("up").exit_code == 0  # remembered
    assert fake.mutating_requests() == []
    bad = cli("up", "--bucket-soft-delete-days", "3")
    assert bad.exit_code == 2
    assert "7 to 90" in flat(bad.stderr)


def test_status_shows_the_newest_backup_its_age_and_the_window(fake, double):
    text = flat(cli("status").stdout)
    assert "newest backup none: take one with `mlflow-gcp backup`" in text
    assert "point in time" in text
    fake.sql_automated_backup(OLD)
    fake.sql_backup_runs[OLD][0]["endTime"] = "2020-01-01T00:00:00.000Z"  # long ago
    document = json.loads(cli("status", "--json").stdout)["backups"]
    assert document["warning"].startswith("the newest successful backup is") and "more than 36 h" in document["warning"]
    backup = take_backup()
    document = json.loads(cli("status", "--json").stdout)["backups"]
    assert document["newest_successful"]["id"] == backup["id"]
    assert document["warning"] is None and document["age_hours"] < 1
    assert document["point_in_time_window"]["earliest"]
    result = cli("status")
    assert result.exit_code == 0  # a missing backup is a warning, not a broken deployment
    assert f"({'on demand'}, {backup['id']})" in flat(result.stdout)


# -- failures put the server back -----------------------------------------------------------------------------------
def test_a_failed_rollout_puts_the_server_back_on_the_previous_instance(fake, double):
    backup = take_backup()
    new = f"{OLD}-restore-b{backup['id']}"
    # Cloud Run refuses the new revision once (a quota, a policy...): the move fails halfway, after mlflow-env.
    fake.fail(400, api="run", method="PATCH", message="Revision refused.")
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 1
    text = flat(result.stderr)
    assert f"The server runs on {OLD} again (checked with a logged-in call)" in text, text
    assert f"The new instance {new} is kept" in text
    assert_serving_from(fake, double, OLD)
    assert recorded_instance(fake) == OLD
    assert new in fake.sql_instances
    nothing_deleted(fake)
    again = cli("restore", backup["id"], "--yes")
    assert again.exit_code == 0, again.output
    assert_serving_from(fake, double, new)


def test_a_new_instance_that_stops_answering_during_the_move_is_left_and_the_server_goes_back(fake, double):
    backup = take_backup()
    new = f"{OLD}-restore-b{backup['id']}"
    wrapped = fake.after
    broken = []

    def after(kind, action):
        if kind.startswith("run.") and not broken and new in fake.sql_instances:
            broken.append(kind)
            fake.sql_instances[new]["state"] = "STOPPED"  # the new revision cannot reach its database
        return wrapped(kind, action)

    fake.after = after
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 1
    assert f"The server runs on {OLD} again" in flat(result.stderr)
    assert_serving_from(fake, double, OLD)
    assert recorded_instance(fake) == OLD
    nothing_deleted(fake)


def test_a_failure_before_the_move_leaves_the_server_where_it_was(fake, double):
    backup = take_backup()
    fake.fail(403, api="sqladmin", method="PUT", message="The caller may not set passwords.")
    result = cli("restore", backup["id"], "--yes")
    assert result.exit_code == 1
    assert_serving_from(fake, double, OLD)
    assert recorded_instance(fake) == OLD
    nothing_deleted(fake)
    assert cli("restore", backup["id"], "--yes").exit_code == 0
