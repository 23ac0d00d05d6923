"""The way back after an upgrade (`restore BACKUP --mlflow-version OLD`) killed with SIGKILL at each stage (no
shield, no clean-up: a lost laptop, a killed CI job), the put-back of a failed move included, then what a user runs
next: `status`, the same restore again, `up`. After the kill and after each command, the server runs an MLflow
whose schema its database holds (the newer MLflow on the upgraded instance, or the older one on the restored
instance: never the older MLflow on the migrated schema), with a password its database has; `status` says 0 only
when that is so and the record names it; no instance is deleted and no secret version destroyed. Same deployment
as tests/test_upgrade.py; the Ctrl-C and lost-answer cases are in tests/test_restore_wayback.py."""

from __future__ import annotations

import json
import signal

import pytest

from mlflow_gcp.operate.login import db_host
from mlflow_gcp.operate.restore_plan import private_ip
from tests import test_upgrade
from tests.fake_gcp.server import ApiError
from tests.helpers import cli
from tests.test_backups import nothing_deleted, recorded_instance
from tests.test_restore_interrupted import start
from tests.test_restore_wayback import latest_env, upgraded
from tests.test_resume import kill_when
from tests.test_upgrade import DATA, INSTANCE, NEW, OLD, result_line, version_of

double = test_upgrade.double  # the fixture: a deployment of MLflow OLD, its database filled

# Where the command is killed: once a `line` is printed (with `latency` keeping the stage going meanwhile), or, where
# the next stage follows at once, when a request arrives (in the fake or at the server), so that the command is
# where the stage says: a `request` (api, method, path end, which one of the run) is killed before Google applies
# it; at a `rollout` (which one) after Google took the update; at the `check`, the first call to the server after
# `after_record` (the record names that instance) or after the put-back was sent.
SETTINGS_RECORD = ("secretmanager", "POST", "/secrets/mlflow-gcp-settings:addVersion")
BEFORE_THE_CHECK = {
    "while the new instance is created": {"line": r"database: creating", "latency": {"sqladmin.create": 0.5}},
    "backup restored, not labelled": {"line": r"restore: backup \d+ of .* restored into"},
    "mlflow-env version added": {"line": r"^secrets\s+updated"},
    "while the restored data's migration runs": {
        "line": r"deploy: upgrade: migration \S+ of the job",
        "latency": {"run.execution": 0.5},
    },
    "while the older revision rolls out": {"rollout": 1, "latency": {"run.deploy": 0.5}},
    "older revision rolled out, not recorded": {"request": (*SETTINGS_RECORD, 1)},
    "recorded, not checked": {"check": "new"},
}
# The move's check fails (the restored instance stops once the older revision is out): the put-back sends the second
# mlflow-env version and the second settings record of the run (the move sent the first ones), then the second
# update of the service (the first rolled out the older image), then checks the server.
PUT_BACK = {
    "check failed, put-back not started": {"request": ("secretmanager", "POST", "/secrets/mlflow-env:addVersion", 2)},
    "mlflow-env put back": {"request": (*SETTINGS_RECORD, 2)},
    "record put back, the service not sent": {"request": ("run", "PATCH", "/services/mlflow", 2)},
    "while the put-back rolls out": {"rollout": 2, "latency": {"run.deploy": 1.0}},
    "put back, not checked": {"check": "put back"},
}
PUT_BACK_STAGES = list(PUT_BACK)

def served(fake, double) -> tuple[str | None, str | None]:
    """(the MLflow the serving revision runs, the instance it connects to, whatever its state)."""
    double.sync()
    host = double.db_host
    instance = next((name for name, found in fake.sql_instances.items() if host and private_ip(found) == host), None)
    return double.mlflow_version, instance


def assert_nothing_lost(fake, new: str) -> None:
    nothing_deleted(fake)
    assert INSTANCE in fake.sql_instances
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}  # the upgraded instance: untouched
    if new in fake.sql_instances and new in fake.sql_data:
        assert fake.sql_data[new].get("runs") == DATA["runs"]
    for secret, versions in fake.state["secret_versions"].items():
        assert all(v["state"] == "ENABLED" for v in versions), (secret, [v["state"] for v in versions])


def assert_consistent(fake, double, new: str) -> tuple[str | None, str | None]:
    """The serving revision's MLflow is the schema of the instance it uses, whose user has its password."""
    version, instance = served(fake, double)
    assert (version, instance) in ((NEW, INSTANCE), (OLD, new)), (version, instance)
    assert fake.sql_data[instance]["schema"] == version
    users = fake.sql_users.get(instance, [])
    assert double.mysql and any(u["name"] == double.mysql[0] and u.get("password") == double.mysql[1] for u in users)
    assert_nothing_lost(fake, new)
    return version, instance


