"""Step `connector` against the fake Serverless VPC Access API."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError, OperationFailedError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from tests.helpers import ALL_APIS_ENABLED, assert_rerun_sends_nothing, run_steps, settings

NAME = "projects/demo-project/locations/europe-west1/connectors/vpc-connector-mlflow"


@pytest.fixture
def gcp(fake):
    fake.enabled |= ALL_APIS_ENABLED
    run_steps("network")
    fake.clear_log()
    return fake


def test_first_run_creates_the_connector_as_specified(gcp):
    [result] = run_steps("connector")
    assert result.status is Status.CREATED
    connector = gcp.vpc_connectors[NAME]
    assert connector["state"] == "READY"
    assert connector["network"] == "default"
    assert connector["ipCidrRange"] == "10.8.0.0/28"
    assert connector["machineType"] == "e2-micro"
    assert (connector["minInstances"], connector["maxInstances"]) == (2, 3)
    [create] = gcp.mutating_requests()
    sent = json.loads(create.body)
    assert create.query["connectorId"] == "vpc-connector-mlflow"
    assert "minThroughput" not in sent and "maxThroughput" not in sent


def test_outputs(gcp):
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    run_step(BY_NAME["network"], ctx)
    run_step(BY_NAME["connector"], ctx)
    assert ctx.outputs.get("connector.id") == NAME


def test_second_run_sends_nothing(gcp):
    run_steps("connector")
    assert_rerun_sends_nothing(gcp, "connector")


def test_dry_run_lists_the_change_and_sends_nothing(gcp):
    [result] = run_steps("connector", mode=Mode.PLAN)
    assert result.planned and [c.action for c in result.changes] == ["create"]
    assert gcp.mutating_requests() == []
    results = run_steps("network", "connector", mode=Mode.PLAN, network="not-yet")
    assert [c.action for c in results[1].changes] == ["create"]
    assert gcp.mutating_requests() == []


def test_instances_and_machine_type_are_patched_in_place(gcp):
    run_steps("connector")
    gcp.clear_log()
    [result] = run_steps("connector", connector_max_instances=5, connector_machine_type="f1-micro")
    assert result.changes[0].fields == ("machineType", "maxInstances")
    [patch] = gcp.mutating_requests()
    assert patch.method == "PATCH"
    assert patch.query["updateMask"] == "machineType,maxInstances"
    assert json.loads(patch.body) == {"machineType": "f1-micro", "maxInstances": 5}
    connector = gcp.vpc_connectors[NAME]
    assert (connector["machineType"], connector["maxInstances"], connector["state"]) == ("f1-micro", 5, "READY")


def test_an_accepted_range_change_deletes_and_recreates_the_connector(gcp):
    run_steps("connector")
    gcp.clear_log()
    [result] = run_steps("connector", connector_range="10.8.0.16/28")
    assert [e.impact.value for e in result.changes[0].effects] == ["replace"]
    assert [r.method for r in gcp.mutating_requests() if "/operations/" not in r.path] == ["DELETE", "POST"]
    assert gcp.vpc_connectors[NAME]["ipCidrRange"] == "10.8.0.16/28"


def test_overlapping_range_shows_googles_message(gcp):
    run_steps("connector")
    with pytest.raises(MlflowGcpError, match="overlaps with connector"):
        run_steps("connector", connector="other-connector")


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried(gcp, status):
    gcp.fail(status, api="vpcaccess", times=1)
    gcp.fail(status, api="vpcaccess", method="POST", times=1)
    gcp.fail(status, api="vpcaccess", path_contains="/operations/", times=1)
    [result] = run_steps("connector")
    assert result.status is Status.CREATED
    assert gcp.vpc_connectors[NAME]["state"] == "READY"


def test_failed_operation_shows_googles_message(gcp):
    gcp.vpc_fail_next("vpcaccess.create", "Insufficient CPU quota in region europe-west1.")
    with pytest.raises(OperationFailedError, match="Insufficient CPU quota"):
        run_steps("connector")
    # the connector Google left in ERROR is a clear error on the next run
    with pytest.raises(MlflowGcpError, match="ERROR state"):
        run_steps("connector")


def test_creating_connector_is_waited_for(gcp):
    gcp.latency["vpcaccess.create"] = 0.3
    from google.cloud import vpcaccess_v1

    Clients("demo-project").vpc_access().create_connector(
        parent="projects/demo-project/locations/europe-west1",
        connector_id="vpc-connector-mlflow",
        connector=vpcaccess_v1.Connector(
            network="default", ip_cidr_range="10.8.0.0/28", min_instances=2, max_instances=3, machine_type="e2-micro"
        ),
    )
    assert gcp.vpc_connectors[NAME]["state"] == "CREATING"
    [result] = run_steps("connector")
    assert result.status is Status.UNCHANGED
    assert gcp.vpc_connectors[NAME]["state"] == "READY"


def test_delete_and_delete_again(gcp):
    run_steps("connector")
    ctx = StepContext(settings=settings(), clients=Clients("demo-project")).for_step("connector")
    [connector] = BY_NAME["connector"].resources(ctx)
    connector.delete(connector.read())
    assert NAME not in gcp.vpc_connectors
    assert connector.read() is None
