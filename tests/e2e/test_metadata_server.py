"""The rehearsal's metadata server answers google-auth as Cloud Run's does, on every refresh: the service account
by `default` and by e-mail (google-auth asks by e-mail once it knows it), recursive info, token, identity."""

from __future__ import annotations

import json

import google.auth.transport.requests
import pytest
import requests
from e2e_fake_google import FakeGoogle
from google.auth import jwt
from google.auth.compute_engine import _metadata, credentials

EMAIL = "run-mlflow@demo-project.iam.gserviceaccount.com"


@pytest.fixture
def metadata(tmp_path, monkeypatch):
    google = FakeGoogle(tmp_path / "gcs", "demo-bucket", EMAIL, "demo-project").start()
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", google.host)
    yield google
    google.stop()


def get(google: FakeGoogle, path: str, **params) -> requests.Response:
    return requests.get(f"{google.url}/computeMetadata/v1/{path}", params=params,
                        headers={"Metadata-Flavor": "Google"}, timeout=10)


def test_access_token_refreshes_again_by_email(metadata):
    request = google.auth.transport.requests.Request()
    creds = credentials.Credentials()
    creds.refresh(request)
    assert creds.service_account_email == EMAIL
    creds.refresh(request)  # the second refresh asks service-accounts/<email>/?recursive=true, then its token
    assert creds.token == metadata.state.access_token


def test_identity_token_for_an_audience(metadata):
    request = google.auth.transport.requests.Request()
    creds = credentials.IDTokenCredentials(request, "https://mlflow.example", use_metadata_identity_endpoint=True)
    creds.refresh(request)
    claims = jwt.decode(creds.token, verify=False)
    assert claims["aud"] == "https://mlflow.example"
    assert get(metadata, "instance/service-accounts/default/identity").status_code == 400


@pytest.mark.parametrize("account", ["default", EMAIL])
def test_service_account_keys(metadata, account):
    base = f"instance/service-accounts/{account}/"
    assert json.loads(get(metadata, base, recursive="true").text)["email"] == EMAIL
    assert get(metadata, base).text.split() == ["aliases", "email", "identity", "scopes", "token"]
    assert get(metadata, base + "email").text == EMAIL
    assert "cloud-platform" in get(metadata, base + "scopes").text
    assert get(metadata, base + "token").json()["token_type"] == "Bearer"
    listing = get(metadata, "instance/service-accounts/").text.split()
    assert listing == ["default/", f"{EMAIL}/"]
    assert get(metadata, "instance/service-accounts/someone-else@x.iam.gserviceaccount.com/token").status_code == 404


def test_refuses_requests_without_the_flavor_header(metadata):
    answer = requests.get(f"{metadata.url}/computeMetadata/v1/instance/service-accounts/default/token", timeout=10)
    assert answer.status_code == 403
