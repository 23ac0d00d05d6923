"""Exactly once after `up`: `credentials rotate` and `down` converge when Google applies a mutating request and its
answer is lost (a 503 or a reset connection after the commit; tests/fake_gcp/server.py LostAnswer).

rotate: exit 0, the service runs with the password the database has, `credentials` prints a login that works,
one new version per rotated secret, no version left enabled but unapplied, and a second `up` changes nothing.
down: a delete whose answer is lost (the retry meets 404) is a success: exit 0, nothing left that `down` was
meant to delete, and a second `down` has nothing to delete."""

from __future__ import annotations

import pytest

from mlflow_gcp.config import SECRET_MYSQL
from tests.helpers import cli
from tests.server_double import deploy, pin_secret_versions
from tests.test_credentials import ROTATE_SECRETS, _pinned_value, db_password, pinned, team_login_works, versions
from tests.test_lost_answers import sent

# Every mutating method `credentials rotate` sends on a deployment whose service pins its versions.
ROTATE_METHODS = [
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}:addVersion"),
    ("secretmanager", "PATCH", "/v1/projects/{project}/secrets/{secret}"),
    ("sqladmin", "PUT", "/v1/projects/{project}/instances/{instance}/users"),
    ("run", "PATCH", "/v2/projects/{project}/locations/{location}/services/{service}"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}/versions/{version}:disable"),
]

# Every mutating method `down --yes` sends on a deployment ...
DOWN_METHODS = [
    ("run", "DELETE", "/v2/projects/{project}/locations/{location}/services/{service}"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}:setIamPolicy"),
    ("artifactregistry", "DELETE", "/v1/projects/{project}/locations/{location}/repositories/{repository}"),
    (
        "artifactregistry",
        "DELETE",
        "/v1/projects/{project}/locations/{location}/repositories/{repository}/packages/{package}/versions/{version=**}",
    ),
    ("artifactregistry", "POST", "/v1/projects/{project}/locations/{location}/repositories/{repository}:setIamPolicy"),
    ("cloudresourcemanager", "POST", "/v1/projects/{project}:setIamPolicy"),
    ("iam", "DELETE", "/v1/projects/{project}/serviceAccounts/{account}"),
    ("iam", "POST", "/v1/projects/{project}/serviceAccounts/{account}:setIamPolicy"),
    ("storage", "DELETE", "/storage/v1/b/{bucket}/o/{object=**}"),
    ("storage", "DELETE", "/storage/v1/b/{bucket}"),  # the Cloud Build staging bucket
    ("storage", "PUT", "/storage/v1/b/{bucket}/iam"),
    ("vpcaccess", "DELETE", "/v1/projects/{project}/locations/{location}/connectors/{connector}"),
]

# ... and what `down --delete-data --yes` sends besides (the artifact bucket's delete: DOWN_METHODS' route).
DELETE_DATA_METHODS = [
    ("secretmanager", "DELETE", "/v1/projects/{project}/secrets/{secret}"),
    ("sqladmin", "PATCH", "/v1/projects/{project}/instances/{instance}"),
    ("sqladmin", "DELETE", "/v1/projects/{project}/instances/{instance}"),
    ("sqladmin", "DELETE", "/v1/projects/{project}/instances/{instance}/databases/{database}"),
]
ARTIFACT_BUCKET_DELETE = ("storage", "DELETE", "/storage/v1/b/{bucket}", "-mlflow-artifacts")


@pytest.fixture
def double(fake, tmp_path, monkeypatch):
    """A deployment made by `up`, its service answering through the MLflow double, pinning its secret versions."""
    fake.iam_invisible_for = 0  # lost answers only (see tests/test_lost_answers.py)
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "5")
    server = deploy(fake, tmp_path, monkeypatch)
    yield server
    server.stop()


# -- rotate --------------------------------------------------------------------------------------------------
def test_the_list_covers_every_mutating_method_rotate_sends(fake, double):
    pin_secret_versions(fake)
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    assert sent(fake) == set(ROTATE_METHODS)


