"""What a user sees when something is wrong: one paragraph, what to do, an exit code, no traceback."""

from __future__ import annotations

import pytest

from tests.helpers import cli

BAD_FLAGS = [
    ["--project", "Bad_Project"],
    ["--project", "abc"],
    ["--region", "mars"],
    ["--bucket", "Has_Upper"],
    ["--bucket", "x"],
    ["--bucket", "googlebucket"],
    ["--bucket", "10.0.0.1"],
    ["--connector-range", "10.8.0.0/27"],
    ["--connector-range", "10.8.0.0"],
    ["--connector-range", "100.8.0.0/28"],
    ["--db-instance", "has_underscore"],
    ["--connector", "UPPER"],
    ["--service-account", "x"],
    ["--mlflow-username", "a:b"],
    ["--db-name", "bad-name"],
    ["--db-tier", "large"],
    ["--memory", "lots"],
    ["--max-instances", "0"],
    ["--service", "-leading-hyphen"],
]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=lambda f: " ".join(f))
def test_bad_input_is_refused_before_any_request(fake, flags):
    result = cli("up", *flags)
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output
    assert "Traceback" not in result.output
    assert fake.log == []


def test_missing_project_says_how_to_give_it(fake, monkeypatch):
    monkeypatch.delenv("MLFLOW_GCP_PROJECT")
    result = cli("up")
    assert result.exit_code == 2
    assert "--project" in result.output and "MLFLOW_GCP_PROJECT" in result.output
    assert fake.log == []


def test_no_credentials_says_how_to_log_in(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_GCP_API_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    result = cli("step", "apis", "--project", "demo-project")
    assert result.exit_code == 1
    assert "gcloud auth application-default login" in result.output
    assert "Traceback" not in result.output


def test_permission_denied_names_the_permission(fake):
    fake.fail(403, times=100, api="serviceusage", reason="IAM_PERMISSION_DENIED",
              metadata={"permission": "serviceusage.services.list"}, message="Permission denied.")
    result = cli("step", "apis")
    assert result.exit_code == 1
    assert "serviceusage.services.list" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(fake):
    fake.fail(403, times=100, api="serviceusage", reason="IAM_PERMISSION_DENIED", message="Permission denied.")
    result = cli("--debug", "step", "apis")
    assert result.exit_code == 1
    assert "Traceback" in result.output


def test_billing_disabled_says_where_to_enable_it(fake):
    fake.fail(403, times=100, api="serviceusage", reason="BILLING_DISABLED", message="Billing is disabled.")
    result = cli("step", "apis")
    assert result.exit_code == 1
    assert "billing" in result.output.lower()


def test_transient_errors_are_retried(fake):
    fake.fail(503, times=1, api="serviceusage")
    fake.fail(429, times=1, api="serviceusage")
    result = cli("step", "apis")
    assert result.exit_code == 0, result.output
