"""`--vpc-egress direct` against the fake: the service sends private-range traffic through a network interface on
a subnet (the auto-mode network's own, or one the tool makes on a custom network), no connector is made, and a
switch from the connector rolls out the new revision before it deletes the connector this deployment used."""

from __future__ import annotations

import json

import pytest

from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

REGION = "europe-west1"
CONNECTOR = f"projects/{PROJECT}/locations/{REGION}/connectors/vpc-connector-mlflow"
SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/mlflow"
DIRECT = ("--vpc-egress", "direct")


def text(result) -> str:
    return " ".join(result.output.replace("│", " ").split())


def service_vpc(fake) -> dict:
    return fake.state["run_services"][SERVICE]["template"]["vpcAccess"]


def test_direct_on_the_default_network_uses_its_regional_subnet_and_makes_no_connector(fake, container_dir):
    result = cli("up", *DIRECT)
    assert result.exit_code == 0, result.output
    assert fake.state.get("vpc_connectors", {}) == {}
    vpc = service_vpc(fake)
    assert vpc["networkInterfaces"] == [{"network": "default", "subnetwork": "default"}]
    assert vpc["egress"] == "PRIVATE_RANGES_ONLY"
    assert not vpc.get("connector")
    assert not any(r.method == "POST" and "subnetworks" in r.path for r in fake.mutating_requests())

    fake.clear_log()
    again = cli("up", *DIRECT)
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


def test_direct_on_a_custom_network_makes_a_subnet_clear_of_the_other_ranges(fake, container_dir):
    result = cli("up", *DIRECT, "--network", "team-net")
    assert result.exit_code == 0, result.output
    subnet = fake.compute_subnetworks[f"{REGION}/mlflow-direct-egress"]
    assert subnet["ipCidrRange"] == "10.8.64.0/26"
    assert subnet["network"].endswith("/global/networks/team-net")
    assert fake.state.get("vpc_connectors", {}) == {}
    assert service_vpc(fake)["networkInterfaces"] == [{"network": "team-net", "subnetwork": "mlflow-direct-egress"}]


def test_a_range_taken_by_a_live_subnet_is_refused_before_any_subnet_is_made(fake, container_dir):
    fake.compute_networks["team-net"] = fake.compute_new_network("team-net", auto=False)
    fake.compute_add_subnetwork("other", "10.8.64.0/24", network="team-net")
    result = cli("up", *DIRECT, "--network", "team-net")
    assert result.exit_code != 0
    assert "overlaps the subnet other (10.8.64.0/24)" in text(result)
    assert "--egress-subnet-range" in result.output
    assert f"{REGION}/mlflow-direct-egress" not in fake.compute_subnetworks


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--vpc-egress", "nat"), "must be 'connector' or 'direct'"),
        ((*DIRECT, "--egress-subnet-range", "10.8.64.0/28"), "/26 or larger"),
        ((*DIRECT, "--egress-subnet-range", "10.8.0.0/24"), "overlaps the connector range"),
    ],
)
def test_bad_egress_settings_are_refused_before_any_request(fake, flags, message):
    result = cli("up", *flags)
    assert result.exit_code == 2
    assert message in text(result)
    assert fake.mutating_requests() == []


@pytest.fixture
def on_connector(deployed):
    assert CONNECTOR in deployed.state["vpc_connectors"]


def test_switch_rolls_out_the_new_revision_before_deleting_the_connector(fake, on_connector):
    plan = cli("up", *DIRECT, "--dry-run", "--wide")
    assert plan.exit_code == 0, plan.output
    assert fake.mutating_requests() == []
    assert "new revision" in text(plan)
    assert "deleted once the service's new revision" in text(plan)

    status = cli("status", *DIRECT)
    assert "unused VPC connector vpc-connector-mlflow" in text(status)

    result = cli("up", *DIRECT)
    assert result.exit_code == 0, result.output
    order = [
        ("run" if r.api == "run" else "connector")
        for r in fake.mutating_requests()
        if (r.api == "run" and r.method == "PATCH") or (r.api == "vpcaccess" and r.method == "DELETE")
    ]
    assert order == ["run", "connector"]
    assert fake.state["vpc_connectors"] == {}
    vpc = service_vpc(fake)
    assert vpc["networkInterfaces"] == [{"network": "default", "subnetwork": "default"}]
    assert not vpc.get("connector")

    fake.clear_log()
    assert cli("up", *DIRECT).exit_code == 0
    assert fake.mutating_requests() == []


def test_a_failed_rollout_keeps_the_connector(fake, on_connector):
    fake.run_fail_next_revision("Container failed to start")
    result = cli("up", *DIRECT)
    assert result.exit_code != 0
    assert CONNECTOR in fake.state["vpc_connectors"]


