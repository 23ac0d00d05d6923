"""Exactly once for `backup` and `restore` (issue 23): every mutating method each sends, applied by Google with its
answer lost (a 503 or a reset connection after the commit; tests/fake_gcp/server.py LostAnswer). The command
succeeds, one backup is taken (not two), one new instance holds the restored data, the server runs on it with the
password its database has, the previous instance is untouched, and nothing is deleted."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from tests.helpers import cli
from tests.test_backups import OLD, assert_serving_from, nothing_deleted, recorded_instance, take_backup
from tests.test_lost_answers import sent
from tests.test_restore_interrupted import AFTER, BEFORE

BACKUP_METHODS = [("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/backupRuns")]
# What `restore BACKUP_ID` sends on a deployment made by `up` ...
RESTORE_METHODS = [
    ("sqladmin", "POST", "/v1/projects/{project}/instances"),
    ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/databases"),
    ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/restoreBackup"),
    ("sqladmin", "PATCH", "/v1/projects/{project}/instances/{instance}"),
    ("sqladmin", "PUT", "/v1/projects/{project}/instances/{instance}/users"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}:addVersion"),
    ("run", "PATCH", "/v2/projects/{project}/locations/{location}/services/{service}"),
]
# ... and `restore --to-time TIME` (a clone instead of an insert, a restore and the databases).
CLONE = ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/clone")
TIME_METHODS = [
    CLONE,
    *(m for m in RESTORE_METHODS if "restoreBackup" not in m[2] and not m[2].endswith(("instances", "databases"))),
]


def prepare_time(fake) -> tuple[str, str]:
    fake.sql_set_data(OLD, BEFORE)
    time.sleep(0.01)
    when = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    fake.sql_set_data(OLD, AFTER)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), f"{OLD}-restore-t{when.strftime('%Y%m%d-%H%M%S')}"


def prepare_id(fake) -> tuple[str, str]:
    fake.sql_set_data(OLD, BEFORE)
    backup = take_backup()
    fake.sql_set_data(OLD, AFTER)
    fake.clear_log()
    return backup["id"], f"{OLD}-restore-b{backup['id']}"


def assert_restored_once(fake, double, new: str) -> None:
    assert_serving_from(fake, double, new)
    assert recorded_instance(fake) == new
    assert fake.sql_data[new] == BEFORE
    assert fake.sql_data[OLD] == AFTER
    assert sorted(fake.sql_instances) == sorted([OLD, new])
    nothing_deleted(fake)


def test_the_lists_cover_every_mutating_method_backup_and_restore_send(fake, double):
    take_backup()
    assert sent(fake) == set(BACKUP_METHODS)
    backup_id, _ = prepare_id(fake)
    assert cli("restore", backup_id, "--yes").exit_code == 0
    assert sent(fake) == set(RESTORE_METHODS)  # addVersion: mlflow-env and the settings record
    stamp, _ = prepare_time(fake)
    fake.clear_log()
    assert cli("restore", "--to-time", stamp, "--yes").exit_code == 0
    assert sent(fake) == set(TIME_METHODS)


@pytest.mark.parametrize("how", ["503", "reset"])
def test_backup_is_taken_once_when_its_answer_is_lost(fake, double, how):
    lost = fake.lose_answer(how, api="sqladmin", method="POST", route=BACKUP_METHODS[0][2])
    result = take_backup()
    assert lost.times == 0
    assert result["status"] == "SUCCESSFUL"
    assert len(fake.sql_backup_runs[OLD]) == 1


# A reset connection is tried on the methods of restore's own stages; up's steps are proven with both elsewhere
# (tests/test_lost_answers.py).
RESTORE_CASES = [(*m, "503") for m in RESTORE_METHODS] + [
    (*RESTORE_METHODS[2], "reset"),
    (*RESTORE_METHODS[4], "reset"),
]
TIME_CASES = [(*m, "503") for m in TIME_METHODS] + [(*CLONE, "reset")]


@pytest.mark.parametrize("api,method,route,how", RESTORE_CASES, ids=lambda v: v)
def test_restore_by_id_converges_when_an_answer_is_lost(fake, double, api, method, route, how):
    backup_id, new = prepare_id(fake)
    lost = fake.lose_answer(how, api=api, method=method, route=route)
    result = cli("restore", backup_id, "--yes")
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    assert_restored_once(fake, double, new)
    restores = [
        r for r in fake.requests(api="sqladmin") if r.route.endswith("restoreBackup") and (r.status < 400 or r.lost)
    ]
    assert len(restores) == 1, "the backup was restored twice"
    fake.clear_log()
    assert cli("up").exit_code == 0
    assert fake.mutating_requests() == []


@pytest.mark.parametrize("api,method,route,how", TIME_CASES, ids=lambda v: v)
def test_restore_to_a_time_converges_when_an_answer_is_lost(fake, double, api, method, route, how):
    stamp, new = prepare_time(fake)
    fake.clear_log()
    lost = fake.lose_answer(how, api=api, method=method, route=route)
    result = cli("restore", "--to-time", stamp, "--yes")
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    assert_restored_once(fake, double, new)
    assert json.loads(cli("backup", "list", "--json").stdout)["instance"] == new
