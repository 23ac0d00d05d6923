"""Choosing the MLflow version (issue 24): `--mlflow-version` (remembered) keeps a team on its MLflow when it
upgrades mlflow-gcp, whose image pins a newer one; the image is then built with that version (build-arg
MLFLOW_VERSION, another tag); moving on later is `--mlflow-version NEWER`, an upgrade with a backup first."""

from __future__ import annotations

import json

from tests.helpers import cli
from tests.test_upgrade import NEW, OLD, double, migrates, pin, positions, version_of  # noqa: F401 (fixture)


def builds(fake) -> list[list[str]]:
    """The docker arguments of each Cloud Build build started."""
    found = []
    for r in fake.mutating_requests():
        if r.api == "cloudbuild" and r.route.endswith("/builds") and r.method == "POST":
            found.append(json.loads(r.body)["steps"][0]["args"])
    return found


def test_a_team_stays_on_its_version_when_the_tool_pins_a_newer_one(fake, double, tmp_path):  # noqa: F811
    pin(tmp_path, NEW)  # the team installed an mlflow-gcp whose image pins a newer MLflow
    result = cli("up", "--mlflow-version", OLD)
    assert result.exit_code == 0, result.output
    assert "backup" not in positions(fake) and "job-run" not in positions(fake)
    assert version_of(fake) == OLD
    assert builds(fake) == [["build", "--build-arg", f"MLFLOW_VERSION={OLD}", "-t", builds(fake)[0][-2], "."]]
    fake.clear_log()
    again = cli("up")  # remembered: no flag needed on this machine or another
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


def test_moving_on_later_is_an_upgrade(fake, double, tmp_path):  # noqa: F811
    pin(tmp_path, NEW)
    assert cli("up", "--mlflow-version", OLD).exit_code == 0
    fake.run_jobs.outcome = migrates(fake)
    plan = cli("up", "--mlflow-version", NEW, "--dry-run")
    assert f"MLflow {OLD} → {NEW}" in " ".join(plan.output.split())
    result = cli("up", "--mlflow-version", NEW, "--yes")
    assert result.exit_code == 0, result.output
    assert version_of(fake) == NEW
    at = positions(fake)
    assert at["backup"][0] < at["job-run"][0]


def test_the_version_chosen_is_part_of_the_image_tag(tmp_path):
    from mlflow_gcp import build_context

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "requirements.txt").write_text(f"mlflow[auth]=={OLD}\n")
    tag = build_context.image_tag(tmp_path)
    assert build_context.image_tag(tmp_path, OLD) == tag == build_context.context_hash(tmp_path)
    assert build_context.build_args(tmp_path, OLD) == []
    other = build_context.image_tag(tmp_path, NEW)
    assert other != tag and len(other) == len(tag)
    assert build_context.build_args(tmp_path, NEW) == ["--build-arg", f"MLFLOW_VERSION={NEW}"]


def test_a_version_that_is_no_release_number_is_refused(fake):
    result = cli("up", "--mlflow-version", "latest", "--dry-run")
    assert result.exit_code != 0
    assert "must be a release number such as 3.17.2" in " ".join(result.output.split())


def test_down_has_nothing_of_the_version_to_delete(fake, double):  # noqa: F811
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    assert "MLflow version of" not in result.output
    assert fake.run_service("mlflow") is None
