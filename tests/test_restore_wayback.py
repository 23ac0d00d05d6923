"""The way back after an upgrade (`restore BACKUP --mlflow-version OLD`) made to fail partway (issue 24): the
previous server is put back as it was (its image of the newer MLflow, on the previous, migrated instance), the
message says so, and a rerun of the restore converges. `up`'s steps with the previous instance could not: they
meet the downgrade refusal, or deploy the older MLflow onto a schema it refuses. Same deployment as
tests/test_upgrade.py."""

from __future__ import annotations

import signal

import pytest

from tests import test_upgrade
from tests.fake_gcp.apis.run import SERVICE
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat
from tests.test_backups import recorded_instance, take_backup
from tests.test_restore_interrupted import start
from tests.test_resume import kill_when
from tests.test_upgrade import DATA, INSTANCE, NEW, OLD, migrates, pin, result_line, service, version_of

double = test_upgrade.double  # the fixture: a deployment of MLflow OLD, its database filled


def image(fake) -> str:
    return service(fake)["template"]["containers"][0]["image"]


def env(fake) -> dict[str, str]:
    container = service(fake)["template"]["containers"][0]
    return {e["name"]: str(e.get("value", e.get("valueSource"))) for e in container["env"]}


def upgraded(fake, tmp_path) -> dict:
    """A backup taken under MLflow OLD, then the server upgraded to NEW in place."""
    backup = take_backup()
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code == 0
    assert version_of(fake) == NEW
    return backup


def assert_previous_server(fake, double, before_image: str, before_env: dict) -> None:
    assert image(fake) == before_image and version_of(fake) == NEW
    assert env(fake) == before_env  # its pinned secret versions: mlflow-env names the previous instance
    double.sync()
    assert double.database_instance() == INSTANCE and double.mlflow_version == NEW
    assert double.answer("/health", None)[0] == 200
    assert recorded_instance(fake) == INSTANCE
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}  # the upgraded instance, untouched


def rerun_converges(fake, double, backup: dict) -> None:
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    again = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    assert again.exit_code == 0, again.output
    new = f"{INSTANCE}-restore-b{backup['id']}"
    double.sync()
    assert double.database_instance() == new and version_of(fake) == OLD
    assert recorded_instance(fake) == new
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}


def test_a_way_back_that_fails_before_the_service_changed_leaves_the_previous_server(fake, double, tmp_path):
    """The restored data's migration job fails: the service was never changed, so nothing is deployed back."""
    backup = upgraded(fake, tmp_path)
    before_image, before_env = image(fake), env(fake)
    fake.run_jobs.outcome = lambda job, execution: ("failed", [result_line("failed", "Table 'secrets' already exists")])
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    assert result.exit_code == 1, result.output
    text = flat(result.stderr)
    assert "failed too" not in text, text
    assert "The previous revision still serves (the service was not changed)" in text, text
    assert_previous_server(fake, double, before_image, before_env)
    rerun_converges(fake, double, backup)


def test_a_way_back_that_fails_after_the_service_changed_puts_the_previous_image_back(fake, double, tmp_path):
    """The older MLflow serves the restored instance, then the restore's check fails (the new instance stops): the
    previous template (the newer MLflow's image, the previous instance) is put back, never the older image onto
    the migrated instance."""
    backup = upgraded(fake, tmp_path)
    before_image, before_env = image(fake), env(fake)
    new = f"{INSTANCE}-restore-b{backup['id']}"
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    wrapped, broken = fake.after, []

    def after(kind, action):
        if kind == "run.deploy" and not broken:
            broken.append(kind)
            fake.sql_instances[new]["state"] = "STOPPED"  # the new revision cannot reach its database
        return wrapped(kind, action)

    fake.after = after
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    fake.after = wrapped
    assert result.exit_code == 1, result.output
    text = flat(result.stderr)
    assert_previous_server(fake, double, before_image, before_env)  # not the older image on the migrated instance
    assert "failed too" not in text, text
    assert f"The previous image (MLflow {NEW}) serves again on {INSTANCE}" in text, text
    fake.sql_instances[new]["state"] = "RUNNABLE"
    rerun_converges(fake, double, backup)


def latest_env(fake) -> str:
    """The content of mlflow-env's latest version."""
    return fake.state["secret_versions"][f"projects/{PROJECT}/secrets/mlflow-env"][-1]["data"].decode()


def pinned_env(fake) -> str:
    container = service(fake)["template"]["containers"][0]
    ref = next(e["valueSource"]["secretKeyRef"] for e in container["env"] if e["name"] == "MLFLOW_ENV")
    versions = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/mlflow-env"]
    return next(v["data"].decode() for v in versions if v["name"].endswith(f"/{ref['version']}"))


def breaks_the_check(fake, backup: dict, then=None):
    """Once the restore's move has rolled out the older image on the new instance, the new instance stops (the
    check fails, the way back puts the previous server back); `then()` runs when the put-back is sent."""
    new = f"{INSTANCE}-restore-b{backup['id']}"
    wrapped, deploys = fake.after, []

    def after(kind, action):
        if kind == "run.deploy":
            deploys.append(kind)
            if len(deploys) == 1:
                fake.sql_instances[new]["state"] = "STOPPED"
            elif len(deploys) == 2 and then is not None:
                then()
        return wrapped(kind, action)

    fake.after = after
    return lambda: setattr(fake, "after", wrapped)


