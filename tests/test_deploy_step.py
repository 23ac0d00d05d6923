"""Step `deploy` against the fake Cloud Run API: create (two revisions: the second gives the server its own
URLs), rerun unchanged, plan, config change, faults, failed revision, resume, fallback to an allUsers binding,
delete."""

from __future__ import annotations

import json

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import OperationFailedError, OrgPolicyError, PrerequisiteMissingError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.service_spec import SECRET_ENV_VARS, SERVICE_URLS_VAR
from mlflow_gcp.steps import BY_NAME
from mlflow_gcp.steps.deploy import CloudRunService
from mlflow_gcp.steps.service_json import diff, merged, service_urls_of
from tests.fake_gcp.server import PROJECT
from tests.helpers import ALL_APIS_ENABLED, settings

IMAGE = f"europe-west1-docker.pkg.dev/{PROJECT}/mlflow/mlflow-server:0123456789abcdef0123"
CONNECTOR = f"projects/{PROJECT}/locations/europe-west1/connectors/vpc-connector-mlflow"
SECRET_VALUES = {secret: f"s3cr3t-value-of-{secret}" for secret in SECRET_ENV_VARS.values()}


def context(mode: Mode = Mode.APPLY, *, image: str = IMAGE, **overrides) -> StepContext:
    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=mode)
    ctx.outputs.update(
        {"image.uri": image, "connector.id": CONNECTOR, "service_account.email": config.service_account_email}
    )
    return ctx


def deploy(mode: Mode = Mode.APPLY, **overrides):
    ctx = context(mode, **overrides)
    return run_step(BY_NAME["deploy"], ctx), ctx


@pytest.fixture
def ready(fake):
    """APIs enabled and the secrets the service refers to, made by the secrets step in a real run."""
    fake.enabled |= ALL_APIS_ENABLED
    client = Clients(PROJECT).secrets()
    for secret, value in SECRET_VALUES.items():
        client.create_secret(parent=f"projects/{PROJECT}", secret_id=secret, secret={"replication": {"automatic": {}}})
        client.add_secret_version(parent=f"projects/{PROJECT}/secrets/{secret}", payload={"data": value.encode()})
    fake.clear_log()
    return fake


def assert_no_secret_value_sent(fake) -> None:
    for request in fake.requests():
        body = request.body.decode("utf-8", "replace")
        for value in SECRET_VALUES.values():
            assert value not in body, f"{request.method} /{request.api}{request.path} carries a secret value"


