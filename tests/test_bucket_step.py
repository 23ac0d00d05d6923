"""Step `bucket` against the fake Cloud Storage JSON API, through google-cloud-storage."""

from __future__ import annotations

import pytest

from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError, NameTakenError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from mlflow_gcp.steps.bucket import OBJECT_ADMIN, Bucket
from tests.helpers import ALL_APIS_ENABLED, settings

BUCKET = "demo-project-mlflow-artifacts"
POLICY = f"projects/_/buckets/{BUCKET}"
EMAIL = "run-mlflow@demo-project.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{EMAIL}"


def run(mode: Mode = Mode.APPLY, **overrides):
    """The service-account step (its output is the member), then the bucket step."""
    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=mode)
    run_step(BY_NAME["service-account"], ctx)
    return run_step(BY_NAME["bucket"], ctx), ctx


@pytest.fixture
def gcs(fake):
    fake.enabled |= ALL_APIS_ENABLED
    fake.iam_invisible_for = 0
    return fake


def storage_writes(fake):
    return [(r.method, r.path) for r in fake.mutating_requests() if r.api == "storage"]


def test_creates_a_private_regional_bucket_with_a_bucket_level_grant(gcs):
    result, ctx = run()
    assert result.status is Status.CREATED
    bucket = gcs.bucket(BUCKET)
    assert bucket["location"] == "EUROPE-WEST1"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert bucket["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    assert gcs.policies[POLICY]["bindings"] == [{"role": OBJECT_ADMIN, "members": [MEMBER]}]
    assert ctx.outputs.get("bucket.name") == BUCKET

    gcs.clear_log()
    again, _ = run()
    assert again.status is Status.UNCHANGED
    assert gcs.mutating_requests() == []


def test_dry_run_lists_the_changes_and_sends_nothing(gcs):
    result, ctx = run(mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create", "create"]
    assert gcs.mutating_requests() == []
    assert gcs.bucket(BUCKET) is None
    assert ctx.outputs.get("bucket.name") is None


def test_other_bucket_name(gcs):
    run(bucket="my-artifacts")
    assert gcs.bucket("my-artifacts") is not None
    assert gcs.bucket(BUCKET) is None
    assert gcs.members("projects/_/buckets/my-artifacts", OBJECT_ADMIN) == [MEMBER]


def test_settings_changed_by_hand_are_put_back_and_other_labels_kept(gcs):
    run()
    bucket = gcs.bucket(BUCKET)
    bucket["iamConfiguration"]["publicAccessPrevention"] = "inherited"
    bucket["labels"] = {"team": "ml"}
    gcs.clear_log()
    result, _ = run()
    assert result.status is Status.UPDATED
    assert result.changes[0].fields == ("publicAccessPrevention", "labels")
    assert storage_writes(gcs) == [("PATCH", f"/storage/v1/b/{BUCKET}")]
    bucket = gcs.bucket(BUCKET)
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert bucket["labels"] == {"team": "ml", "managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}


def test_another_region_is_a_clear_error(gcs):
    run()
    gcs.clear_log()
    with pytest.raises(MlflowGcpError, match="location cannot change") as info:
        run(region="us-central1")
    assert "--bucket" in str(info.value)
    assert storage_writes(gcs) == []
    result, _ = run(mode=Mode.PLAN, region="us-central1")
    assert result.changes[0].fields == ("location",)


def test_bucket_of_another_project_answering_403(gcs):
    gcs.foreign_buckets.add(BUCKET)
    with pytest.raises(NameTakenError, match="another project") as info:
        run()
    assert "--bucket" in info.value.hint
    assert storage_writes(gcs) == []


def test_a_readable_bucket_of_another_project_is_never_used(gcs):
    """Another project made the name first and lets anyone read it: readable is not ours. Its projectNumber says
    whose it is; nothing is patched or granted on it."""
    gcs.bucket_of_another_project(BUCKET)
    with pytest.raises(NameTakenError, match="another project") as info:
        run()
    assert "--bucket" in info.value.hint
    assert storage_writes(gcs) == []
    assert gcs.policies.get(f"projects/_/buckets/{BUCKET}") is None


def test_bucket_name_taken_between_read_and_insert(gcs):
    gcs.fail(
        409,
        api="storage",
        method="POST",
        path_contains="/storage/v1/b",
        message="The requested bucket name is not available. The bucket namespace is shared by all users of "
        "the system. Please select a different name and try again.",
    )
    with pytest.raises(NameTakenError) as info:
        run()
    assert "--bucket" in info.value.hint


def test_insert_conflict_on_our_own_bucket_adopts_it(gcs):
    # A retried insert whose first attempt had succeeded, or a concurrent run: the bucket is ours.
    run()
    gcs.bucket(BUCKET)["iamConfiguration"]["publicAccessPrevention"] = "inherited"
    # The engine's first read misses it (made meanwhile by the other run): its create meets 409.
    gcs.fail(404, api="storage", method="GET", path_contains=f"/b/{BUCKET}", times=1)
    gcs.clear_log()
    run()
    assert gcs.requests(api="storage", mutating=True)[0].status == 409
    assert gcs.bucket(BUCKET)["iamConfiguration"]["publicAccessPrevention"] == "enforced"


def test_transient_errors_are_retried(gcs):
    gcs.fail(503, api="storage", method="POST")
    gcs.fail(429, api="storage", method="GET")
    gcs.fail(503, api="storage", method="PUT")
    result, _ = run()
    assert result.status is Status.CREATED
    assert gcs.members(POLICY, OBJECT_ADMIN) == [MEMBER]
    assert {r.status for r in gcs.requests(api="storage")} >= {503, 429}


def test_service_account_not_yet_visible_and_concurrent_policy_write(gcs):
    run(mode=Mode.APPLY)  # account and bucket exist; now the grant is missing and the account just made
    gcs.set_policy(POLICY, {"bindings": []})
    gcs.state["service_accounts_invisible"][EMAIL] = 2
    gcs.fail(412, api="storage", method="PUT", path_contains="/iam", message="Precondition Failed")
    gcs.clear_log()
    result, _ = run()
    assert result.status is Status.CREATED
    puts = [r.status for r in gcs.requests(api="storage") if r.method == "PUT"]
    assert puts == [412, 400, 400, 200]
    assert gcs.members(POLICY, OBJECT_ADMIN) == [MEMBER]


def test_delete_removes_artifacts_and_bucket_then_finds_nothing(gcs):
    run()
    client = Clients("demo-project").storage()
    client.bucket(BUCKET).blob("mlflow-artifacts/1/model.pkl").upload_from_string(b"weights")
    ctx = StepContext(settings=settings(), clients=Clients("demo-project"))
    bucket = Bucket(ctx)
    assert bucket.holds_data
    current = bucket.read()
    bucket.delete(current)
    assert gcs.bucket(BUCKET) is None
    assert bucket.read() is None
    bucket.delete(current)  # already gone: fine


def test_plan_on_a_project_without_the_apis_reads_absent(fake):
    result, _ = run(mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create", "create"]
    assert fake.mutating_requests() == []


def test_storage_api_just_enabled_is_not_mistaken_for_a_taken_name(gcs):
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project), enabled_now={"storage.googleapis.com"})
    run_step(BY_NAME["service-account"], ctx)
    disabled = {"reason": "SERVICE_DISABLED", "metadata": {"service": "storage.googleapis.com"}}
    gcs.fail(403, api="storage", method="GET", times=2, **disabled)
    result = run_step(BY_NAME["bucket"], ctx)
    assert result.status is Status.CREATED
    assert gcs.bucket(BUCKET) is not None


def test_reads_before_the_service_account_step_in_plan_mode(gcs):
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=Mode.PLAN)
    result = run_step(BY_NAME["bucket"], ctx)
    assert [c.action for c in result.changes] == ["create", "create"]
    assert gcs.mutating_requests() == []
