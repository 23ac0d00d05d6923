"""Google catching up on a fresh project (issue 7): each behaviour is an option of the fake with its source, and
the product waits it out for a bounded time, saying in the live view what it waits for.

MLFLOW_GCP_WAIT_SCALE is 0.01 in tests (conftest): a minute of Google's bound is 0.6 s. Delays of the fake are
counted, or time-based and far shorter than the product's scaled bound.
"""

from __future__ import annotations

import pytest

from mlflow_gcp.engine.base import Event, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from tests.helpers import ALL_APIS_ENABLED, settings

EMAIL = "run-mlflow@demo-project.iam.gserviceaccount.com"
SA_POLICY = f"projects/demo-project/serviceAccounts/{EMAIL}"


def run(*names: str, enabled_now: set[str] | None = None, **overrides) -> tuple[StepContext, list[str]]:
    """Run steps in order in one context (as `up` does) and return it with the live view's log lines."""
    config = settings(**overrides)
    lines: list[str] = []

    def on_event(event: Event) -> None:
        if event.kind == "log":
            lines.append(event.message)

    ctx = StepContext(
        settings=config, clients=Clients(config.project), on_event=on_event, enabled_now=set(enabled_now or ())
    )
    for name in names:
        run_step(BY_NAME[name], ctx)
    return ctx, lines


def test_service_disabled_for_minutes_after_enabling_is_waited_out(short_waits):
    fake = short_waits
    # Google answers SERVICE_DISABLED for 3 minutes after the enable operation ended: more than the 2 minutes
    # the tool used to wait, less than its 5 (scaled: 1.8 s, 1.2 s, 3 s).
    fake.activation_seconds = 1.8
    fake.iam_invisible_for = 0  # the new account's visibility (counted) is not what this bound is about
    ctx, lines = run("apis", "service-account")
    assert fake.service_account(EMAIL) is not None
    assert "iam.googleapis.com" in ctx.enabled_now
    assert any("an API just enabled to become usable" in line and "at most 5 min" in line for line in lines)


def test_service_disabled_beyond_the_bound_is_the_clear_error(short_waits):
    fake = short_waits
    fake.activation_seconds = 3600
    with pytest.raises(MlflowGcpError, match="not enabled"):
        run("apis", "service-account")


def test_a_new_service_account_whose_policy_answers_404_for_a_while(fake):
    fake.enabled |= ALL_APIS_ENABLED
    fake.iam_policy_lag = 4  # getIamPolicy/setIamPolicy on the new account: 404 four times, `get` works
    _, lines = run("service-account")
    assert fake.members(SA_POLICY, "roles/iam.serviceAccountTokenCreator") == [f"serviceAccount:{EMAIL}"]
    assert any("the new service account run-mlflow to be usable" in line for line in lines)


def test_a_policy_404_on_an_account_this_run_did_not_create_is_not_waited_for(fake):
    fake.enabled |= ALL_APIS_ENABLED
    run("service-account")
    fake.iam_policy_lag = 0
    fake.policies.clear()
    fake.fail(404, api="iam", path_contains=":getIamPolicy", times=100)
    before = len(fake.requests(api="iam"))
    with pytest.raises(MlflowGcpError):
        run("service-account")
    assert len([r for r in fake.requests(api="iam")[before:] if ":getIamPolicy" in r.path]) == 1


def test_a_new_account_named_in_a_grant_elsewhere_is_waited_for(fake):
    fake.enabled |= ALL_APIS_ENABLED
    fake.iam_invisible_for = 5  # a setIamPolicy naming the new account answers 400 "does not exist" 5 times
    _, lines = run("service-account", "bucket")
    assert fake.members(SA_POLICY, "roles/iam.serviceAccountTokenCreator") == [f"serviceAccount:{EMAIL}"]
    assert any("the new service account to become visible to IAM" in line for line in lines)


def test_the_default_network_appears_a_while_after_compute_is_enabled(fake):
    fake.compute_default_network_lag = 5  # GETs of `default` answer 404 five times after Compute is enabled
    ctx, lines = run("apis", "network")
    assert "compute.googleapis.com" in ctx.enabled_now
    assert ctx.outputs.get("network.name") == "default"
    assert any("the default network" in line and "at most 3 min" in line for line in lines)


def test_a_missing_default_network_is_the_clear_error_at_once_when_compute_was_already_enabled(fake):
    fake.enabled |= ALL_APIS_ENABLED
    fake.compute_default_network_lag = 1000
    with pytest.raises(MlflowGcpError, match="default VPC network does not exist"):
        run("apis", "network")
    assert len([r for r in fake.requests(api="compute") if r.path.endswith("/networks/default")]) == 1


def test_a_default_network_that_never_comes_is_the_clear_error_after_the_bound(short_waits):
    fake = short_waits
    fake.compute_default_network_lag = 10**6
    with pytest.raises(MlflowGcpError, match="default VPC network does not exist"):
        run("apis", "network")
