"""Step `network` against the fake Compute Engine and Service Networking APIs."""

from __future__ import annotations

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.errors import MlflowGcpError, OperationFailedError
from mlflow_gcp.steps import BY_NAME
from tests.fake_gcp.server import PROJECT_NUMBER
from tests.helpers import ALL_APIS_ENABLED, assert_rerun_sends_nothing, run_steps, settings

RANGE = "mlflow-private-services"


@pytest.fixture
def gcp(fake):
    fake.enabled |= ALL_APIS_ENABLED
    return fake


def test_first_run_creates_range_and_connection_on_default(gcp):
    [result] = run_steps("network")
    assert result.status is Status.CREATED
    assert [c.resource for c in result.changes] == [
        f"address range {RANGE}",
        "private services connection on default",
    ]
    address = gcp.compute_addresses[RANGE]
    assert address["purpose"] == "VPC_PEERING"
    assert address["addressType"] == "INTERNAL"
    assert address["prefixLength"] == 20
    assert address["network"].endswith("/projects/demo-project/global/networks/default")
    assert address["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    assert gcp.sn_connections["default"]["reservedPeeringRanges"] == [RANGE]
    assert gcp.sn_connections["default"]["network"] == f"projects/{PROJECT_NUMBER}/global/networks/default"
    assert [p["name"] for p in gcp.compute_networks["default"]["peerings"]] == ["servicenetworking-googleapis-com"]
    # nothing was sent to create or change the default network
    assert not [r for r in gcp.mutating_requests() if r.path.endswith("/global/networks")]


def test_second_run_sends_nothing(gcp):
    run_steps("network")
    assert_rerun_sends_nothing(gcp, "network")


def test_outputs(gcp):
    config = settings()
    from mlflow_gcp.engine.loop import run_step
    from mlflow_gcp.gcp.clients import Clients

    ctx = StepContext(settings=config, clients=Clients(config.project))
    run_step(BY_NAME["network"], ctx)
    outputs = ctx.outputs.as_dict()
    assert outputs["network.self_link"] == "projects/demo-project/global/networks/default"
    assert outputs["network.name"] == "default"


def test_custom_network_is_created_in_custom_mode(gcp):
    [result] = run_steps("network", network="mlflow-vpc")
    assert result.status is Status.CREATED
    network = gcp.compute_networks["mlflow-vpc"]
    assert network["autoCreateSubnetworks"] is False
    assert gcp.compute_addresses[RANGE]["network"].endswith("/global/networks/mlflow-vpc")
    assert "mlflow-vpc" in gcp.sn_connections
    assert_rerun_sends_nothing(gcp, "network", network="mlflow-vpc")


def test_missing_default_network_is_a_clear_error(gcp):
    del gcp.compute_networks["default"]
    with pytest.raises(MlflowGcpError, match="--network"):
        run_steps("network")
    assert gcp.mutating_requests() == []


def test_dry_run_lists_changes_and_sends_nothing(gcp):
    [result] = run_steps("network", mode=Mode.PLAN, network="new-vpc")
    assert result.planned
    assert [c.action for c in result.changes] == ["create", "create", "create"]
    assert gcp.mutating_requests() == []
    assert "new-vpc" not in gcp.compute_networks


def test_existing_connection_keeps_other_ranges(gcp):
    # someone else's range and connection on the default network
    gcp.compute_addresses["other-range"] = {
        "name": "other-range",
        "address": "10.200.0.0",
        "prefixLength": 16,
        "purpose": "VPC_PEERING",
        "addressType": "INTERNAL",
        "status": "RESERVED",
        "network": "https://www.googleapis.com/compute/v1/projects/demo-project/global/networks/default",
        "selfLink": "x",
    }
    gcp.sn_connect("default", ["other-range"])
    [result] = run_steps("network")
    assert ("private services connection on default", "update") in [(c.resource, c.action) for c in result.changes]
    assert gcp.sn_connections["default"]["reservedPeeringRanges"] == ["other-range", RANGE]
    patch = [r for r in gcp.mutating_requests() if r.method == "PATCH"]
    assert len(patch) == 1 and patch[0].query["force"] == "false"
    assert patch[0].query["updateMask"] == "reservedPeeringRanges"
    # down removes only our range from a shared connection, and keeps their address
    ctx = StepContext(settings=settings(), clients=_clients())
    _delete_all(ctx)
    assert gcp.sn_connections["default"]["reservedPeeringRanges"] == ["other-range"]
    assert RANGE not in gcp.compute_addresses
    assert "other-range" in gcp.compute_addresses


def test_address_that_does_not_fit_is_a_clear_error(gcp):
    run_steps("network")
    gcp.compute_addresses[RANGE]["prefixLength"] = 24
    plan = run_steps("network", mode=Mode.PLAN)[0]
    assert plan.changes[0].fields == ("prefixLength",)
    with pytest.raises(MlflowGcpError, match="--peering-range"):
        run_steps("network")


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("api", ["compute", "servicenetworking"])
def test_transient_errors_are_retried(gcp, status, api):
    gcp.fail(status, api=api, times=1)
    gcp.fail(status, api=api, method="POST", times=1)
    [result] = run_steps("network", network="retried-vpc")
    assert result.status is Status.CREATED
    assert gcp.sn_connections["retried-vpc"]["reservedPeeringRanges"] == [RANGE]


def test_failed_operation_shows_googles_message(gcp):
    gcp.compute_fail_next("compute.addresses", "Quota 'GLOBAL_INTERNAL_ADDRESSES' exceeded. Limit: 0.0 globally.")
    with pytest.raises(OperationFailedError, match="GLOBAL_INTERNAL_ADDRESSES"):
        run_steps("network")


def test_connection_refused_by_google_shows_its_message(gcp):
    gcp.fail(
        400,
        api="servicenetworking",
        method="POST",
        message="Allocated IP range 'mlflow-private-services' not found in network.",
    )
    with pytest.raises(MlflowGcpError, match="not found in network"):
        run_steps("network")
    assert "default" not in gcp.sn_connections


def test_reserving_range_is_waited_for(gcp):
    gcp.latency["compute.addresses"] = 0.3
    from mlflow_gcp.gcp.clients import Clients

    # an interrupted run left the insert running
    Clients("demo-project").compute().globalAddresses().insert(
        project="demo-project",
        body={
            "name": RANGE,
            "purpose": "VPC_PEERING",
            "addressType": "INTERNAL",
            "prefixLength": 20,
            "network": "projects/demo-project/global/networks/default",
        },
    ).execute()
    assert gcp.compute_addresses[RANGE]["status"] == "RESERVING"
    [result] = run_steps("network")
    assert gcp.compute_addresses[RANGE]["status"] == "RESERVED"
    assert [c.resource for c in result.changes] == ["private services connection on default"]


def _clients():
    from mlflow_gcp.gcp.clients import Clients

    return Clients("demo-project")


def _delete_all(ctx: StepContext) -> list[str]:
    """What `down` does for this step: read each resource and delete it, last first."""
    deleted = []
    resources = list(BY_NAME["network"].resources(ctx.for_step("network")))
    for resource in reversed(resources):
        current = resource.read()
        if current is not None:
            resource.delete(current)
            deleted.append(resource.label)
    return deleted


def test_delete_removes_ours_and_keeps_default_network(gcp):
    run_steps("network")
    ctx = StepContext(settings=settings(), clients=_clients())
    from mlflow_gcp.engine.loop import run_step

    run_step(BY_NAME["network"], ctx)  # outputs, as down would have them
    deleted = _delete_all(ctx)
    assert "default" in gcp.compute_networks
    assert "default" not in gcp.sn_connections
    assert RANGE not in gcp.compute_addresses
    assert gcp.compute_networks["default"]["peerings"] == []
    assert _delete_all(ctx) == ["VPC network default"]  # only the kept network is still there
    assert len(deleted) == 3


def test_delete_custom_network_we_made(gcp):
    run_steps("network", network="mlflow-vpc")
    ctx = StepContext(settings=settings(network="mlflow-vpc"), clients=_clients())
    _delete_all(ctx)
    assert "mlflow-vpc" not in gcp.compute_networks
    assert _delete_all(ctx) == []
