"""`mlflow-gcp cost`: the monthly estimate from Google's price catalog (answered by the fake in the catalog's
shapes, with SKUs of other regions and engines that must not be picked), from the shipped table when the catalog
is refused, and the one line `up --dry-run` ends with."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.config import Settings
from mlflow_gcp.cost.estimate import HOURS_PER_MONTH, estimate
from mlflow_gcp.cost.price_table import PRICES, TABLE_DATE
from tests.helpers import ALL_APIS_ENABLED, cli

BILLING = "cloudbilling.googleapis.com"


def cost_json(*args: str) -> dict:
    result = cli("cost", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def line(report: dict, starts: str) -> dict:
    return next(item for item in report["lines"] if item["item"].startswith(starts))


def test_catalog_prices_of_the_region_are_used(fake):
    fake.enabled |= ALL_APIS_ENABLED | {BILLING}
    report = cost_json()
    database = line(report, "Cloud SQL db-f1-micro")
    assert database["source"] == "catalog"
    assert database["monthly"] == round(0.0110 * HOURS_PER_MONTH, 2)  # Belgium's MySQL micro, not Americas'
    connector = line(report, "VPC connector")
    assert connector["monthly"] == round(2 * HOURS_PER_MONTH * (0.25 * 0.023982 + 1 * 0.003214), 2)
    assert line(report, "Cloud SQL storage")["monthly"] == round(10 * 0.187, 2)
    assert report["prices"]["catalog_problem"] == ""
    assert report["monthly_total"] == pytest.approx(sum(i["monthly"] or 0 for i in report["lines"]), abs=0.05)
    # Paid tier of the request price, not the free first tier.
    assert report["per_1000_requests"] == pytest.approx(1000 * (0.0000004 + 0.1 * 0.000024 + 0.1 * 0.0000025), abs=1e-4)
    assert all(r.method == "GET" for r in fake.requests())


def test_a_refused_catalog_falls_back_to_the_shipped_table_and_says_so(fake):
    fake.enabled |= ALL_APIS_ENABLED  # the Cloud Billing API is not enabled
    result = cli("cost")
    assert result.exit_code == 0, result.output
    assert f"shipped table of {TABLE_DATE}" in result.output
    assert "cloudbilling.googleapis.com" in result.output
    report = cost_json()
    assert {item["source"] for item in report["lines"]} == {"table"}
    assert line(report, "Cloud SQL db-f1-micro")["monthly"] == round(PRICES["sql.f1_micro"][0] * HOURS_PER_MONTH, 2)
    assert "not enabled" in report["prices"]["catalog_problem"]


def test_a_partial_catalog_keeps_table_prices_for_what_it_lacks(fake):
    fake.enabled |= ALL_APIS_ENABLED | {BILLING}
    fake.catalog_skus["Compute Engine"] = []
    report = cost_json()
    assert line(report, "Cloud SQL db-f1-micro")["source"] == "catalog"
    assert line(report, "VPC connector")["source"] == "table"


def test_offline_sends_no_request(fake):
    report = cost_json("--offline")
    assert fake.requests() == []
    assert report["lines"] and report["monthly_total"] > 0


def test_settings_change_the_estimate():
    base = estimate(Settings(project="p-123456"), storage_gb=10)
    bigger = estimate(Settings(project="p-123456", db_tier="db-custom-2-7680", min_instances=1), storage_gb=500)
    assert bigger.monthly_total_usd > base.monthly_total_usd
    sql = bigger.lines[0]
    vcpu, ram = PRICES["sql.vcpu"][0], PRICES["sql.ram"][0]
    assert sql.monthly_usd == pytest.approx(HOURS_PER_MONTH * (2 * vcpu + 7.5 * ram))
    warm = next(line for line in bigger.lines if line.item.startswith("Cloud Run"))
    assert warm.monthly_usd > 0
    unknown = estimate(Settings(project="p-123456", db_tier="db-perf-optimized-N-2"), storage_gb=1)
    assert unknown.lines[0].monthly_usd is None and "not estimated" in unknown.lines[0].note


def test_the_shipped_table_gives_a_plausible_default(fake):
    report = cost_json("--offline")
    # db-f1-micro, 2 e2-micro connector instances, scale to zero: about $20-25 a month at list prices.
    assert 15 < report["monthly_total"] < 35
    assert report["prices"]["table_date"] == TABLE_DATE and report["prices"]["table_source"]


def test_bad_storage_size_is_a_clear_error(fake):
    result = cli("cost", "--storage-gb", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_up_dry_run_ends_with_the_estimate(fake, container_dir):
    fake.enabled |= ALL_APIS_ENABLED
    result = cli("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Estimated cost: about $" in result.output and "/month" in result.output
    assert not fake.mutating_requests()


def test_without_credentials_the_shipped_table_answers_with_a_note(monkeypatch, tmp_path):
    """No --offline needed: no credentials is the shipped table and the settings as given, said on one line."""
    monkeypatch.delenv("MLFLOW_GCP_API_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    result = cli("cost", "--json", "--project", "demo-project")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["prices"]["catalog_problem"] == "not read (no Google Cloud credentials)"
    assert {item["source"] for item in report["lines"]} == {"table"}
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note: no Google Cloud credentials")]
    assert len(notes) == 1 and "gcloud auth application-default login" in result.stderr


def test_the_connector_share_that_direct_egress_removes_is_said(fake):
    result = cli("cost", "--offline")
    assert result.exit_code == 0, result.output
    report = estimate(Settings(project="demo-project"), storage_gb=10)
    share, total = report.connector_usd, report.monthly_total_usd
    assert share > 0 and share == line(cost_json("--offline"), "VPC connector")["monthly"]
    text = " ".join(result.stdout.split())
    said = f"--vpc-egress direct (Direct VPC egress, no connector) removes the connector's ${share:,.2f} of the "
    assert said + f"${total:,.2f}." in text
    direct = cli("cost", "--offline", "--vpc-egress", "direct")
    assert "removes the connector" not in direct.stdout
    assert cost_json("--offline", "--vpc-egress", "direct")["connector_share"] == 0