def assert_status_tells_the_truth(fake, double, new: str) -> int:
    """`status` exits 0 only when the server is healthy on a running instance the record names, at the recorded
    MLflow; its MLflow line says what the server runs."""
    result = cli("status", "--json")
    document = json.loads(result.stdout)
    version, instance = served(fake, double)
    healthy = (
        instance is not None
        and fake.sql_instances[instance]["state"] == "RUNNABLE"
        and recorded_instance(fake) == instance
        and version_of(fake) == version
        and double.answer("/health", None)[0] == 200
    )
    assert result.exit_code != 0 or healthy, (version, instance, recorded_instance(fake), document["problems"])
    if document.get("mlflow"):
        assert document["mlflow"]["running"] in (version, None), document["mlflow"]
    return result.exit_code


def converged_on_the_restored_instance(fake, double, new: str) -> None:
    assert served(fake, double) == (OLD, new)
    assert fake.sql_instances[new]["state"] == "RUNNABLE"
    assert double.database_ok() and double.answer("/health", None)[0] == 200
    assert recorded_instance(fake) == new and version_of(fake) == OLD
    assert sorted(fake.sql_instances) == sorted([INSTANCE, new])
    assert_nothing_lost(fake, new)
    assert assert_status_tells_the_truth(fake, double, new) == 0
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


def rerun_the_restore(fake, double, backup: dict) -> None:
    new = f"{INSTANCE}-restore-b{backup['id']}"
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    assert result.exit_code == 0, result.output
    converged_on_the_restored_instance(fake, double, new)


class KillOnRequest:
    """Kills the command when it sends the `nth` request matching, before Google applies it (as `fake.chaos`)."""

    def __init__(self, process_of, api: str, method: str, path_end: str, nth: int) -> None:
        self.process_of, self.api, self.method, self.path_end, self.left = process_of, api, method, path_end, nth

    def before(self, api: str, method: str, path: str) -> None:
        if (api, method) == (self.api, self.method) and path.endswith(self.path_end):
            self.left -= 1
            if self.left == 0:
                self.process_of().kill()
                raise ApiError(503, "The command was killed before this request reached Google.")

    def lose_answer(self, api: str, method: str, path: str) -> str | None:
        return None


def killed(fake, double, backup: dict, stage: str, monkeypatch) -> str:
    """The way back run in its own process and SIGKILLed at `stage` (BEFORE_THE_CHECK, or PUT_BACK: then the move's
    check fails first); what it printed."""
    how = {**BEFORE_THE_CHECK, **PUT_BACK}[stage]
    new = f"{INSTANCE}-restore-b{backup['id']}"
    running: list = []
    rollouts: list = []
    wrapped = fake.after

    def after(kind, action):
        if kind == "run.deploy":
            rollouts.append(kind)
            if stage in PUT_BACK and len(rollouts) == 1:
                fake.sql_instances[new]["state"] = "STOPPED"  # the new revision cannot reach its database
            if len(rollouts) == how.get("rollout"):
                fake.latency.update(how["latency"])  # Google finishes the rollout after the kill
                running[0].kill()
        return wrapped(kind, action)

    answer = double.answer

    def checked(path, authorization):
        moved = how.get("check") == "new" and recorded_instance(fake) == new
        if moved or (how.get("check") == "put back" and len(rollouts) == 2):
            running[0].kill()
            running[0].wait()
        return answer(path, authorization)

    fake.after = after
    monkeypatch.setattr(double, "answer", checked)
    if "request" in how:
        fake.chaos = KillOnRequest(lambda: running[0], *how["request"])
    if "line" in how:
        fake.latency.update(how.get("latency", {}))
    running.append(start("restore", backup["id"], "--mlflow-version", OLD, "--yes"))
    printed = kill_when(running[0], how.get("line", r"^NEVER$"), signal.SIGKILL)
    fake.after, fake.chaos = wrapped, None
    monkeypatch.setattr(double, "answer", answer)
    assert running[0].returncode == -signal.SIGKILL, printed
    if stage in PUT_BACK:
        assert recorded_instance(fake) == (new if stage in PUT_BACK_STAGES[:2] else INSTANCE), stage
        assert (db_host(latest_env(fake)) == private_ip(fake.sql_instances[new])) == (stage == PUT_BACK_STAGES[0])
        assert version_of(fake) == (NEW if stage in PUT_BACK_STAGES[3:] else OLD), stage  # the template sent back
        assert served(fake, double) == ((NEW, INSTANCE) if stage == "put back, not checked" else (OLD, new)), stage
    fake.latency.clear()
    return printed


