"""An MLflow upgrade (issue 24) whose way back is gone: the image the server runs, which a failed migration's
roll-back deploys again, was deleted from Artifact Registry (by hand, or by a cleanup policy). Cloud Run cannot start
a revision of it (the fake's `run_pulls_images`), so a fresh upgrade is refused before anything changes; an upgrade
left in maintenance and rerun meets it only if its migration fails, and then says the server stays in maintenance
with the data restored, and how to get it serving. Same deployment and helpers as tests/test_upgrade.py."""

from __future__ import annotations

from mlflow_gcp.gcp.clients import Clients
from tests import test_upgrade
from tests.helpers import PROJECT, cli, flat
from tests.test_upgrade import (
    DATA,
    INSTANCE,
    NEW,
    OLD,
    assert_upgraded,
    env_names,
    fails_halfway,
    migrates,
    pin,
    positions,
    result_line,
    version_of,
)
from tests.test_upgrade_edges import image

double = test_upgrade.double  # the fixture: a deployment of MLflow OLD, its database filled
GONE = "is no longer in Artifact Registry"


def delete_image(fake, uri: str) -> None:
    """As a cleanup policy does: the image's version deleted, with its tags."""
    tag = uri.rsplit(":", 1)[1]
    package = f"projects/{PROJECT}/locations/europe-west1/repositories/mlflow/packages/mlflow-server"
    registry = Clients(PROJECT).artifact_registry()
    version = registry.get_tag(name=f"{package}/tags/{tag}").version
    registry.delete_version(request={"name": version, "force": True}).result()
    assert fake.registry_holds(uri) is False
    fake.run_pulls_images = True  # as Cloud Run: a revision of an image it cannot pull fails


def test_an_upgrade_is_refused_before_any_change_when_the_live_image_is_gone(fake, double, tmp_path):
    """Refused by `up --dry-run` and `up --yes` before anything is sent, the server serving as it did; the way the
    error says (`up --mlflow-version OLD`: an image of the running MLflow again) gives the upgrade its way back."""
    previous = image(fake)
    delete_image(fake, previous)
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    fake.clear_log()
    for args in (("up", "--dry-run"), ("up", "--yes")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        text = flat(result.output)
        assert f"(MLflow {OLD}), {GONE}" in text and "Nothing was changed" in text, text  # the URI may wrap
        assert f"`mlflow-gcp up --mlflow-version {OLD}` first" in text, text
        assert "Traceback" not in result.output
    assert fake.mutating_requests() == []
    assert image(fake) == previous and version_of(fake) == OLD
    assert double.answer("/health", None)[0] == 200
    back = cli("up", "--mlflow-version", OLD, "--yes")
    assert back.exit_code == 0, back.output
    assert version_of(fake) == OLD and fake.registry_holds(image(fake)) and "backup" not in positions(fake)
    upgrade = cli("up", "--mlflow-version", NEW, "--yes")
    assert upgrade.exit_code == 0, upgrade.output
    assert_upgraded(fake, double)


def test_with_the_live_image_there_a_failed_migration_still_rolls_back(fake, double, tmp_path):
    """The check reads the real registry names of the fake's images: no refusal while the image is there, and the
    roll-back starts a revision of it."""
    previous = image(fake)
    fake.run_pulls_images = True
    fake.run_jobs.outcome = fails_halfway(fake)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code != 0
    assert "rolled back" in flat(result.output) and GONE not in flat(result.output)
    assert fake.sql_data[INSTANCE] == DATA and image(fake) == previous and version_of(fake) == OLD
    assert double.answer("/health", None)[0] == 200


def test_a_registry_that_cannot_be_read_does_not_block_the_upgrade(fake, double, tmp_path):
    """A caller who may not read Artifact Registry (403): not known to be gone, so the upgrade goes on."""
    tag = image(fake).rsplit(":", 1)[1]
    fake.fail(403, times=100, api="artifactregistry", method="GET", path_contains=f"/tags/{tag}", message="No.")
    fake.run_jobs.outcome = migrates(fake)
    pin(tmp_path, NEW)
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert_upgraded(fake, double)


def test_a_rerun_in_maintenance_whose_migration_fails_says_the_server_stays_in_maintenance(fake, double, tmp_path):
    """The upgrade stopped with the server in maintenance (the backup refused), the previous image deleted
    meanwhile. The rerun goes on (the new MLflow may well serve); its migration fails: the backup is restored, no
    revision of the gone image is tried, and the error says the data is restored, the server stays in maintenance,
    and how to get it serving: `up --mlflow-version OLD`, which does."""
    previous = image(fake)
    pin(tmp_path, NEW)
    fake.fail(403, api="sqladmin", method="POST", path_contains="/backupRuns", message="Not now.")
    stopped = cli("up", "--yes")
    assert stopped.exit_code != 0 and "MLFLOW_GCP_MAINTENANCE" in env_names(fake), stopped.output
    delete_image(fake, previous)
    fake.run_jobs.outcome = fails_halfway(fake)
    fake.clear_log()
    result = cli("up", "--yes")
    assert result.exit_code != 0
    text = flat(result.output)
    assert "Table 'secrets' already exists" in text and "was restored onto" in text, text
    assert f"(MLflow {OLD}), {GONE}" in text and "the server stays in maintenance (503)" in text, text
    assert f"`mlflow-gcp up --mlflow-version {OLD}`" in text and "Traceback" not in result.output
    assert "rolled back" not in text and "serves the data again" not in text
    at = positions(fake)
    assert at["restore"] and "revision" not in at  # no revision of an image Cloud Run cannot pull
    assert fake.sql_data[INSTANCE] == DATA and "MLFLOW_GCP_MAINTENANCE" in env_names(fake)
    assert double.answer("/api/2.0/mlflow/experiments/search", None)[0] == 503
    fake.run_jobs.outcome = lambda job, execution: ("succeeded", [result_line("current")])
    back = cli("up", "--mlflow-version", OLD, "--yes")
    assert back.exit_code == 0, back.output
    assert "MLFLOW_GCP_MAINTENANCE" not in env_names(fake) and version_of(fake) == OLD
    assert fake.sql_data[INSTANCE] == DATA and fake.registry_holds(image(fake))
    assert double.answer("/health", None)[0] == 200


def test_with_the_running_version_unknown_the_refusal_names_the_mlflow_gcp_that_deployed_it(fake, double, tmp_path):
    """No version annotation (an earlier tool's server) and no versions route: `--mlflow-version` of a guess would
    still meet an unknown version, so the error names the one way that rebuilds that image."""
    stored = fake.state["run_services"][f"projects/{PROJECT}/locations/europe-west1/services/mlflow"]
    stored["annotations"].pop("mlflow-gcp/mlflow-version")
    stored["template"]["annotations"].pop("mlflow-gcp/mlflow-version")
    double.has_versions_route = False
    delete_image(fake, image(fake))
    pin(tmp_path, NEW)
    fake.clear_log()
    result = cli("up", "--yes")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert f"(MLflow of an unknown version), {GONE}" in text and "Nothing was changed" in text, text
    assert "with the mlflow-gcp that deployed the server" in text and "Traceback" not in result.output
    assert fake.mutating_requests() == []