def rerun_after_the_put_back(fake, double, backup: dict, before_image: str, before_env: dict) -> None:
    new = f"{INSTANCE}-restore-b{backup['id']}"
    fake.sql_instances[new]["state"] = "RUNNABLE"
    rerun_converges(fake, double, backup)
    assert pinned_env(fake) == latest_env(fake)


@pytest.mark.parametrize("how", ["503", "reset"])
def test_a_way_back_whose_put_back_answer_is_lost_puts_the_previous_image_back(fake, double, tmp_path, how):
    """The put-back's update is applied, its answer lost: read back, waited for, said; nothing deployed twice."""
    backup = upgraded(fake, tmp_path)
    before_image, before_env = image(fake), env(fake)
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    lost = []
    undo = breaks_the_check(
        fake, backup, then=lambda: lost.append(fake.lose_answer(how, api="run", method="PATCH", route=SERVICE))
    )
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    undo()
    assert result.exit_code == 1, result.output
    assert lost and lost[0].times == 0, "the put-back's answer was not lost"
    text = flat(result.stderr)
    assert "failed too" not in text, text
    assert f"The previous image (MLflow {NEW}) serves again on {INSTANCE}" in text, text
    assert_previous_server(fake, double, before_image, before_env)
    assert pinned_env(fake) == latest_env(fake)  # a later `up` or rotation keeps the server on the instance it uses
    rerun_after_the_put_back(fake, double, backup, before_image, before_env)


@pytest.mark.parametrize("when", ["before the put-back is sent", "while the put-back rolls out"])
def test_a_way_back_interrupted_during_its_put_back(fake, double, tmp_path, when):
    """Ctrl-C while the way back puts the previous server back: the put-back is finished (a second Ctrl-C would
    be ignored), the server never runs the older MLflow on the migrated instance, and the restore runs again."""
    backup = upgraded(fake, tmp_path)
    before_image, before_env = image(fake), env(fake)
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    running: list = []
    interrupt = (lambda: running[0].send_signal(signal.SIGINT)) if when.startswith("while") else None
    undo = breaks_the_check(fake, backup, then=interrupt)
    running.append(start("restore", backup["id"], "--mlflow-version", OLD, "--yes"))
    pattern = r"restore: putting the server back on" if interrupt is None else r"^NEVER$"
    printed = kill_when(running[0], pattern, signal.SIGINT)
    undo()
    assert running[0].returncode != 0, printed
    text = flat(printed)
    assert "interrupted" in text.lower(), text
    assert_previous_server(fake, double, before_image, before_env)
    assert pinned_env(fake) == latest_env(fake)
    rerun_after_the_put_back(fake, double, backup, before_image, before_env)


def test_after_a_failed_way_back_a_rotation_and_up_keep_the_server_on_its_instance(fake, double, tmp_path):
    """The move added an mlflow-env version naming the new instance; the put-back makes the latest one name the
    previous instance again, so a rotation (which pins the latest mlflow-env) or `up` does not move the server
    (the newer MLflow) onto the restored instance, whose schema is the older MLflow's."""
    backup = upgraded(fake, tmp_path)
    before_image = image(fake)
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    undo = breaks_the_check(fake, backup)
    assert cli("restore", backup["id"], "--mlflow-version", OLD, "--yes").exit_code == 1
    undo()
    fake.sql_instances[f"{INSTANCE}-restore-b{backup['id']}"]["state"] = "RUNNABLE"
    rotated = cli("credentials", "rotate", "--mlflow")
    assert rotated.exit_code == 0, rotated.output
    double.sync()
    assert double.database_instance() == INSTANCE and image(fake) == before_image
    again = cli("up", "--yes")
    assert again.exit_code == 0, again.output
    double.sync()
    assert double.database_instance() == INSTANCE and version_of(fake) == NEW and image(fake) == before_image
    assert recorded_instance(fake) == INSTANCE


def test_a_way_back_interrupted_after_the_move_then_failing_on_the_rerun_puts_the_previous_server_back(
    fake, double, tmp_path
):
    """Ctrl-C once the older MLflow serves the restored instance (the record not yet written); the rerun's
    migration of the restored data then fails. The service has no previous template to put back (it runs the older
    image already): the previous server is the newer MLflow on the previous instance, whose schema label says so,
    never the older image put onto the migrated instance."""
    backup = upgraded(fake, tmp_path)
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    new = f"{INSTANCE}-restore-b{backup['id']}"
    way_back = start("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    printed = kill_when(way_back, r"^deploy\s+updated", signal.SIGINT)
    assert "deploy" in printed
    double.sync()
    assert double.database_instance() == new and version_of(fake) == OLD
    runs = []

    def outcome(job, execution):  # the restored data's migration fails; the previous server's finds it current
        runs.append(execution)
        if len(runs) == 1:
            return "failed", [result_line("failed", "Lost connection to MySQL server during query")]
        return "succeeded", [result_line("current")]

    fake.run_jobs.outcome = outcome
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    text = flat(result.stderr)
    assert "failed too" not in text, text
    assert f"The server runs on {INSTANCE} again (MLflow {NEW})" in text, text
    assert result.exit_code == 1, result.output
    double.sync()
    assert double.database_instance() == INSTANCE and version_of(fake) == NEW, text
    assert fake.sql_data[INSTANCE] == {**DATA, "schema": NEW}
    assert recorded_instance(fake) == INSTANCE
    rerun_converges(fake, double, backup)
