from mlflow_gcp.engine.base import Mode, Status
from mlflow_gcp.steps.apis import REQUIRED_APIS
from tests.helpers import assert_rerun_sends_nothing, run_steps


def test_enables_missing_apis_then_sends_nothing(fake):
    [result] = run_steps("apis")
    assert result.status is Status.UPDATED
    assert set(REQUIRED_APIS) <= fake.enabled
    assert_rerun_sends_nothing(fake, "apis")


def test_dry_run_sends_no_mutating_request(fake):
    [result] = run_steps("apis", mode=Mode.PLAN)
    assert result.changes and result.planned
    assert fake.mutating_requests() == []
    assert not fake.enabled
