"""Issue 20, points 1 and 4: a name setting on a live deployment does not move the server onto new, empty resources
without a confirmation made for it, `--reset all` keeps the names of what exists, and a region change is refused
before any mutating request. All through the CLI against the fake."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.settings_document import SETTINGS_SECRET
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat, up_and_clear_log

SERVICE = f"projects/{PROJECT}/locations/europe-west1/services/mlflow"


def recorded(fake) -> dict:
    return json.loads(fake.secret_value(SETTINGS_SECRET))["settings"]


@pytest.fixture
def team_db(fake, container_dir):
    return up_and_clear_log(fake, "--db-instance", "team-db", "--bucket", f"{PROJECT}-team-art")


def test_reset_all_keeps_the_names_of_the_resources_that_exist(team_db):
    result = cli("up", "--reset", "all")
    assert result.exit_code == 0, result.output
    assert set(team_db.sql_instances) == {"team-db"}
    assert recorded(team_db)["db_instance"] == "team-db" and recorded(team_db)["bucket"] == f"{PROJECT}-team-art"
    assert team_db.mutating_requests() == []


def test_a_new_instance_name_without_a_terminal_is_refused_before_any_request(team_db):
    result = cli("up", "--db-instance", "other-db", "--yes")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "NEW, EMPTY Cloud SQL instance `other-db`; `team-db` keeps the data" in text
    assert "--move-to-new-resources" in text and "--yes does not accept this" in text
    assert team_db.mutating_requests() == []
    assert set(team_db.sql_instances) == {"team-db"}


def test_a_reset_of_a_name_is_a_move_too(team_db):
    result = cli("up", "--reset", "bucket")
    assert result.exit_code == 1, result.output
    assert f"NEW, EMPTY bucket `{PROJECT}-mlflow-artifacts`" in flat(result.output)
    assert team_db.mutating_requests() == []


def test_a_dry_run_says_the_move_and_changes_nothing(team_db):
    result = cli("up", "--dry-run", "--db-name", "runs2")
    assert result.exit_code == 0, result.output
    assert "NEW, EMPTY database `runs2` on `team-db`; `mlflow_tracking_database` keeps the runs" in flat(result.output)
    assert team_db.mutating_requests() == []


def test_a_move_given_its_flag_goes_ahead_and_the_old_instance_stays(team_db):
    result = cli("up", "--db-instance", "other-db", "--move-to-new-resources")
    assert result.exit_code == 0, result.output
    assert set(team_db.sql_instances) == {"team-db", "other-db"}
    assert recorded(team_db)["db_instance"] == "other-db"


def test_a_region_change_is_refused_before_any_mutating_request(team_db):
    result = cli("up", "--region", "europe-west4", "--move-to-new-resources", "--yes")
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert "The deployment is in europe-west1" in text and "Nothing was sent" in text
    assert team_db.mutating_requests() == []
    assert not any("europe-west4" in r.path for r in team_db.requests())
