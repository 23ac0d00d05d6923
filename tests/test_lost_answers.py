"""Exactly once: Google applies a mutating request but its answer is lost (a 503 or a reset connection after the
commit). `up` still converges, with no duplicate work: one Cloud SQL instance, one version per secret, one build;
a second `up` sends no mutating request."""

from __future__ import annotations

import pytest

from tests.helpers import cli
from tests.test_credentials import double, floating  # noqa: F401 (fixtures of a deployment, for rotate)

# Every mutating method `up` sends on a new project (api, HTTP method, route); the first test keeps this complete.
MUTATING_METHODS = [
    ("serviceusage", "POST", "/v1/projects/{project}/services:batchEnable"),
    ("compute", "POST", "/compute/v1/projects/{project}/global/addresses"),
    ("servicenetworking", "POST", "/v1/services/{service}/connections"),
    ("sqladmin", "POST", "/v1/projects/{project}/instances"),
    ("sqladmin", "POST", "/v1/projects/{project}/instances/{instance}/databases"),
    ("vpcaccess", "POST", "/v1/projects/{project}/locations/{location}/connectors"),
    ("iam", "POST", "/v1/projects/{project}/serviceAccounts"),
    ("iam", "POST", "/v1/projects/{project}/serviceAccounts/{account}:setIamPolicy"),
    ("storage", "POST", "/storage/v1/b"),
    ("storage", "PUT", "/storage/v1/b/{bucket}/iam"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}:addVersion"),
    ("secretmanager", "POST", "/v1/projects/{project}/secrets/{secret}:setIamPolicy"),
    ("secretmanager", "PATCH", "/v1/projects/{project}/secrets/{secret}"),
    ("artifactregistry", "POST", "/v1/projects/{project}/locations/{location}/repositories"),
    ("artifactregistry", "POST", "/v1/projects/{project}/locations/{location}/repositories/{repository}:setIamPolicy"),
    ("cloudresourcemanager", "POST", "/v1/projects/{project}:setIamPolicy"),
    ("storage", "POST", "/upload/storage/v1/b/{bucket}/o"),
    ("cloudbuild", "POST", "/v1/projects/{project}/locations/{location}/builds"),
    ("run", "POST", "/v2/projects/{project}/locations/{location}/services"),
    # Once the server serves: the MLflow version of the schemas it made, as a label on the instance (issue 24).
    ("sqladmin", "PATCH", "/v1/projects/{project}/instances/{instance}"),
]


@pytest.fixture(autouse=True)
def no_propagation_delays(fake):
    """Lost answers only: IAM's late visibility of a new account (tests/test_google_catching_up.py) is waited out
    with a wall-clock bound, scaled down to under 2 s in tests, which dozens of `up` runs on a loaded machine could
    overrun."""
    fake.iam_invisible_for = 0


def sent(fake) -> set[tuple[str, str, str]]:
    return {(r.api, r.method, r.route) for r in fake.mutating_requests()}


def assert_one_of_each(fake) -> None:
    assert len(fake.state["sql_instances"]) == 1
    for secret, versions in fake.state["secret_versions"].items():
        assert len(versions) == 1, (secret, [v["name"] for v in versions])
    builds = [r for r in fake.mutating_requests() if r.api == "cloudbuild" and r.route.endswith("/builds")]
    assert len(builds) == 1


def test_the_list_covers_every_mutating_method_up_sends(fake, container_dir):
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert sent(fake) == set(MUTATING_METHODS)


@pytest.mark.parametrize("how", ["503", "reset"])
@pytest.mark.parametrize("api,method,route", MUTATING_METHODS, ids=lambda v: v)
def test_up_converges_when_an_answer_is_lost(fake, container_dir, api, method, route, how):
    lost = fake.lose_answer(how, api=api, method=method, route=route)
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert lost.times == 0, "the answer was never lost: the method is not sent"
    assert_one_of_each(fake)
    fake.clear_log()
    again = cli("up")
    assert again.exit_code == 0, again.output
    assert fake.mutating_requests() == []


@pytest.mark.parametrize("how", ["503", "reset", "close"])
def test_a_mysql_user_is_inserted_once(fake, container_dir, how):
    # users.insert is not idempotent (a second insert fails in MySQL): after a lost answer, the user list is read.
    # "close": a connection closed without an answer, which httplib2 (discovery clients) would resend by itself.
    route = "/v1/projects/{project}/instances/{instance}/users"
    lost = fake.lose_answer(how, api="sqladmin", method="POST", route=route)
    result = cli("up", "--db-user", "mlflow")
    assert result.exit_code == 0, result.output
    assert lost.times == 0
    inserts = [r for r in fake.mutating_requests() if r.route == route]
    assert len(inserts) == 1
    assert [u["name"] for u in fake.sql_users["mlflow-tracking-database"]].count("mlflow") == 1


@pytest.mark.parametrize("how", ["503", "reset"])
def test_rotate_adds_each_version_once(fake, double, how):  # noqa: F811
    from tests.test_credentials import ROTATE_SECRETS, versions

    fake.lose_answer(how, api="secretmanager", route="/v1/projects/{project}/secrets/{secret}:addVersion", times=2)
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    for secret_id in ROTATE_SECRETS:
        assert versions(fake, secret_id) == [("1", "DISABLED"), ("2", "ENABLED")], secret_id


@pytest.mark.parametrize("how", ["503", "reset"])
def test_a_version_is_added_once_when_the_list_is_stale(fake, container_dir, how):
    # Listing a secret's versions is eventually consistent: right after the add, the read-back's list may not show
    # the version yet; reading a version by its number is strongly consistent.
    fake.secret_list_stale_reads = 1
    lost = fake.lose_answer(
        how, api="secretmanager", route="/v1/projects/{project}/secrets/{secret}:addVersion", times=4
    )
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert lost.times == 0
    assert_one_of_each(fake)
