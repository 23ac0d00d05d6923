"""Step `service-account` against the fake IAM API, through the real discovery client."""

from __future__ import annotations

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import ApiDisabledError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from mlflow_gcp.steps.service_account import DISPLAY_NAME, TOKEN_CREATOR, ServiceAccount
from tests.helpers import ALL_APIS_ENABLED, settings

EMAIL = "run-mlflow@demo-project.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{EMAIL}"
POLICY = f"projects/demo-project/serviceAccounts/{EMAIL}"


def run(mode: Mode = Mode.APPLY, enabled_now: frozenset[str] = frozenset(), **overrides):
    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=mode, enabled_now=set(enabled_now))
    return run_step(BY_NAME["service-account"], ctx), ctx


@pytest.fixture
def iam(fake):
    fake.enabled |= ALL_APIS_ENABLED
    return fake


def test_creates_the_account_and_its_self_grant_then_sends_nothing(iam):
    result, ctx = run()
    assert result.status is Status.CREATED
    account = iam.service_account(EMAIL)
    assert account["displayName"] == DISPLAY_NAME
    assert iam.members(POLICY, TOKEN_CREATOR) == [MEMBER]
    # The grant is on the account itself: no project policy was touched, no other policy exists.
    assert list(iam.policies) == [POLICY]
    assert not iam.requests(api="cloudresourcemanager")
    # The new account was not yet visible to IAM: setIamPolicy answered 400 twice, then worked.
    writes = [r.status for r in iam.requests(api="iam") if r.path.endswith(":setIamPolicy")]
    assert writes == [400, 400, 200]
    assert ctx.outputs.get("service_account.email") == EMAIL
    assert ctx.outputs.get("service_account.member") == MEMBER

    iam.clear_log()
    again, ctx = run()
    assert again.status is Status.UNCHANGED
    assert iam.mutating_requests() == []
    assert ctx.outputs.get("service_account.member") == MEMBER


def test_dry_run_lists_the_changes_and_sends_nothing(iam):
    result, ctx = run(mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create", "create"]
    assert iam.mutating_requests() == []
    assert iam.service_account(EMAIL) is None
    assert ctx.outputs.get("service_account.email") is None


def test_other_account_name(iam):
    run(service_account="mlflow-server")
    assert iam.service_account("mlflow-server@demo-project.iam.gserviceaccount.com") is not None
    assert iam.service_account(EMAIL) is None


def test_display_name_and_disabled_state_are_put_back(iam):
    run()
    account = iam.service_account(EMAIL)
    account["displayName"] = "something else"
    account["disabled"] = True
    iam.clear_log()
    result, _ = run()
    assert result.status is Status.UPDATED
    assert result.changes[0].fields == ("displayName", "disabled")
    assert sorted((r.method, r.path.rsplit("/", 1)[-1]) for r in iam.mutating_requests()) == [
        ("PATCH", EMAIL),
        ("POST", f"{EMAIL}:enable"),
    ]
    assert iam.service_account(EMAIL)["displayName"] == DISPLAY_NAME
    assert "disabled" not in iam.service_account(EMAIL)


def test_transient_errors_are_retried(iam):
    iam.fail(503, api="iam", method="POST")
    iam.fail(429, api="iam", method="GET")
    result, _ = run()
    assert result.status is Status.CREATED
    assert iam.members(POLICY, TOKEN_CREATOR) == [MEMBER]
    assert {r.status for r in iam.requests(api="iam")} >= {503, 429}


def test_account_left_by_an_interrupted_run_and_not_yet_readable(iam):
    # An earlier run created the account and stopped; IAM still answers 404 to reads of it for a while.
    iam.iam_get_lag = 3
    Clients("demo-project").iam().projects().serviceAccounts().create(
        name="projects/demo-project", body={"accountId": "run-mlflow"}
    ).execute()
    result, _ = run()
    assert result.status is Status.CREATED  # read said absent; the create's 409 is fine, then it is read back
    creates = [r.status for r in iam.requests(api="iam") if r.method == "POST" and r.path.endswith("serviceAccounts")]
    assert creates == [200, 409]
    assert iam.members(POLICY, TOKEN_CREATOR) == [MEMBER]
    iam.clear_log()
    assert run()[0].status is Status.UNCHANGED
    assert iam.mutating_requests() == []


def test_disabled_iam_api_is_a_clear_error(fake):
    with pytest.raises(ApiDisabledError, match=r"iam\.googleapis\.com"):
        run()
    assert fake.mutating_requests() == []


def test_plan_on_a_project_without_the_iam_api_reads_absent(fake):
    result, _ = run(mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create", "create"]
    assert fake.mutating_requests() == []


def test_api_just_enabled_answers_service_disabled_for_a_while(iam):
    disabled = {"reason": "SERVICE_DISABLED", "metadata": {"service": "iam.googleapis.com"}}
    iam.fail(403, api="iam", method="GET", times=1, **disabled)
    iam.fail(403, api="iam", method="POST", times=1, **disabled)
    result, _ = run(enabled_now=frozenset({"iam.googleapis.com"}))
    assert result.status is Status.CREATED
    assert iam.members(POLICY, TOKEN_CREATOR) == [MEMBER]


def test_delete_then_nothing_to_delete(iam):
    run()
    ctx = StepContext(settings=settings(), clients=Clients("demo-project"))
    account = ServiceAccount(ctx)
    current = account.read()
    assert current is not None
    account.delete(current)
    assert account.read() is None
    assert iam.service_account(EMAIL) is None
    assert POLICY not in iam.policies
    account.delete(current)  # already gone: fine
    result, _ = run(mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create", "create"]