def test_first_run_creates_the_service_in_one_revision_that_knows_its_urls(ready):
    fake = ready
    result, ctx = deploy()
    assert result.status is Status.CREATED
    stored = fake.run_service("mlflow")
    assert stored["generation"] == 1  # one rollout: the deterministic URL is known before the service exists
    assert stored["invokerIamDisabled"] is True
    assert stored["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert stored["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    template = stored["template"]
    assert template["serviceAccount"] == f"run-mlflow@{PROJECT}.iam.gserviceaccount.com"
    assert template["vpcAccess"] == {"connector": CONNECTOR, "egress": "PRIVATE_RANGES_ONLY"}
    assert template["scaling"].get("minInstanceCount", 0) == 0 and template["scaling"]["maxInstanceCount"] == 2
    container = template["containers"][0]
    assert container["image"] == IMAGE
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    secret_env = {e["name"]: e["valueSource"]["secretKeyRef"] for e in container["env"] if "valueSource" in e}
    assert secret_env == {var: {"secret": s, "version": "latest"} for var, s in SECRET_ENV_VARS.items()}
    plain = [e["name"] for e in container["env"] if "value" in e]
    assert plain == [SERVICE_URLS_VAR]
    deterministic = next(u for u in stored["urls"] if u.endswith(".europe-west1.run.app"))
    assert service_urls_of(stored) == [deterministic]
    assert len(stored["urls"]) == 2
    assert any(u.endswith(".a.run.app") for u in stored["urls"])
    assert any(u.endswith(".europe-west1.run.app") for u in stored["urls"])
    assert stored["terminalCondition"]["state"] == "CONDITION_SUCCEEDED"
    assert ctx.outputs.get("service.url") == stored["uri"]
    assert ctx.outputs.get("service.urls") == ",".join(stored["urls"])
    creates = [r for r in fake.requests(api="run", mutating=True) if r.method == "POST"]
    patches = [r for r in fake.requests(api="run", mutating=True) if r.method == "PATCH"]
    assert len(creates) == 1 and len(patches) == 0
    assert_no_secret_value_sent(fake)


def test_extra_hosts_are_told_to_the_server_and_a_change_rolls_out_a_revision(ready):
    fake = ready
    deploy()
    fake.clear_log()
    result, _ = deploy(extra_hosts="mlflow.example.com, ml.example.org")
    assert result.status is Status.UPDATED
    urls = service_urls_of(fake.run_service("mlflow"))
    assert urls[1:] == ["https://mlflow.example.com", "https://ml.example.org"]
    assert urls[0].endswith(".europe-west1.run.app")


def test_a_server_told_both_urls_by_an_older_version_is_left_alone(ready):
    """Deployments made before the first deploy knew its URLs were told both of Cloud Run's URLs: keeping them
    needs no revision."""
    fake = ready
    deploy()
    stored = fake.run_service("mlflow")
    env = next(e for e in stored["template"]["containers"][0]["env"] if e["name"] == SERVICE_URLS_VAR)
    env["value"] = ",".join(stored["urls"])
    fake.clear_log()
    result, _ = deploy()
    assert result.status is Status.UNCHANGED
    assert fake.mutating_requests() == []


def test_second_run_is_unchanged_and_sends_nothing(ready):
    fake = ready
    deploy()
    fake.clear_log()
    result, ctx = deploy()
    assert result.status is Status.UNCHANGED
    assert fake.mutating_requests() == []
    assert (ctx.outputs.get("service.url") or "").startswith("https://")
    service_state = next(r for r in result.resources if r.label.startswith("Cloud Run service"))
    assert service_state.details["ready"] == "succeeded"


def test_dry_run_lists_the_create_and_sends_nothing(ready):
    fake = ready
    result, _ = deploy(Mode.PLAN)
    assert [(c.resource, c.action) for c in result.changes] == [("Cloud Run service mlflow", "create")]
    assert fake.mutating_requests() == []
    deploy()
    fake.clear_log()
    result, _ = deploy(Mode.PLAN, memory="2Gi")
    assert result.changes[0].fields == ("resources",)
    assert fake.mutating_requests() == []


def test_plan_before_the_image_exists_uses_placeholders(ready):
    ctx = StepContext(settings=settings(), clients=Clients(PROJECT), mode=Mode.PLAN)
    result = run_step(BY_NAME["deploy"], ctx)
    assert result.changes[0].action == "create"
    with pytest.raises(PrerequisiteMissingError, match="image"):
        run_step(BY_NAME["deploy"], StepContext(settings=settings(), clients=Clients(PROJECT)))


def test_config_change_updates_only_what_changed_and_keeps_foreign_fields(ready):
    fake = ready
    deploy()
    stored = fake.state["run_services"][f"projects/{PROJECT}/locations/europe-west1/services/mlflow"]
    stored["labels"]["team"] = "data"
    stored.setdefault("annotations", {})["run.googleapis.com/description"] = "set by someone else"
    stored["template"]["containers"][0]["args"] = ["--extra"]
    fake.clear_log()
    result, _ = deploy(memory="2Gi", max_instances=4)
    assert result.status is Status.UPDATED
    assert set(result.changes[0].fields) == {"resources", "scaling"}
    after = fake.run_service("mlflow")
    assert after["template"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    assert after["template"]["scaling"]["maxInstanceCount"] == 4
    assert after["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow", "team": "data"}
    assert after["annotations"]["run.googleapis.com/description"] == "set by someone else"
    assert after["template"]["containers"][0]["args"] == ["--extra"]
    assert [r.method for r in fake.mutating_requests()] == ["PATCH"]
    fake.clear_log()
    assert deploy(memory="2Gi", max_instances=4)[0].status is Status.UNCHANGED
    assert fake.mutating_requests() == []


def test_new_image_rolls_out_a_revision(ready):
    fake = ready
    deploy()
    fake.clear_log()
    new_image = IMAGE.replace("0123456789abcdef0123", "fedcba98765432100000")
    result, _ = deploy(image=new_image)
    assert result.changes[0].fields == ("image",)
    assert fake.run_service("mlflow")["template"]["containers"][0]["image"] == new_image


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried(ready, status):
    fake = ready
    fake.latency["run.deploy"] = 0.05  # so that the operation is polled
    fake.fail(status, api="run", method="POST")
    fake.fail(status, api="run", method="GET", path_contains="/operations/")
    fake.fail(status, api="run", method="GET", path_contains="/services/mlflow")
    result, _ = deploy()
    assert result.status is Status.CREATED
    assert all(f.times == 0 for f in fake.faults)
    assert fake.run_service("mlflow")["terminalCondition"]["state"] == "CONDITION_SUCCEEDED"


def test_a_container_that_does_not_start_is_a_clear_error(ready):
    fake = ready
    fake.run_fail_next_revision()
    with pytest.raises(OperationFailedError, match="failed to start and listen on the port"):
        deploy()
    assert fake.run_service("mlflow")["terminalCondition"]["state"] == "CONDITION_FAILED"
    # A later run rolls out again and succeeds.
    result, _ = deploy()
    assert result.status is Status.UPDATED
    assert fake.run_service("mlflow")["terminalCondition"]["state"] == "CONDITION_SUCCEEDED"


def test_failed_update_reports_the_condition_message(ready):
    fake = ready
    deploy()
    fake.run_fail_next_revision("Revision 'x' is not ready: secret mlflow-env is not accessible.")
    with pytest.raises(OperationFailedError, match="secret mlflow-env is not accessible"):
        deploy(memory="2Gi")
    result, _ = deploy(Mode.PLAN, memory="2Gi")
    assert "ready" in result.changes[0].fields


def test_a_rollout_in_progress_is_waited_for(ready):
    fake = ready
    fake.latency["run.deploy"] = 0.3
    ctx = context()
    service = CloudRunService(ctx)
    # An interrupted run: the create was sent, nobody waited for it.
    ctx.clients.run_services().create_service(
        request={"parent": service.parent, "service_id": "mlflow", "service": _message(service.desired(None))}
    )
    assert fake.run_service("mlflow")["reconciling"] is True
    result, _ = deploy()
    assert result.status is Status.UNCHANGED  # the create carried everything, URLs included
    creates = [r for r in fake.requests(api="run") if r.method == "POST"]
    assert len(creates) == 1
    assert fake.run_service("mlflow")["reconciling"] is False


def test_delete_removes_the_service(ready):
    fake = ready
    deploy()
    ctx = context()
    service = CloudRunService(ctx)
    service.delete(service.read())
    assert fake.run_service("mlflow") is None
    assert service.read() is None
    service.delete(None)  # a second delete finds nothing and is fine


def test_refused_invoker_iam_disabled_falls_back_to_an_all_users_binding(ready):
    fake = ready
    fake.run_refuse_invoker_iam_disabled = True
    result, _ = deploy()
    assert result.status is Status.CREATED
    name = f"projects/{PROJECT}/locations/europe-west1/services/mlflow"
    assert fake.members(name, "roles/run.invoker") == ["allUsers"]
    assert not fake.run_service("mlflow").get("invokerIamDisabled")
    fake.clear_log()
    again, _ = deploy()
    assert again.status is Status.UNCHANGED
    assert fake.mutating_requests() == []


def test_domain_restricted_sharing_is_an_org_policy_error(ready):
    fake = ready
    fake.run_refuse_invoker_iam_disabled = True
    fake.run_refuse_all_users = True
    with pytest.raises(OrgPolicyError, match="allowedPolicyMemberDomains") as info:
        deploy()
    assert info.value.hint


def test_missing_secret_is_refused_by_cloud_run(fake):
    fake.enabled |= ALL_APIS_ENABLED
    with pytest.raises(Exception, match="was not found"):
        deploy()


def test_diff_and_merge_are_about_owned_fields_only():
    owned = {"labels": {"a": "1"}, "template": {"containers": [{"image": "x"}]}}
    live = {"labels": {"a": "1", "b": "2"}, "template": {"containers": [{"image": "y", "args": ["z"]}]}}
    assert diff(owned, owned, live) == ["image"]
    out = merged(live, owned)
    assert out == {"labels": {"a": "1", "b": "2"}, "template": {"containers": [{"image": "x", "args": ["z"]}]}}


def _message(data):
    from mlflow_gcp.steps.service_json import from_json_dict

    return from_json_dict(json.loads(json.dumps(data)))


def test_plan_on_a_project_whose_run_api_is_not_enabled_yet(fake):
    result, _ = deploy(Mode.PLAN)
    assert [c.action for c in result.changes] == ["create"]
    assert fake.mutating_requests() == []
