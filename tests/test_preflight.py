"""Preflight: before `up`, `step`, `down` or `status` changes or reads anything, one message lists every problem
(credentials, project, billing, permissions by role, org policies) and nothing mutating is sent."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.preflight import ERROR, WARNING, run_preflight
from mlflow_gcp.steps import STEPS
from tests.helpers import ALL_APIS_ENABLED, cli, settings
from tests.server_double import build_context, forbid_non_loopback

PREFLIGHT_APIS = {"cloudresourcemanager", "cloudbilling", "orgpolicy"}
ALL_STEPS = [step.name for step in STEPS]


@pytest.fixture
def ready(fake, tmp_path, monkeypatch):
    """A project whose APIs are enabled; nothing deployed."""
    forbid_non_loopback(monkeypatch)
    build_context(tmp_path, monkeypatch)
    fake.enabled |= ALL_APIS_ENABLED | {"cloudbilling.googleapis.com"}
    return fake


def preflight(**overrides):
    config = settings(**overrides)
    return run_preflight(config, Clients(config.project), steps=ALL_STEPS)


def only_preflight_was_asked(fake) -> bool:
    # IAM: actAs missing on the project is asked of the service accounts themselves.
    return {r.api for r in fake.log} <= PREFLIGHT_APIS | {"iam"} and not fake.mutating_requests()


def asked_permissions(fake) -> list[str]:
    request = next(r for r in fake.log if r.path.endswith(":testIamPermissions"))
    return json.loads(request.body)["permissions"]


def test_the_fake_defaults_pass(ready):
    assert preflight().findings == []
    assert {r.api for r in ready.log} == PREFLIGHT_APIS and not ready.mutating_requests()


def test_a_fresh_project_passes_with_warnings_only(fake):
    """Resource Manager not enabled yet: the apis step enables it, so nothing is stopped."""
    report = preflight()
    assert report.ok
    # One line per API that is not enabled, not one per check.
    assert sorted(f.message for f in report.warnings) == [
        "Billing: not checked, cloudbilling.googleapis.com is not enabled (`gcloud services enable "
        "cloudbilling.googleapis.com` enables it).",
        "Project and permissions: not checked, cloudresourcemanager.googleapis.com is not enabled (the apis step "
        "enables it).",
    ]


def test_a_missing_project_stops_up_before_any_request_of_the_steps(ready):
    ready.state["project_state"] = None
    result = cli("up")
    assert result.exit_code == 1
    assert "does not exist, or your account cannot see it" in result.output
    assert "gcloud projects list" in result.output
    assert "Summary" not in result.output and "apis " not in result.output  # no step ran, no table
    assert only_preflight_was_asked(ready)


def test_a_project_being_deleted(ready):
    ready.state["project_state"] = "DELETE_REQUESTED"
    result = cli("up")
    assert result.exit_code == 1
    assert "being deleted" in result.output and "gcloud projects undelete demo-project" in result.output
    assert only_preflight_was_asked(ready)


def test_billing_disabled(ready):
    ready.state["billing_enabled"] = False
    result = cli("up")
    assert result.exit_code == 1
    assert "Billing is not enabled" in result.output and "gcloud billing projects link demo-project" in result.output
    assert only_preflight_was_asked(ready)


def test_billing_api_not_enabled_is_a_warning(ready):
    ready.enabled.discard("cloudbilling.googleapis.com")  # not one of the APIs `up` enables
    [warning] = preflight().findings
    assert warning.severity == WARNING
    assert "`gcloud services enable cloudbilling.googleapis.com`" in warning.message


def test_billing_that_cannot_be_read_is_a_warning(ready):
    ready.fail(403, times=1, api="cloudbilling", reason="IAM_PERMISSION_DENIED", message="Permission denied.")
    report = preflight()
    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("billing", WARNING)]
    assert "could not be checked" in report.findings[0].message


def test_missing_permissions_are_listed_by_the_role_that_grants_them(ready):
    ready.state["denied_permissions"] = {
        "cloudsql.instances.create",
        "cloudsql.users.update",
        "run.services.create",
        "iam.serviceAccounts.actAs",
    }
    result = cli("up")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "roles/cloudsql.admin: cloudsql.instances.create, cloudsql.users.update" in text
    assert "roles/run.admin: run.services.create" in text
    assert "roles/iam.serviceAccountUser: iam.serviceAccounts.actAs" in text
    assert "roles/storage.admin" not in text
    assert only_preflight_was_asked(ready)
    asked = asked_permissions(ready)
    assert "cloudsql.instances.create" in asked and "run.services.create" in asked
    assert "compute.networks.create" not in asked  # the default network is not created


def test_a_step_asks_only_for_its_own_permissions(ready):
    ready.state["denied_permissions"] = {"cloudsql.instances.create"}
    result = cli("step", "service-account")
    assert result.exit_code == 0, result.output
    asked = asked_permissions(ready)
    assert set(asked) == {
        "iam.serviceAccounts.create",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.getIamPolicy",
        "iam.serviceAccounts.setIamPolicy",
    }


def test_a_custom_network_needs_the_permission_to_create_it(ready):
    ready.state["denied_permissions"] = {"compute.networks.create"}
    report = preflight(network="mlflow-net")
    assert [f.check for f in report.errors] == ["permissions"]
    assert "roles/compute.networkAdmin: compute.networks.create" in report.errors[0].message


def test_an_org_policy_that_blocks_public_ingress(ready):
    ready.state["org_policies"] = {"run.allowedIngress": {"rules": [{"values": {"allowedValues": ["internal"]}}]}}
    result = cli("up")
    assert result.exit_code == 1
    assert "run.allowedIngress" in result.output
    assert only_preflight_was_asked(ready)


@pytest.mark.parametrize(
    ("constraint", "spec", "severity"),
    [
        ("gcp.resourceLocations", {"rules": [{"values": {"allowedValues": ["us-central1"]}}]}, ERROR),
        ("gcp.resourceLocations", {"rules": [{"values": {"allowedValues": ["in:europe-west1-locations"]}}]}, None),
        ("gcp.resourceLocations", {"rules": [{"values": {"allowedValues": ["in:eu-locations"]}}]}, WARNING),
        ("run.allowedVPCEgress", {"rules": [{"values": {"allowedValues": ["all-traffic"]}}]}, ERROR),
        ("run.allowedIngress", {"rules": [{"denyAll": True}]}, ERROR),
        ("run.allowedIngress", {"rules": [{"allowAll": True}]}, None),
        ("iam.disableServiceAccountCreation", {"rules": [{"enforce": True}]}, WARNING),
        ("iam.disableServiceAccountCreation", {"rules": [{"enforce": False}]}, None),
        ("compute.restrictVpcPeering", {"rules": [{"denyAll": True}]}, ERROR),
        ("compute.restrictVpcPeering", {"rules": [{"values": {"allowedValues": ["under:organizations/1"]}}]}, WARNING),
        # A rule under a tag condition cannot be judged from here: it is not taken as blocking.
        (
            "run.allowedIngress",
            {"rules": [{"denyAll": True, "condition": {"expression": "resource.matchTag('a', 'b')"}}]},
            None,
        ),
    ],
)
def test_org_policy_verdicts(ready, constraint, spec, severity):
    ready.state["org_policies"] = {constraint: spec}
    findings = [f for f in preflight().findings if f.check == "org policy"]
    assert [f.severity for f in findings] == ([severity] if severity else [])


def test_org_policies_that_cannot_be_read_are_a_warning(ready):
    ready.fail(403, times=100, api="orgpolicy", reason="IAM_PERMISSION_DENIED", message="Permission denied.")
    report = preflight()
    assert report.ok
    assert [(f.check, f.severity) for f in report.findings] == [("org policy", WARNING)]
    assert "roles/orgpolicy.policyViewer" in report.findings[0].hint


def test_every_problem_in_one_message(ready):
    ready.state["billing_enabled"] = False
    ready.state["denied_permissions"] = {"run.services.create"}
    ready.state["org_policies"] = {"run.allowedIngress": {"rules": [{"denyAll": True}]}}
    result = cli("up")
    assert result.exit_code == 1
    assert "preflight found 3 problems" in result.output
    assert result.output.count("What to do:") == 3
    assert "Traceback" not in result.output
    assert only_preflight_was_asked(ready)


def test_skip_preflight(ready):
    ready.state["billing_enabled"] = False
    result = cli("step", "apis", "--skip-preflight")
    assert result.exit_code == 0, result.output
    assert not {r.api for r in ready.log} & {"cloudbilling", "orgpolicy"}


def test_a_dry_run_shows_the_problems_and_goes_on(ready):
    ready.state["billing_enabled"] = False
    result = cli("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Preflight:" in result.output and "Billing is not enabled" in result.output
    assert "Dry run: nothing was changed." in result.output
    assert not ready.mutating_requests()


def test_down_and_status_stop_on_a_missing_project(ready):
    ready.state["project_state"] = None
    for command in (["down", "--yes"], ["status"]):
        result = cli(*command)
        assert result.exit_code == 1
        assert "does not exist, or your account cannot see it" in result.output
    assert only_preflight_was_asked(ready)
    assert {r.api for r in ready.log} == {"cloudresourcemanager"}  # down and status check only the project


def test_expired_user_credentials_say_how_to_log_in_again(fake, tmp_path, monkeypatch):
    """An `authorized_user` ADC file whose refresh token Google no longer accepts (400 invalid_grant). google-auth
    ignores a `token_uri` in such a file, so its token endpoint is pointed at the fake."""
    import google.oauth2.credentials

    forbid_non_loopback(monkeypatch)
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", f"{fake.url}/oauth2/token")
    monkeypatch.delenv("MLFLOW_GCP_API_ENDPOINT")
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "client.apps.googleusercontent.com",
                "client_secret": "not-a-secret",
                "refresh_token": "expired-refresh-token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    result = cli("up")
    assert result.exit_code == 1
    assert "login has expired" in result.output and "gcloud auth application-default login" in result.output
    assert [(r.api, r.path) for r in fake.log] == [("oauth2", "/token")]  # nothing else was asked
    assert "expired-refresh-token" not in result.output


def test_no_credentials(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_GCP_API_ENDPOINT")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    result = cli("up")
    assert result.exit_code == 1
    assert "No Google Cloud credentials" in result.output and "gcloud auth application-default login" in result.output
    assert "Summary" not in result.output
    assert fake.log == []


def test_down_asks_for_the_permissions_it_deletes_with(ready):
    ready.state["denied_permissions"] = {"run.services.delete", "cloudsql.instances.delete"}
    result = cli("down", "--yes")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "roles/run.admin: run.services.delete" in text and "cloudsql.instances.delete" not in text
    assert "cloudsql.instances.delete" not in asked_permissions(ready)  # the data is kept: not needed
    assert only_preflight_was_asked(ready)

    ready.clear_log()
    result = cli("down", "--delete-data", "--yes")
    assert result.exit_code == 1
    assert "roles/cloudsql.admin: cloudsql.instances.delete" in " ".join(result.output.split())
    assert {"storage.buckets.delete", "secretmanager.secrets.delete"} <= set(asked_permissions(ready))
    assert only_preflight_was_asked(ready)


def make_account(fake, account_id: str, *, act_as: bool) -> str:
    """A service account as the tool makes it; with `act_as`, the caller holds roles/iam.serviceAccountUser on the
    account itself (least privilege: not on the project)."""
    from tests.fake_gcp.apis.cloudresourcemanager import OWNER
    from tests.fake_gcp.server import PROJECT

    iam = Clients(PROJECT).iam()
    iam.projects().serviceAccounts().create(name=f"projects/{PROJECT}", body={"accountId": account_id}).execute()
    email = f"{account_id}@{PROJECT}.iam.gserviceaccount.com"
    if act_as:
        role = "roles/iam.serviceAccountUser"
        fake.set_policy(fake.service_account(email)["name"], {"bindings": [{"role": role, "members": [OWNER]}]})
    return email


def test_act_as_held_on_the_two_accounts_themselves_passes(ready):
    ready.state["denied_permissions"] = {"iam.serviceAccounts.actAs"}  # not on the project
    make_account(ready, "run-mlflow", act_as=True)
    make_account(ready, "mlflow-build", act_as=True)
    assert preflight().findings == []
    ready.log.clear()
    result = cli("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "iam.serviceAccounts.actAs" not in result.output


def test_act_as_missing_on_one_account_names_it(ready):
    ready.state["denied_permissions"] = {"iam.serviceAccounts.actAs"}
    make_account(ready, "run-mlflow", act_as=True)
    build = make_account(ready, "mlflow-build", act_as=False)
    text = " ".join(" ".join(f.message for f in preflight().errors).split())
    assert f"roles/iam.serviceAccountUser: iam.serviceAccounts.actAs (on the project, or on each of {build})" in text
    # A step that acts as the server's account alone passes.
    config = settings()
    report = run_preflight(config, Clients(config.project), steps=["deploy"])
    assert report.errors == []


def test_act_as_on_accounts_not_made_yet_needs_the_project_grant(ready):
    ready.state["denied_permissions"] = {"iam.serviceAccounts.actAs"}
    errors = preflight().errors
    assert len(errors) == 1 and "iam.serviceAccounts.actAs" in errors[0].message
