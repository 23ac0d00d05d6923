"""The way back after an upgrade (`restore BACKUP --mlflow-version OLD`) made to fail partway (issue 24): the
previous server is put back as it was (its image of the newer MLflow, on the previous, migrated instance), the
message says so, and a rerun of the restore converges. `up`'s steps with the previous instance could not: they
meet the downgrade refusal, or deploy the older MLflow onto a schema it refuses. Same deployment as
tests/test_upgrade.py."""

from __future__ import annotations

from tests import test_upgrade
from tests.helpers import cli, flat
from tests.test_backups import recorded_instance, take_backup
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
