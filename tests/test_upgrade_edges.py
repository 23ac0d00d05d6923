"""The other commands that roll out a revision, on a deployment where this mlflow-gcp pins a newer MLflow than the
server runs (issue 24): `credentials rotate` keeps the image the service runs and says the upgrade is pending (no
backup, no migration job, no image of the new MLflow); `restore` refuses to upgrade MLflow on the way and says the
two ways on; `step deploy` asks as `up` does. Same deployment and helpers as tests/test_upgrade.py."""

from __future__ import annotations

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL
from tests import test_upgrade
from tests.helpers import cli, flat, refused_with_yes_and_dry_run
from tests.test_credentials import assert_converged, credentials, pinned
from tests.test_upgrade import (
    DATA,
    INSTANCE,
    NEW,
    OLD,
    PLAN_LINE,
    assert_upgraded,
    fails_halfway,
    migrates,
    pin,
    positions,
    result_line,
    service,
    version_of,
)

double = test_upgrade.double  # the fixture: a deployment of MLflow OLD, its database filled
PENDING = f"an MLflow upgrade is pending ({OLD} → {NEW})"
UPGRADE_KINDS = ("backup", "restore", "job", "job-run")


def image(fake) -> str:
    return service(fake)["template"]["containers"][0]["image"]


def assert_no_upgrade_sent(fake) -> None:
    """No backup, no migration job (made or run), no restore in the request log; the job never ran."""
    at = positions(fake)
    assert not [kind for kind in UPGRADE_KINDS if kind in at], at
    assert fake.run_jobs.executions("mlflow-migrate") == []


def test_rotate_with_an_upgrade_pending_keeps_the_image_and_says_so(fake, double, tmp_path):
    """A newer mlflow-gcp, then `credentials rotate` before `up`: new passwords, rolled out on the image the server
    runs, checked; no upgrade inside the rotation. The next `up --yes` upgrades as it would have."""
    before, login = image(fake), credentials()
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    assert PENDING in flat(result.output) and "run `mlflow-gcp up` to upgrade" in flat(result.output)
    assert image(fake) == before and version_of(fake) == OLD
    assert (service(fake).get("annotations") or {}).get("mlflow-gcp/mlflow-version") == OLD
    assert fake.sql_data[INSTANCE] == DATA
    assert_no_upgrade_sent(fake)
    assert "revision" in positions(fake)  # the rotation's own rollout
    assert credentials() != login and pinned(fake, SECRET_MLFLOW) == "2" and pinned(fake, SECRET_MYSQL) == "2"
    assert_converged(fake, double)  # the double checks the new MySQL and admin passwords
    fake.clear_log()
    upgrade = cli("up", "--yes")
    assert upgrade.exit_code == 0, upgrade.output
    assert_upgraded(fake, double)
    assert_converged(fake, double)


def test_rotate_after_an_upgrade_was_declined_does_not_roll_out_the_built_image(fake, double, tmp_path):
    """`up` built the new image, then the upgrade was refused (no --yes): the image of the new MLflow is in the
    registry, and still the rotation keeps the one the server runs."""
    before = image(fake)
    pin(tmp_path, NEW)
    refused = cli("up")
    assert refused.exit_code != 0 and PLAN_LINE in flat(refused.output)
    fake.clear_log()
    result = cli("credentials", "rotate", "--database")
    assert result.exit_code == 0, result.output
    assert PENDING in flat(result.output)
    assert image(fake) == before and version_of(fake) == OLD
    assert_no_upgrade_sent(fake)
    assert_converged(fake, double)


def test_rotate_during_an_unfinished_upgrade_is_refused_before_any_change(fake, double, tmp_path):
    """An upgrade stopped with the server in maintenance: a new login could not be checked; `up` finishes first."""
    stored = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    stored["template"]["annotations"].update(
        {"mlflow-gcp/upgrade-id": "0badcafe", "mlflow-gcp/upgrade-from": OLD, "mlflow-gcp/upgrade-previous-image": ""}
    )
    stored["template"]["containers"][0]["env"].append({"name": "MLFLOW_GCP_MAINTENANCE", "value": "upgrade"})
    pin(tmp_path, NEW)
    result = cli("credentials", "rotate")
    assert result.exit_code != 0
    text = flat(result.output)
    assert f"An MLflow upgrade (from MLflow {OLD}) did not finish" in text and "Nothing was changed" in text
    assert "`mlflow-gcp up`" in text and "Traceback" not in result.output
    assert fake.mutating_requests() == []


