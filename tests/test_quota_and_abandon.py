"""The quota project of user credentials, and `down --delete-data` leaving the private services connection
(issue 7 items 8 and 10)."""

from __future__ import annotations

import google.auth
import pytest
from google.oauth2.credentials import Credentials

from mlflow_gcp.gcp.clients import Clients
from tests.fake_gcp.server import PROJECT
from tests.helpers import ALL_APIS_ENABLED, cli


def test_user_credentials_bill_the_target_project_not_their_own_quota_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_GCP_API_ENDPOINT", raising=False)
    user = Credentials(token="token", quota_project_id="someone-elses-project")
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (user, "someone-elses-project"))
    credentials = Clients(PROJECT).credentials
    assert credentials.quota_project_id == PROJECT
    headers: dict[str, str] = {}
    credentials.apply(headers)
    assert headers["x-goog-user-project"] == PROJECT


def up_with_cloud_run_disabled_for(fake, consumer: str, message: str = "Injected fault."):
    """`up` where Cloud Run answers SERVICE_DISABLED for good (its bound is waited out), checked against the
    project `consumer`, the one Google counted the call against."""
    fake.enabled |= ALL_APIS_ENABLED
    fake.fail(
        403,
        api="run",
        times=1000,
        reason="SERVICE_DISABLED",
        metadata={"service": "run.googleapis.com", "consumer": consumer},
        message=message,
    )
    return cli("up")


def test_an_error_checked_against_another_consumer_project_says_so(short_waits, container_dir):
    result = up_with_cloud_run_disabled_for(
        short_waits,
        "projects/987654321098",
        message="Cloud Run Admin API has not been used in project 987654321098 before or it is disabled.",
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "against project 987654321098, not demo-project" in text
    assert "gcloud auth application-default set-quota-project demo-project" in text


def test_an_error_of_the_target_project_itself_does_not_blame_the_quota_project(short_waits, container_dir):
    result = up_with_cloud_run_disabled_for(short_waits, "projects/123456789012")  # the fake's number
    assert result.exit_code == 1
    assert "set-quota-project" not in result.output


@pytest.fixture
def deployed(fake, container_dir):
    fake.enabled |= ALL_APIS_ENABLED
    assert cli("up").exit_code == 0
    return fake


def test_delete_data_leaves_the_private_services_connection_and_says_so(deployed):
    fake = deployed
    fake.sn_producer_lingers = True  # Cloud SQL stays a producer for days after its instance is gone
    fake.clear_log()
    result = cli("down", "--delete-data", "--yes")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "private services connection on default was left in place" in text
    assert "gcloud services vpc-peerings delete" in text
    assert "hashicorp/terraform-provider-google#16275" in text
    assert fake.sql_instances == {} or "mlflow-tracking-database" not in fake.sql_instances
    assert "default" in fake.sn_connections  # left, with its range
    assert not [r for r in fake.mutating_requests() if r.api == "servicenetworking"]
    fake.clear_log()
    again = cli("down", "--delete-data", "--yes")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []
