"""Settings are remembered with the deployment: a later `up` (from any machine) starts from them, a flag changes
only what it names, `--reset` goes back to a default, and a deployment made before (or by hand) is adopted as it
is. All through the CLI against the fake."""

from __future__ import annotations

import json

from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.settings_document import SETTINGS_SECRET
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

REGION = "europe-west1"
INSTANCE = "mlflow-tracking-database"
SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/mlflow"
CONNECTOR = f"projects/{PROJECT}/locations/{REGION}/connectors/vpc-connector-mlflow"
RECORD = f"projects/{PROJECT}/secrets/{SETTINGS_SECRET}"


def up(*flags: str, env: dict[str, str] | None = None):
    result = cli("up", *flags, env=env)
    assert result.exit_code == 0, result.output
    return result


def recorded(fake) -> dict:
    return json.loads(fake.secret_value(SETTINGS_SECRET))["settings"]


def live_max_instances() -> int:
    return Clients(PROJECT).run_services().get_service(name=SERVICE).template.scaling.max_instance_count


def changes(fake) -> list[tuple[str, str, str]]:
    return [(r.api, r.method, r.path) for r in fake.mutating_requests()]


def test_first_up_records_the_settings_and_the_server_cannot_read_them(deployed):
    values = recorded(deployed)
    assert values["db_tier"] == "db-f1-micro" and values["max_instances"] == 2
    assert "project" not in values
    assert deployed.members(RECORD, "roles/secretmanager.secretAccessor") == []


def test_a_tier_given_once_is_kept_by_a_plain_up(deployed):
    up("--db-tier", "db-g1-small", "--yes")
    assert recorded(deployed)["db_tier"] == "db-g1-small"
    deployed.clear_log()
    up()
    assert changes(deployed) == []
    assert deployed.sql_instances[INSTANCE]["settings"]["tier"] == "db-g1-small"


def test_a_flag_changes_only_what_it_names(deployed):
    up("--max-instances", "5")
    up("--connector-max-instances", "4")
    assert live_max_instances() == 5
    assert deployed.vpc_connectors[CONNECTOR]["maxInstances"] == 4
    assert recorded(deployed)["max_instances"] == 5 and recorded(deployed)["connector_max_instances"] == 4


def test_another_machine_converges_to_the_recorded_settings(deployed, tmp_path, monkeypatch):
    # machine 1: settings from its environment (what a .env file sets)
    up(env={"MLFLOW_GCP_MAX_INSTANCES": "5", "MLFLOW_GCP_MEMORY": "2Gi"})
    # machine 2: a fresh working directory, no .env, no flags
    other = tmp_path / "laptop-2"
    other.mkdir()
    monkeypatch.chdir(other)
    deployed.clear_log()
    result = up()
    assert changes(deployed) == []
    assert live_max_instances() == 5
    document = json.loads(cli("status", "--json").stdout)
    values = document["settings"]["values"]
    assert (values["max_instances"]["value"], values["max_instances"]["source"]) == (5, "recorded")
    assert values["memory"]["value"] == "2Gi"
    assert document["settings"]["drift"] == []
    assert "->" not in result.output  # nothing announced as changed


def test_reset_goes_back_to_the_default_and_is_recorded(deployed):
    up("--max-instances", "5", "--cpu", "2")
    result = up("--reset", "max-instances")
    assert "max-instances 5 -> 2 (reset)" in " ".join(result.output.split())
    assert live_max_instances() == 2
    assert recorded(deployed)["max_instances"] == 2 and recorded(deployed)["cpu"] == "2"


def test_reset_of_an_unknown_setting_or_of_a_given_one_is_a_clear_error(deployed):
    result = cli("up", "--reset", "db-tire")
    assert result.exit_code == 2 and "db-tire" in result.output and "db-tier" in result.output
    result = cli("up", "--reset", "max-instances", "--max-instances", "3")
    assert result.exit_code == 2 and "both given and reset" in result.output
    assert changes(deployed) == []


def test_dry_run_shows_the_record_change_and_status_shows_drift(deployed):
    result = cli("up", "--dry-run", "--max-instances", "5")
    assert result.exit_code == 0, result.output
    assert "max-instances 2 -> 5 (--max-instances)" in result.output
    assert f"settings record {SETTINGS_SECRET}" in result.output
    assert changes(deployed) == []
    # a tier changed by hand in the console: status shows it against the recorded one
    deployed.sql_instances[INSTANCE]["settings"]["tier"] = "db-custom-1-3840"
    result = cli("status", "--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 1
    assert document["settings"]["drift"] == ["db_tier"]
    tier = document["settings"]["values"]["db_tier"]
    assert (tier["value"], tier["live"], tier["source"]) == ("db-f1-micro", "db-custom-1-3840", "recorded")
    text = cli("status").stdout
    assert "db-custom-1-3840" in text


def test_a_failed_deploy_records_nothing(deployed):
    before = recorded(deployed)
    deployed.run_fail_next_revision()
    assert cli("up", "--max-instances", "5").exit_code != 0
    assert recorded(deployed) == before


def test_a_deployment_made_without_a_record_is_adopted_as_it_is(deployed):
    # made by hand (or by a version of the tool that recorded nothing), with other values than the defaults
    up("--db-tier", "db-g1-small", "--max-instances", "5", "--memory", "2Gi", "--connector-max-instances", "6", "--yes")
    Clients(PROJECT).secrets().delete_secret(name=RECORD)
    deployed.vpc_connectors[CONNECTOR]["machineType"] = "e2-standard-4"  # changed by hand in the console
    deployed.clear_log()

    result = up()
    assert [(m, p.rsplit("/", 1)[-1]) for _, m, p in changes(deployed)] == [
        ("POST", f"secrets?secretId={SETTINGS_SECRET}".split("?")[0]),
        ("POST", f"{SETTINGS_SECRET}:addVersion"),
    ], changes(deployed)
    assert "adopted from the live deployment" in result.output
    values = recorded(deployed)
    assert (values["db_tier"], values["max_instances"], values["memory"]) == ("db-g1-small", 5, "2Gi")
    assert (values["connector_max_instances"], values["connector_machine_type"]) == (6, "e2-standard-4")
    deployed.clear_log()
    up()
    assert changes(deployed) == []


def test_down_keeps_the_record_with_the_data_and_up_comes_back_as_recorded(deployed):
    up("--max-instances", "5", "--connector-max-instances", "4")
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    assert recorded(deployed)["max_instances"] == 5
    up()
    assert live_max_instances() == 5
    assert deployed.vpc_connectors[CONNECTOR]["maxInstances"] == 4
    result = cli("down", "--delete-data", "--yes")
    assert result.exit_code == 0, result.output
    assert deployed.secret_value(SETTINGS_SECRET) is None