def test_restore_with_an_upgrade_pending_is_refused_then_runs_on_the_servers_mlflow(fake, double, tmp_path):
    """With a newer mlflow-gcp, a restore would move the server onto the restored data AND a new MLflow (and its
    roll-back would meet the upgrade on the previous instance): refused before anything, with the two ways on.
    `--mlflow-version OLD` restores on the MLflow the server runs: no upgrade, the previous instance untouched."""
    from tests.test_backups import take_backup

    backup = take_backup()
    fake.clear_log()
    pin(tmp_path, NEW)
    for text in refused_with_yes_and_dry_run(fake, "restore", backup["id"]):
        assert f"The server runs MLflow {OLD}, and this mlflow-gcp deploys MLflow {NEW}" in text
        assert f"mlflow-gcp restore {backup['id']} --mlflow-version {OLD}" in text and "Traceback" not in text
    new = f"{INSTANCE}-restore-b{backup['id']}"
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    result = cli("restore", backup["id"], "--mlflow-version", OLD, "--yes")
    assert result.exit_code == 0, result.output
    assert double.database_instance() == new and version_of(fake) == OLD
    assert fake.sql_data[INSTANCE] == DATA
    assert double.answer("/health", None)[0] == 200


def test_step_deploy_asks_for_the_upgrade_as_up_does(fake, double, tmp_path):
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    refused = cli("step", "deploy")
    assert refused.exit_code != 0
    assert PLAN_LINE in flat(refused.output) and "--yes" in flat(refused.output)
    assert version_of(fake) == OLD
    assert_no_upgrade_sent(fake)
    result = cli("step", "deploy", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)
    at = positions(fake)
    assert at["backup"][0] < at["job-run"][0] < at["revision"][-1]


def test_rotate_with_a_newer_image_of_the_same_mlflow_keeps_the_servers_image(fake, double, tmp_path):
    """A newer mlflow-gcp with the same MLflow (another build context): rotated on the image the server runs; the
    image of this mlflow-gcp, not built yet, is neither built nor required."""
    before = image(fake)
    (tmp_path / "build-context" / "entrypoint.py").write_text("# a newer mlflow-gcp's server, the same MLflow\n")
    result = cli("credentials", "rotate", "--mlflow")
    assert result.exit_code == 0, result.output
    assert "the server runs another image than this mlflow-gcp's: the rotation keeps it" in flat(result.output)
    assert image(fake) == before and version_of(fake) == OLD
    assert not [r for r in fake.mutating_requests() if r.api == "cloudbuild"]
    assert_converged(fake, double)


def test_restore_on_a_service_of_an_earlier_tool_asks_for_its_version_before_any_change(fake, double, tmp_path):
    """No version annotation (an earlier mlflow-gcp): the version the server reports decides; a server that says
    none is refused too (the restore could upgrade it on the way), and `up` first records the version."""
    from tests.test_backups import take_backup

    backup = take_backup()
    stored = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    stored["annotations"].pop("mlflow-gcp/mlflow-version")
    stored["template"]["annotations"].pop("mlflow-gcp/mlflow-version")
    double.version_default, double.mlflow_version = OLD, None
    pin(tmp_path, NEW)
    fake.clear_log()
    reported = cli("restore", backup["id"], "--yes")
    assert reported.exit_code != 0
    assert f"--mlflow-version {OLD}" in flat(reported.output) and "would also upgrade MLflow" in flat(reported.output)
    double.has_versions_route = False
    unknown = cli("restore", backup["id"], "--yes")
    assert unknown.exit_code != 0
    assert "is not recorded" in flat(unknown.output) and "Run `mlflow-gcp up` first" in flat(unknown.output)
    assert fake.mutating_requests() == []


def test_logs_show_the_output_of_a_failed_upgrades_migration_job(fake, double, tmp_path):
    """After an upgrade rolled back, `logs` shows the job's lines (its result line and its exit) beside the
    server's, labelled with the execution: what failed is readable without the console."""
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    assert cli("up", "--yes").exit_code != 0
    execution = fake.run_jobs.executions("mlflow-migrate")[0]["name"].rsplit("/", 1)[-1]
    result = cli("logs")
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert f"migration job {execution}: mlflow-gcp: migration result:" in text, text
    assert "Table 'secrets' already exists" in text
    assert f"migration job {execution}: Container called exit(1)." in text
