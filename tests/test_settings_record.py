"""Issue 20, point 2: the settings record (`mlflow-gcp-settings`) is read by version number, and a record that is
deleted, disabled, destroyed or not a settings document is an error that says how to recover, never a fall-back
to the default names (which would build a second, empty deployment). All through the CLI against the fake."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.settings_document import SETTINGS_SECRET
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat, up_and_clear_log

RECORD = f"projects/{PROJECT}/secrets/{SETTINGS_SECRET}"
NAMES = ("--db-instance", "team-db3", "--service", "team-svc")


def recorded(fake) -> dict:
    return json.loads(fake.secret_value(SETTINGS_SECRET))["settings"]


@pytest.fixture
def team(fake, container_dir):
    return up_and_clear_log(fake, *NAMES)


def newest_version(fake) -> str:
    listed = Clients(PROJECT).secrets().list_secret_versions(request={"parent": RECORD})
    return max((v.name for v in listed), key=lambda n: int(n.rsplit("/", 1)[-1]))


def test_a_deleted_record_does_not_build_a_second_deployment(team):
    Clients(PROJECT).secrets().delete_secret(name=RECORD)
    team.clear_log()
    for command in (("up",), ("credentials",)):
        result = cli(*command)
        assert result.exit_code == 1, result.output
        text = flat(result.output)
        assert "Cloud SQL instance team-db3" in text and "--db-instance team-db3 --service team-svc" in text
    assert team.mutating_requests() == []
    assert set(team.sql_instances) == {"team-db3"}
    # the names given back: recognised, and the record written again
    result = cli("up", *NAMES)
    assert result.exit_code == 0, result.output
    assert recorded(team)["db_instance"] == "team-db3" and set(team.sql_instances) == {"team-db3"}


def test_a_disabled_newest_version_is_an_error_naming_the_command_that_enables_it(team):
    version = newest_version(team)
    Clients(PROJECT).secrets().disable_secret_version(name=version)
    team.clear_log()
    result = cli("up")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    number = version.rsplit("/", 1)[-1]
    assert f"gcloud secrets versions enable {number} --secret {SETTINGS_SECRET}" in text
    assert "versions disable" not in text
    assert team.mutating_requests() == []


def test_a_destroyed_newest_version_is_an_error_naming_the_last_readable_one(team):
    assert cli("up", "--max-instances", "4").exit_code == 0  # a second version
    version = newest_version(team)
    Clients(PROJECT).secrets().destroy_secret_version(name=version)
    team.clear_log()
    result = cli("up")
    assert result.exit_code == 1, result.output
    older = int(version.rsplit("/", 1)[-1]) - 1
    assert f"gcloud secrets versions access {older} --secret {SETTINGS_SECRET}" in flat(result.output)
    assert team.mutating_requests() == []


def test_a_record_that_is_not_a_settings_document_never_advises_disabling_it(team):
    Clients(PROJECT).secrets().add_secret_version(parent=RECORD, payload={"data": b"not json"})
    team.clear_log()
    result = cli("up")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "is not a settings document" in text and "disable" not in text
    assert team.mutating_requests() == []


def test_a_stale_latest_does_not_send_a_setting_back(team):
    # `latest` and the list of versions may answer the version before for a while after an add
    team.secret_latest_stale_reads = 50
    team.secret_list_stale_reads = 50
    result = cli("up", "--db-tier", "db-g1-small", "--yes")
    assert result.exit_code == 0, result.output
    team.clear_log()
    result = cli("up", "--yes")
    assert result.exit_code == 0, result.output
    assert team.requests(api="sqladmin", mutating=True) == []
    assert team.sql_instances["team-db3"]["settings"]["tier"] == "db-g1-small"
