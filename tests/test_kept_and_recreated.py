"""Issue 20, point 8: `status` after `down` (data kept) shows the kept bucket and secrets as `kept`, not `missing`;
a Cloud SQL instance deleted by hand and made again by `up` is said to be NEW and EMPTY, with where its backups
may be. Through the CLI against the fake."""

from __future__ import annotations

import json

from tests.helpers import cli, flat

INSTANCE = "mlflow-tracking-database"


def test_status_after_down_shows_the_kept_data_as_kept(deployed):
    assert cli("down", "--yes").exit_code == 0
    result = cli("status")
    lines = {line.split()[0] + " " + " ".join(line.split()[1:3]) for line in result.stdout.splitlines() if line}
    assert "kept bucket demo-project-mlflow-artifacts" in lines, result.stdout
    assert "kept secret mlflow-env" in lines and "kept secret mlflow-credentials" in lines, result.stdout
    assert "missing run service" in " ".join(lines)  # what down removed is still missing
    assert "secretAccessor" not in flat(result.stdout.split("problem(s)")[-1])  # kept grants are no problem
    document = json.loads(cli("status", "--json").stdout)
    conditions = {r["resource"]: r["condition"] for s in document["steps"] for r in s["resources"]}
    assert conditions["bucket demo-project-mlflow-artifacts"] == "kept"
    assert conditions["Cloud Run service mlflow"] == "missing"


def test_an_instance_deleted_by_hand_is_made_again_as_new_and_empty_with_its_backups(deployed):
    del deployed.sql_instances[INSTANCE]  # deleted in the Console (deletion protection turned off first)
    planned = cli("up", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert f"Cloud SQL instance {INSTANCE}: would create a NEW, EMPTY instance" in flat(planned.output)
    result = cli("up")
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert f"Cloud SQL instance {INSTANCE}: created a NEW, EMPTY instance" in text
    assert "The old data is gone unless restored from a backup" in text
    assert "gcloud sql backups list --project demo-project" in text


def test_a_first_deployment_is_not_announced_as_recreated(fake, container_dir):
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert "NEW, EMPTY" not in result.output