def test_a_connector_another_service_uses_is_kept_and_reported(fake, on_connector):
    other = dict(fake.state["run_services"][SERVICE])
    other["name"] = f"projects/{PROJECT}/locations/{REGION}/services/other-app"
    fake.state["run_services"][other["name"]] = other
    result = cli("up", *DIRECT)
    assert result.exit_code == 0, result.output
    assert CONNECTOR in fake.state["vpc_connectors"]
    status = cli("status", *DIRECT, "--json")
    assert "kept: used by other-app" in text(status)


def test_status_and_down_on_direct_with_a_custom_network(fake, container_dir):
    assert cli("up", *DIRECT, "--network", "team-net").exit_code == 0
    status = cli("status", *DIRECT, "--network", "team-net", "--json")
    assert '"egress subnet on team-net"' in status.output
    assert "mlflow-direct-egress" in status.output
    report = json.loads(status.stdout)  # the project line is on stderr
    report.pop("settings", None)  # the recorded settings name the connector setting whatever the mode
    resources = json.dumps(report)
    assert "connector" not in resources.replace("connector step", "").lower().replace('"step": "connector"', "")

    result = cli("down", *DIRECT, "--network", "team-net", "--yes")
    assert result.exit_code == 0, result.output
    assert SERVICE not in fake.state["run_services"]
    assert f"{REGION}/mlflow-direct-egress" not in fake.compute_subnetworks  # made by the tool: deleted
    assert "team-net" in fake.compute_networks  # holds the database's peering: kept without --delete-data


def test_down_on_direct_keeps_the_default_networks_own_subnet(fake, container_dir):
    assert cli("up", *DIRECT).exit_code == 0
    result = cli("down", *DIRECT, "--yes")
    assert result.exit_code == 0, result.output
    assert SERVICE not in fake.state["run_services"]
    assert f"{REGION}/default" in fake.compute_subnetworks


def test_down_in_direct_mode_before_the_switch_removes_the_connector_the_service_used(fake, on_connector):
    result = cli("down", *DIRECT, "--yes")
    assert result.exit_code == 0, result.output
    assert fake.state["vpc_connectors"] == {}
    assert SERVICE not in fake.state["run_services"]


@pytest.mark.parametrize("network", ["default", "team-net"])
def test_the_terraform_module_follows_direct_egress(fake, container_dir, tmp_path, network):
    from tests.terraform.module_reader import Module, schema_problems

    result = cli("export", "terraform", str(tmp_path / "tf"), *DIRECT, "--network", network)
    assert result.exit_code == 0, result.output
    module = Module.load(tmp_path / "tf")
    resources = module.resources()
    assert "google_vpc_access_connector.mlflow" not in resources
    vpc = resources["google_cloud_run_v2_service.mlflow"]["template"][0]["vpc_access"][0]
    interface = vpc["network_interfaces"][0]
    assert "connector" not in vpc or vpc["connector"] in ("", '""')
    assert "var.network" in str(interface["network"])
    if network == "default":
        assert "var.network" in str(interface["subnetwork"])
        assert "google_compute_subnetwork.egress" not in resources
    else:
        assert "google_compute_subnetwork.egress" in str(interface["subnetwork"])
        assert "var.egress_subnet_range" in str(resources["google_compute_subnetwork.egress"]["ip_cidr_range"])
    assert schema_problems(module) == []


def test_the_adopting_terraform_module_imports_the_egress_subnet_and_no_connector(fake, container_dir, tmp_path):
    from tests.terraform.module_reader import Module

    flags = (*DIRECT, "--network", "team-net")
    assert cli("up", *flags).exit_code == 0
    result = cli("export", "terraform", str(tmp_path / "tf"), "--import", *flags)
    assert result.exit_code == 0, result.output
    imports = Module.load(tmp_path / "tf").imports()
    assert imports["google_compute_subnetwork.egress"] == (
        f"projects/{PROJECT}/regions/{REGION}/subnetworks/mlflow-direct-egress"
    )
    assert "google_vpc_access_connector.mlflow" not in imports


def test_checkov_finds_nothing_on_the_egress_subnet(fake, container_dir, tmp_path):
    from tests.test_export_terraform import _checkov_report

    assert cli("export", "terraform", str(tmp_path / "tf"), *DIRECT, "--network", "team-net").exit_code == 0
    results = _checkov_report(tmp_path / "tf")["results"]
    subnet = "google_compute_subnetwork.egress"
    assert [c["check_id"] for c in results["failed_checks"] if c["resource"] == subnet] == []
    assert any(c["resource"] == subnet for c in results["passed_checks"])
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment") or "") > 20, skipped["check_id"]