def assert_rotated_once(fake, double) -> None:
    for secret_id in ROTATE_SECRETS:
        assert versions(fake, secret_id) == [("1", "DISABLED"), ("2", "ENABLED")], (
            secret_id,
            versions(fake, secret_id),
        )
        assert pinned(fake, secret_id) == "2"
        annotations = fake.state["secrets"][f"projects/demo-project/secrets/{secret_id}"].get("annotations", {})
        assert annotations.get("mlflow-gcp-applied-version") == "2", annotations
        assert "mlflow-gcp-rotating-to" not in annotations, annotations
    assert _pinned_value(fake, SECRET_MYSQL) == f"root:{db_password(fake)}"
    assert double.database_ok()
    assert team_login_works()


@pytest.mark.parametrize("how", ["503", "reset"])
@pytest.mark.parametrize("api,method,route", ROTATE_METHODS, ids=lambda v: v)
def test_rotate_converges_when_an_answer_is_lost(fake, double, api, method, route, how):
    pin_secret_versions(fake)
    lost = fake.lose_answer(how, api=api, method=method, route=route)
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    assert_rotated_once(fake, double)
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []
    assert_rotated_once(fake, double)


# -- down ----------------------------------------------------------------------------------------------------
DOWN_CASES = [(("down", "--yes"), *m, None) for m in DOWN_METHODS] + [
    (("down", "--delete-data", "--yes"), *m, None) for m in DELETE_DATA_METHODS
]
DOWN_CASES.append((("down", "--delete-data", "--yes"), *ARTIFACT_BUCKET_DELETE))


def test_the_lists_cover_every_mutating_method_down_sends(fake, double):
    result = cli("down", "--yes")
    assert result.exit_code == 0, result.output
    assert sent(fake) == set(DOWN_METHODS)
    fake.clear_log()
    result = cli("down", "--delete-data", "--yes")
    assert result.exit_code == 0, result.output
    assert sent(fake) == set(DELETE_DATA_METHODS) | {ARTIFACT_BUCKET_DELETE[:3]}


def _case_id(value) -> str:
    return " ".join(value) if isinstance(value, tuple) else str(value or "")


@pytest.mark.parametrize("how", ["503", "reset"])
@pytest.mark.parametrize("args,api,method,route,path_contains", DOWN_CASES, ids=_case_id)
def test_down_converges_when_an_answer_is_lost(fake, double, args, api, method, route, path_contains, how):
    lost = fake.lose_answer(how, api=api, method=method, route=route, path_contains=path_contains)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    fake.clear_log()
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "Nothing to delete" in again.stdout, again.stdout
    assert fake.mutating_requests() == []


# -- rotate's roll-back --------------------------------------------------------------------------------------
DESTROY = ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}/versions/{version}:destroy")


@pytest.mark.parametrize("how", ["503", "reset"])
def test_a_rolled_back_rotation_destroys_its_versions_when_an_answer_is_lost(fake, double, how):
    # Destroyed is final: destroying again answers 400 FAILED_PRECONDITION, which must not be taken for a failure.
    pin_secret_versions(fake)
    double.admin_frozen = True  # the new login is refused: rotate rolls back
    lost = fake.lose_answer(how, api=DESTROY[0], method=DESTROY[1], route=DESTROY[2])
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    assert lost.times == 0
    text = " ".join(result.stderr.split())
    assert "Not rolled back" not in text, text
    assert text.count("destroyed (never used)") == len(ROTATE_SECRETS), text
    for secret_id in ROTATE_SECRETS:
        assert versions(fake, secret_id) == [("1", "ENABLED"), ("2", "DESTROYED")], secret_id
    assert DESTROY in sent(fake)
    double.admin_frozen = False
    assert cli("credentials", "rotate").exit_code == 0
    assert team_login_works()


# -- Secret Manager's list catching up -----------------------------------------------------------------------
@pytest.mark.parametrize("lost", [None, "503", "reset"])
def test_rotate_then_up_while_the_version_list_is_stale(fake, double, lost):
    # Listing versions is eventually consistent: for a while after the add, lists leave the new version out
    # (tests/fake_gcp/apis/secretmanager.py). Neither the add's read-back nor `up` reading the record may take
    # that for "no such version": no second version, no new password.
    pin_secret_versions(fake)
    fake.secret_list_stale_reads = 20  # every list of this rotation and the next `up`
    if lost:
        fake.lose_answer(lost, api="secretmanager", route=ROTATE_METHODS[0][2], times=len(ROTATE_SECRETS))
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    assert_rotated_once(fake, double)
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []
    assert_rotated_once(fake, double)
