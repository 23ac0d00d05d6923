"""`restore` and `backup` killed at every stage, then run again (issue 23): at the kill and after, the server never
points at an instance that is not ready (running, holding the restored data once it is the new one), the rerun
converges on one new instance, and no instance or backup is ever deleted."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import cli
from tests.test_backups import (
    OLD,
    assert_serving_from,
    nothing_deleted,
    recorded_instance,
    server_instance,
    take_backup,
)
from tests.test_resume import kill_when

BEFORE, AFTER = {"runs": ["a", "b"]}, {"runs": ["a", "c"]}

# A line `restore` prints right after each stage (the live view's lines, and its own on stderr): killed there, the
# next stage never starts.
STAGES_BY_ID = {
    "while the new instance is created": r"database: creating",
    "new instance ready": r"restore: the Cloud SQL instance .* is ready",
    "backup restored, not labelled": r"restore: backup \d+ of .* restored into",
    "labelled": r"restore: .* holds backup",
    "password set": r"restore: the MySQL user root of",
    "mlflow-env version added": r"^secrets\s+updated",
    "revision rolled out, not recorded": r"^deploy\s+updated",
    "recorded": r"restore: the server runs on",
}
STAGES_BY_TIME = {
    "while the clone is made": r"new-instance: cloning",
    "clone ready": r"restore: the Cloud SQL instance .* is ready",
    "labelled": r"restore: .* holds the state at",
    "password set": r"restore: the MySQL user root of",
    "revision rolled out, not recorded": r"^deploy\s+updated",
    "recorded": r"restore: the server runs on",
}


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow_gcp", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def assert_server_on_a_ready_instance(fake, double, new: str, restored: dict) -> None:
    """The server's database is the old instance, or the new one once it runs and holds the restored data."""
    instance = server_instance(double)
    assert instance in (OLD, new), instance
    assert fake.sql_instances[instance]["state"] == "RUNNABLE"
    if instance == new:
        assert fake.sql_data[new] == restored
    assert double.database_ok()


def converges(fake, double, args: tuple[str, ...], new: str, restored: dict) -> None:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert_serving_from(fake, double, new)
    assert recorded_instance(fake) == new
    assert fake.sql_data[new] == restored
    assert fake.sql_data[OLD] == AFTER  # the previous instance: untouched
    assert sorted(fake.sql_instances) == sorted([OLD, new])
    nothing_deleted(fake)
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


@pytest.mark.parametrize(
    "stage,sig",
    [(stage, signal.SIGKILL) for stage in STAGES_BY_ID] + [("labelled", signal.SIGINT)],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_restore_by_id_killed_at_any_stage_then_rerun(fake, double, stage, sig):
    fake.latency["sqladmin.create"] = 0.5  # the instance is made while the kill can land
    fake.sql_set_data(OLD, BEFORE)
    backup = take_backup()
    fake.sql_set_data(OLD, AFTER)
    new = f"{OLD}-restore-b{backup['id']}"
    process = start("restore", backup["id"], "--yes")
    printed = kill_when(process, STAGES_BY_ID[stage], sig)
    assert re.search(STAGES_BY_ID[stage], printed, re.MULTILINE), printed
    assert_server_on_a_ready_instance(fake, double, new, BEFORE)
    nothing_deleted(fake)
    converges(fake, double, ("restore", backup["id"], "--yes"), new, BEFORE)


@pytest.mark.parametrize(
    "stage,sig",
    [(stage, signal.SIGKILL) for stage in STAGES_BY_TIME] + [("password set", signal.SIGINT)],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_restore_to_a_time_killed_at_any_stage_then_rerun(fake, double, stage, sig):
    fake.latency["sqladmin.create"] = 0.5
    fake.sql_set_data(OLD, BEFORE)
    time.sleep(0.01)
    when = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    fake.sql_set_data(OLD, AFTER)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    new = f"{OLD}-restore-t{when.strftime('%Y%m%d-%H%M%S')}"
    process = start("restore", "--to-time", stamp, "--yes")
    printed = kill_when(process, STAGES_BY_TIME[stage], sig)
    assert re.search(STAGES_BY_TIME[stage], printed, re.MULTILINE), printed
    assert_server_on_a_ready_instance(fake, double, new, BEFORE)
    nothing_deleted(fake)
    converges(fake, double, ("restore", "--to-time", stamp, "--yes"), new, BEFORE)


def test_a_clone_that_fails_after_an_interruption_is_made_again_never_replaced_by_an_empty_instance(fake, double):
    """Killed while Google clones; the clone then fails on Google's side and the name is free again. The rerun
    clones again: the database step must not find the name free and make an empty instance."""
    fake.latency["sqladmin.create"] = 1.0
    fake.sql_set_data(OLD, BEFORE)
    time.sleep(0.01)
    when = dt.datetime.now(dt.timezone.utc)
    fake.sql_set_data(OLD, AFTER)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    new = f"{OLD}-restore-t{when.strftime('%Y%m%d-%H%M%S')}"
    fake.sql_fail_next("sqladmin.create", "Internal error while cloning.")
    process = start("restore", "--to-time", stamp, "--yes")
    deadline = time.monotonic() + 120
    while new not in fake.sql_instances and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.sql_instances[new]["state"] == "PENDING_CREATE"
    process.kill()
    process.wait(timeout=60)
    while new in fake.sql_instances and time.monotonic() < deadline:  # Google's clone fails meanwhile
        time.sleep(0.1)
        fake.tick()
    assert new not in fake.sql_instances
    converges(fake, double, ("restore", "--to-time", stamp, "--yes"), new, BEFORE)


def test_backup_killed_while_it_runs_then_run_again(fake, double):
    fake.latency["sqladmin.backup"] = 1.0
    process = start("backup", "--why", "before an upgrade")
    printed = kill_when(process, r"backup \d+ of .* started", signal.SIGKILL)
    assert "started" in printed
    result = cli("backup", "--why", "before an upgrade")
    assert result.exit_code == 0, result.output
    runs = fake.sql_backup_runs[OLD]
    assert len(runs) == 2 and all(r["status"] == "SUCCESSFUL" for r in runs)
    listed = cli("backup", "list")
    assert listed.exit_code == 0
    nothing_deleted(fake)