@pytest.fixture
def way_back(fake, double, tmp_path, monkeypatch):
    """The deployment upgraded to NEW, a backup of its OLD days; the restored data's migration finds it current."""
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "1")  # the failing check gives up sooner
    backup = upgraded(fake, tmp_path)
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    return backup, f"{INSTANCE}-restore-b{backup['id']}"


@pytest.mark.parametrize("stage", list(BEFORE_THE_CHECK))
def test_the_way_back_killed_before_its_check_then_rerun(fake, double, way_back, stage, monkeypatch):
    backup, new = way_back
    killed(fake, double, backup, stage, monkeypatch)
    assert_consistent(fake, double, new)
    assert_status_tells_the_truth(fake, double, new)
    rerun_the_restore(fake, double, backup)


@pytest.mark.parametrize("stage", ["while the older revision rolls out", "older revision rolled out, not recorded"])
def test_the_way_back_killed_before_its_check_then_up(fake, double, way_back, stage, monkeypatch):
    """`up` (asked to accept the MLflow change) leaves a consistent server, and the restore then converges."""
    backup, new = way_back
    killed(fake, double, backup, stage, monkeypatch)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_consistent(fake, double, new)
    assert assert_status_tells_the_truth(fake, double, new) == 0
    rerun_the_restore(fake, double, backup)


@pytest.mark.parametrize("stage", PUT_BACK_STAGES)
def test_the_way_back_killed_during_its_put_back_then_rerun(fake, double, way_back, stage, monkeypatch):
    backup, new = way_back
    killed(fake, double, backup, stage, monkeypatch)
    assert_consistent(fake, double, new)
    assert_status_tells_the_truth(fake, double, new)
    fake.latency.clear()
    fake.sql_instances[new]["state"] = "RUNNABLE"  # the cause of the failed check is fixed
    assert_status_tells_the_truth(fake, double, new)
    rerun_the_restore(fake, double, backup)


@pytest.mark.parametrize("stage", [s for s in PUT_BACK_STAGES if s != "mlflow-env put back"])  # as the one before
def test_the_way_back_killed_during_its_put_back_then_up(fake, double, way_back, stage, monkeypatch):
    backup, new = way_back
    killed(fake, double, backup, stage, monkeypatch)
    fake.latency.clear()
    fake.sql_instances[new]["state"] = "RUNNABLE"
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_consistent(fake, double, new)
    assert assert_status_tells_the_truth(fake, double, new) == 0
    rerun_the_restore(fake, double, backup)


def test_killed_between_the_put_back_record_and_its_rollout_status_and_a_rotation_keep_the_server_where_it_is(
    fake, double, way_back, monkeypatch
):
    """The record names the previous instance again, the server still runs the older MLflow on the restored one.
    `status` says so (not a password reset by hand, nor `credentials rotate --database`); a rotation, whose rollout
    pins the mlflow-env naming the recorded instance, refuses: it would put the older MLflow onto the upgraded
    instance. `up` puts the previous server back."""
    backup, new = way_back
    killed(fake, double, backup, "record put back, the service not sent", monkeypatch)
    assert recorded_instance(fake) == INSTANCE and served(fake, double) == (OLD, new)
    document = json.loads(cli("status", "--json").stdout)
    problems = document["problems"]
    assert any(p.startswith("the server runs on the database at") and "cut short" in p for p in problems), problems
    # The instance the server runs on is named, and never listed as left behind with the commands that delete it.
    assert any(f"(Cloud SQL instance {new})" in p for p in problems), problems
    assert f"Cloud SQL instance {new}" not in {i["resource"] for i in document["left_behind"]}, document["left_behind"]
    assert not any("most likely refuses the MySQL password" in p for p in problems), problems
    fake.sql_instances[new]["state"] = "RUNNABLE"
    fake.clear_log()
    rotated = cli("credentials", "rotate", "--database")
    assert rotated.exit_code != 0, rotated.output
    assert "The server runs on the database at" in " ".join(rotated.output.split())
    assert fake.mutating_requests() == []
    assert_consistent(fake, double, new)
    assert served(fake, double) == (OLD, new)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert assert_consistent(fake, double, new) == (NEW, INSTANCE)
    assert assert_status_tells_the_truth(fake, double, new) == 0
