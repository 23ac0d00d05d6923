"""The image build as Google runs it on a new project (issue 7): the build account's grants apply minutes after
they are made, and the caller must be allowed to act as that account. Both are options of the fake
(tests/fake_gcp/apis/cloudbuild.py)."""

from __future__ import annotations

import pytest

from tests.fake_gcp.apis.cloudresourcemanager import OWNER
from tests.fake_gcp.server import PROJECT
from tests.helpers import ALL_APIS_ENABLED, cli

BUILD_ACCOUNT = f"mlflow-build@{PROJECT}.iam.gserviceaccount.com"
STAGING = f"{PROJECT}_cloudbuild"


@pytest.fixture
def ready(fake, container_dir):
    fake.enabled |= ALL_APIS_ENABLED
    fake.secure_by_default_org = True  # the build can do nothing its own grants do not allow
    return fake


def test_a_build_denied_by_grants_not_applied_yet_is_built_again_one_at_a_time(ready):
    fake = ready
    fake.grant_propagation = 2  # each new grant is refused by the first 2 builds that need it
    result = cli("step", "image")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "waiting for the build account's grants to apply" in output
    assert "(at most 7 min)" in output
    builds = fake.builds()
    assert [b["status"] for b in builds] == ["FAILURE", "FAILURE", "SUCCESS"]
    assert "Permission 'storage.objects.get' denied" in builds[0]["statusDetail"]
    assert builds[0]["failureInfo"]["type"] == "FETCH_SOURCE_FAILED"
    assert fake.state["most_builds_at_once"] == 1  # the next build only once the last one has failed
    fake.clear_log()
    assert cli("step", "image").exit_code == 0
    assert fake.mutating_requests() == []


def test_a_build_grant_that_never_applies_ends_in_the_error_naming_it(ready, short_waits):
    fake = ready
    fake.grant_propagation = 10**6  # never, within the bound (7 min, scaled to 4.2 s)
    result = cli("step", "image")
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"its service account {BUILD_ACCOUNT} was denied the permission to read the build source" in output
    assert f"roles/storage.objectViewer on gs://{STAGING}" in output
    assert "had not applied after that" in output
    assert "Traceback" not in result.output
    builds = fake.builds()
    assert len(builds) >= 3 and {b["status"] for b in builds} == {"FAILURE"}
    assert fake.state["most_builds_at_once"] == 1


def test_a_push_denied_by_the_repository_grant_not_applied_yet_names_that_grant(ready, short_waits):
    fake = ready
    fake.grant_propagation = 10**6
    bucket_grant = (f"projects/_/buckets/{STAGING}", "roles/storage.objectViewer", f"serviceAccount:{BUILD_ACCOUNT}")
    original = fake.grant_applied
    fake.grant_applied = lambda key, role, member: (key, role, member) == bucket_grant or original(key, role, member)
    result = cli("step", "image")
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "was denied the permission to push the image" in output
    assert "roles/artifactregistry.writer on Artifact Registry repository" in output


def test_a_caller_who_may_not_act_as_the_build_account_is_told_which_role_to_get(ready):
    fake = ready
    fake.state["denied_permissions"] = {"iam.serviceAccounts.actAs"}
    # Preflight finds it first, for the image step alone too.
    result = cli("step", "image")
    assert result.exit_code == 1
    assert "roles/iam.serviceAccountUser: iam.serviceAccounts.actAs" in " ".join(result.output.split())
    assert fake.builds() == []

    result = cli("step", "image", "--skip-preflight")
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"Cloud Build refused to start the image build as {BUILD_ACCOUNT}" in output
    assert "caller does not have permission to act as service account" in output
    assert f"roles/iam.serviceAccountUser on {BUILD_ACCOUNT}" in output
    assert "roles/owner" in output
    assert "Traceback" not in result.output
    assert fake.builds() == []


def test_fake_a_grant_on_the_build_account_itself_lets_the_caller_act_as_it(ready):
    fake = ready
    fake.state["denied_permissions"] = {"iam.serviceAccounts.actAs"}
    assert cli("step", "image", "--skip-preflight").exit_code == 1
    account = fake.service_account(BUILD_ACCOUNT)
    fake.set_policy(account["name"], {"bindings": [{"role": "roles/iam.serviceAccountUser", "members": [OWNER]}]})
    result = cli("step", "image", "--skip-preflight")
    assert result.exit_code == 0, result.output
    assert [b["status"] for b in fake.builds()] == ["SUCCESS"]
