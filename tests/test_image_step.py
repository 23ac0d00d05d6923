"""Step `image` against the fake Artifact Registry, Cloud Storage and Cloud Build; the build context helpers."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from google.api_core import exceptions as gexc

from mlflow_gcp import build_context
from mlflow_gcp.engine.base import Mode, Status, StepContext
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.errors import MlflowGcpError, NameTakenError, OperationFailedError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME
from mlflow_gcp.steps.image import resources as image_resources
from mlflow_gcp.steps.image_storage import DockerRepository
from tests.fake_gcp.server import PROJECT
from tests.helpers import ALL_APIS_ENABLED, assert_rerun_sends_nothing, run_steps, settings

STAGING = f"{PROJECT}_cloudbuild"
REPOSITORY = f"projects/{PROJECT}/locations/europe-west1/repositories/mlflow"


@pytest.fixture
def context_dir(tmp_path, monkeypatch):
    root = tmp_path / "container"
    (root / "app").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY . /app\n")
    (root / "app" / "entrypoint.py").write_text("print('hello')\n")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "entrypoint.cpython-311.pyc").write_bytes(b"\0compiled")
    (root / "notes.md").write_text("not in the image\n")
    (root / "KEEP.md").write_text("in the image\n")
    (root / ".dockerignore").write_text("# docs\n*.md\n!KEEP.md\n")
    monkeypatch.setenv(build_context.CONTAINER_DIR_ENV, str(root))
    return root


@pytest.fixture
def ready(fake, context_dir):
    fake.enabled |= ALL_APIS_ENABLED
    return fake


def image_tag(root) -> str:
    return build_context.context_hash(root)


def test_first_run_creates_the_repository_uploads_and_builds(ready, context_dir):
    fake = ready
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    repository = fake.registry_repository("mlflow")
    assert repository["format"] == "DOCKER"
    assert repository["labels"] == {"managed-by": "mlflow-gcp", "mlflow-gcp-deployment": "mlflow"}
    tag = image_tag(context_dir)
    assert len(tag) == 20
    uri = f"europe-west1-docker.pkg.dev/{PROJECT}/mlflow/mlflow-server:{tag}"
    assert f"mlflow-server:{tag}" in fake.registry_tags("mlflow")
    staging = fake.bucket(STAGING)
    assert staging["location"] == "EUROPE-WEST1"
    assert staging["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    archive = fake.objects(STAGING)[f"mlflow-gcp/source-{tag}.tgz"]
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [".dockerignore", "Dockerfile", "KEEP.md", "app/entrypoint.py"]
    [build] = fake.builds()
    assert build["status"] == "SUCCESS"
    assert build["steps"][0]["name"] == "gcr.io/cloud-builders/docker"
    assert build["steps"][0]["args"] == ["build", "-t", uri, "."]
    assert build["images"] == [uri]
    assert build["timeout"] == "1200s"
    assert build["source"]["storageSource"]["bucket"] == STAGING
    assert build["source"]["storageSource"]["object"] == f"mlflow-gcp/source-{tag}.tgz"
    assert build["name"].split("/locations/")[1].startswith("europe-west1/")


def test_second_run_builds_nothing_and_sends_nothing(ready):
    fake = ready
    run_steps("image")
    assert_rerun_sends_nothing(fake, "image")
    assert len(fake.builds()) == 1


def test_outputs_the_image_uri(ready, context_dir):
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    run_step(BY_NAME["image"], ctx)
    assert ctx.outputs.get("image.uri") == (
        f"europe-west1-docker.pkg.dev/{PROJECT}/mlflow/mlflow-server:{image_tag(context_dir)}"
    )


IMAGE_STEP_RESOURCES = [
    f"service account mlflow-build@{PROJECT}.iam.gserviceaccount.com",
    "Artifact Registry repository mlflow",
    f"staging bucket {STAGING}",
    f"grant storage.objectViewer to mlflow-build on staging bucket {STAGING}",
    "grant artifactregistry.writer to mlflow-build on Artifact Registry repository mlflow",
    f"grant logging.logWriter to mlflow-build on project {PROJECT}",
]


def test_dry_run_lists_every_resource_and_sends_nothing(ready):
    fake = ready
    [result] = run_steps("image", mode=Mode.PLAN)
    assert [c.action for c in result.changes] == ["create"] * 7
    assert [c.resource for c in result.changes][:-1] == IMAGE_STEP_RESOURCES
    assert result.changes[-1].resource.startswith("image ")
    assert fake.mutating_requests() == []
    assert fake.builds() == []


def test_a_changed_context_is_built_again_and_only_the_image_changes(ready, context_dir):
    fake = ready
    run_steps("image")
    first = image_tag(context_dir)
    (context_dir / "app" / "entrypoint.py").write_text("print('changed')\n")
    fake.clear_log()
    [result] = run_steps("image")
    second = image_tag(context_dir)
    assert second != first
    assert [(c.resource.split(" ")[0], c.action) for c in result.changes] == [("image", "create")]
    assert {f"mlflow-server:{first}", f"mlflow-server:{second}"} <= set(fake.registry_tags("mlflow"))
    assert len(fake.builds()) == 2
    assert not [r for r in fake.mutating_requests() if r.api == "artifactregistry"]


def test_ignored_files_do_not_change_the_tag(context_dir):
    before = image_tag(context_dir)
    (context_dir / "notes.md").write_text("edited\n")
    (context_dir / "app" / "__pycache__" / "entrypoint.cpython-311.pyc").write_bytes(b"other")
    assert image_tag(context_dir) == before
    (context_dir / "KEEP.md").write_text("edited\n")
    assert image_tag(context_dir) != before


def test_pack_is_deterministic(context_dir):
    first = build_context.pack(context_dir)
    assert build_context.pack(context_dir) == first
    assert gzip.decompress(first)  # a valid gzip stream


def test_missing_context_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(build_context.CONTAINER_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MlflowGcpError, match="build context") as info:
        build_context.container_dir()
    assert build_context.CONTAINER_DIR_ENV in info.value.hint


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried(ready, status):
    fake = ready
    fake.latency["cloudbuild.build"] = 0.05
    fake.latency["artifactregistry.create"] = 0.05
    for api in ("artifactregistry", "cloudbuild", "storage"):
        fake.fail(status, api=api, method="POST")
        fake.fail(status, api=api, method="GET")
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert all(f.times == 0 for f in fake.faults)
    assert len(fake.builds()) == 1


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        ("FAILURE", 'Build step failure: build step 0 "gcr.io/cloud-builders/docker" failed'),
        ("TIMEOUT", "Build timeout after 1200s"),
        ("INTERNAL_ERROR", "Internal error"),
    ],
)
def test_failed_build_is_a_clear_error_with_its_log(ready, status, detail):
    fake = ready
    fake.cloudbuild_fail_next(status)
    with pytest.raises(OperationFailedError, match=status) as info:
        run_steps("image")
    assert detail in str(info.value)
    assert "https://console.cloud.google.com/cloud-build/builds;region=europe-west1/" in str(info.value)
    assert fake.registry_tags("mlflow") == {}
    assert len(fake.builds()) == 1  # not a permission a fresh grant lacks: not built again
    # The source is already uploaded: a rerun only builds.
    fake.clear_log()
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert not [r for r in fake.mutating_requests() if r.api == "storage"]


def test_a_repository_creation_in_progress_is_waited_for(ready):
    fake = ready
    fake.latency["artifactregistry.create"] = 0.3
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    # An interrupted run: the create was sent, nobody waited for it.
    ctx.clients.artifact_registry().create_repository(
        request={
            "parent": f"projects/{PROJECT}/locations/europe-west1",
            "repository_id": "mlflow",
            "repository": {"format_": "DOCKER", "labels": {"managed-by": "mlflow-gcp"}},
        }
    )
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert fake.registry_repository("mlflow") is not None
    assert len(fake.builds()) == 1


def test_labels_of_an_existing_repository_are_completed(ready):
    fake = ready
    ctx = StepContext(settings=settings(), clients=Clients(PROJECT))
    ctx.clients.artifact_registry().create_repository(
        request={
            "parent": f"projects/{PROJECT}/locations/europe-west1",
            "repository_id": "mlflow",
            "repository": {"format_": "DOCKER", "labels": {"team": "data"}},
        }
    ).result()
    [result] = run_steps("image")
    assert ("Artifact Registry repository mlflow", "update", ("labels",)) in [
        (c.resource, c.action, c.fields) for c in result.changes
    ]
    assert fake.registry_repository("mlflow")["labels"] == {
        "team": "data",
        "managed-by": "mlflow-gcp",
        "mlflow-gcp-deployment": "mlflow",
    }


def test_a_repository_of_another_format_is_a_clear_error(ready):
    ctx = StepContext(settings=settings(), clients=Clients(PROJECT))
    ctx.clients.artifact_registry().create_repository(
        request={
            "parent": f"projects/{PROJECT}/locations/europe-west1",
            "repository_id": "mlflow",
            "repository": {"format_": "PYTHON"},
        }
    ).result()
    with pytest.raises(MlflowGcpError, match="--repository"):
        run_steps("image")


def test_a_staging_bucket_of_another_project_is_a_clear_error(ready):
    fake = ready
    fake.foreign_buckets.add(STAGING)
    with pytest.raises(NameTakenError, match=STAGING):
        run_steps("image")


def test_delete_removes_the_image_then_the_repository(ready):
    fake = ready
    repository, image = _built_repository_and_image()
    image.delete(image.read())
    assert image.read() is None
    assert fake.registry_tags("mlflow") == {}
    repository.delete(repository.read())
    assert repository.read() is None
    assert fake.registry_repository("mlflow") is None
    repository.delete(None)  # a second delete finds nothing


def test_repository_deletion_deletes_its_images(ready):
    fake = ready
    repository, image = _built_repository_and_image()
    repository.delete(repository.read())
    assert fake.state["ar_packages"].get(REPOSITORY) is None
    assert image.read() is None


def _built_repository_and_image():
    """The image step run: its repository and its image, as resources."""
    run_steps("image")
    found = list(image_resources(StepContext(settings=settings(), clients=Clients(PROJECT))))
    return next(r for r in found if isinstance(r, DockerRepository)), found[-1]


def test_image_then_deploy_uses_the_built_image(ready, context_dir):
    fake = ready
    client = Clients(PROJECT).secrets()
    from mlflow_gcp.service_spec import SECRET_ENV_VARS

    for secret in SECRET_ENV_VARS.values():
        client.create_secret(parent=f"projects/{PROJECT}", secret_id=secret, secret={"replication": {"automatic": {}}})
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    ctx.outputs.update(
        {
            "connector.id": f"projects/{PROJECT}/locations/europe-west1/connectors/vpc-connector-mlflow",
            "service_account.email": config.service_account_email,
        }
    )
    run_step(BY_NAME["image"], ctx)
    run_step(BY_NAME["deploy"], ctx)
    image = fake.run_service("mlflow")["template"]["containers"][0]["image"]
    assert image == ctx.outputs.get("image.uri")
    assert image.endswith(image_tag(context_dir))


def test_plan_on_a_project_whose_apis_are_not_enabled_yet(fake, context_dir):
    [result] = run_steps("image", mode=Mode.PLAN, prerequisites=False)
    assert [c.action for c in result.changes] == ["create"] * 7
    assert fake.mutating_requests() == []


def test_an_api_enabled_by_this_run_may_answer_service_disabled_for_a_while(ready):
    fake = ready
    for api in ("artifactregistry", "cloudbuild", "storage"):
        fake.fail(403, api=api, reason="SERVICE_DISABLED", metadata={"service": f"{api}.googleapis.com"})
    config = settings()
    ctx = StepContext(settings=config, clients=Clients(config.project))
    ctx.enabled_now |= {"artifactregistry.googleapis.com", "cloudbuild.googleapis.com", "storage.googleapis.com"}
    result = run_step(BY_NAME["image"], ctx)
    assert result.status is Status.CREATED
    assert all(f.times == 0 for f in fake.faults)


def test_a_build_in_progress_is_waited_for_not_started_twice(ready, context_dir):
    fake = ready
    # Counted, not timed: the build is still running when the rerun looks, however slow the machine.
    fake.cloudbuild_reads_to_finish = 2
    # An interrupted run: the source was uploaded and the build started; nobody waited for it.
    with pytest.raises(KeyboardInterrupt):
        config = settings()
        ctx = StepContext(settings=config, clients=Clients(config.project))
        ctx.on_event = lambda event: _interrupt_when_building(event)
        run_step(BY_NAME["image"], ctx)
    assert [b["status"] for b in fake.builds()] == ["WORKING"]
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert [b["status"] for b in fake.builds()] == ["SUCCESS"]
    assert f"mlflow-server:{image_tag(context_dir)}" in fake.registry_tags("mlflow")


def _interrupt_when_building(event) -> None:
    if event.message.startswith("building "):
        raise KeyboardInterrupt


def test_an_installed_package_ships_the_whole_build_context():
    """`pip install .` (not editable) finds the context under share/mlflow-gcp/container: the data-files of
    pyproject.toml must hold every file the image step hashes and uploads, so the tag is the same too."""
    import glob
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from mlflow_gcp.build_context import context_files

    root = Path(__file__).resolve().parent.parent
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {
        str(Path(target, Path(path).name).relative_to("share/mlflow-gcp/container"))
        for target, patterns in data_files.items()
        for pattern in patterns
        for path in glob.glob(str(root / pattern))
    }
    assert set(context_files(root / "container")) <= shipped


def test_a_region_refused_by_cloud_build_builds_in_global(ready, context_dir):
    """New or low-usage projects may not build in most regions: the build runs in `global`, the image still goes
    to the regional repository, and the user is told."""
    fake = ready
    fake.cloudbuild_refused_regions.add("europe-west1")
    config = settings()
    logs: list[str] = []
    ctx = StepContext(settings=config, clients=Clients(config.project), on_event=lambda e: logs.append(e.message))
    result = run_step(BY_NAME["image"], ctx)
    assert result.status is Status.CREATED
    [build] = fake.builds()
    assert build["status"] == "SUCCESS"
    assert "/locations/global/builds/" in build["name"]
    assert f"mlflow-server:{image_tag(context_dir)}" in fake.registry_tags("mlflow")
    assert any("refuses builds in europe-west1" in line and "global" in line for line in logs)
    assert_rerun_sends_nothing(fake, "image")


def test_a_global_build_in_progress_is_waited_for(ready, context_dir):
    fake = ready
    fake.cloudbuild_refused_regions.add("europe-west1")
    fake.cloudbuild_reads_to_finish = 2  # still running when the rerun looks, however slow the machine
    with pytest.raises(KeyboardInterrupt):
        config = settings()
        ctx = StepContext(settings=config, clients=Clients(config.project))
        ctx.on_event = lambda event: _interrupt_when_building(event)
        run_step(BY_NAME["image"], ctx)
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert [b["status"] for b in fake.builds()] == ["SUCCESS"]


# -- the build's own service account (secure-by-default organisations) ------------------------------------------
BUILD_ACCOUNT = f"mlflow-build@{PROJECT}.iam.gserviceaccount.com"
BUILD_MEMBER = f"serviceAccount:{BUILD_ACCOUNT}"


def _roles_of(fake, key: str, member: str) -> set[str]:
    return {b["role"] for b in fake.policies.get(key, {}).get("bindings", []) if member in b["members"]}


def test_in_a_secure_by_default_org_the_build_runs_as_its_own_least_privileged_account(ready, context_dir):
    fake = ready
    fake.secure_by_default_org = True
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    [build] = fake.builds()
    assert build["status"] == "SUCCESS", build.get("statusDetail")
    assert build["serviceAccount"] == f"projects/{PROJECT}/serviceAccounts/{BUILD_ACCOUNT}"
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert fake.service_account(BUILD_ACCOUNT)["displayName"] == "MLflow image builder (mlflow-gcp)"
    # Read on the staging bucket, write on the repository, logs on the project: nothing else.
    assert _roles_of(fake, f"projects/_/buckets/{STAGING}", BUILD_MEMBER) == {"roles/storage.objectViewer"}
    assert _roles_of(fake, REPOSITORY, BUILD_MEMBER) == {"roles/artifactregistry.writer"}
    assert _roles_of(fake, f"projects/{PROJECT}", BUILD_MEMBER) == {"roles/logging.logWriter"}
    assert [b for b in fake.policies[f"projects/{PROJECT}"]["bindings"] if b["role"] == "roles/owner"]
    assert f"mlflow-server:{image_tag(context_dir)}" in fake.registry_tags("mlflow")
    assert_rerun_sends_nothing(fake, "image")


def test_a_grant_removed_by_hand_is_restored_before_the_next_build(ready, context_dir):
    fake = ready
    fake.secure_by_default_org = True
    run_steps("image")
    policy = fake.policies[f"projects/{PROJECT}"]
    policy["bindings"] = [b for b in policy["bindings"] if b["role"] != "roles/logging.logWriter"]
    (context_dir / "app" / "entrypoint.py").write_text("print('changed')\n")
    [result] = run_steps("image")
    assert (f"grant logging.logWriter to mlflow-build on project {PROJECT}", "create") in [
        (c.resource, c.action) for c in result.changes
    ]
    assert [b["status"] for b in fake.builds()] == ["SUCCESS", "SUCCESS"]


def test_fake_secure_by_default_org_fails_a_build_as_the_default_account(ready, context_dir):
    """The fake as Google: in such an organisation the default account holds no role, so a build that names no
    account cannot even fetch its source; a build that names one must choose its logging."""
    fake = ready
    fake.secure_by_default_org = True
    run_steps("image")
    client = Clients(PROJECT).cloud_build()
    [done] = fake.builds()
    source = {"storage_source": {"bucket": STAGING, "object_": done["source"]["storageSource"]["object"]}}
    build = {"source": source, "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}]}
    operation = client.create_build(request={"parent": f"projects/{PROJECT}/locations/europe-west1", "build": build})
    with pytest.raises(gexc.GoogleAPICallError):
        operation.result(timeout=10)
    failed = next(b for b in fake.builds() if b["id"] != done["id"])
    assert failed["status"] == "FAILURE"
    assert "does not have storage.objects.get access" in failed["statusDetail"]
    assert failed["serviceAccount"].endswith("-compute@developer.gserviceaccount.com")
    with pytest.raises(gexc.BadRequest, match="CLOUD_LOGGING_ONLY"):
        client.create_build(
            request={
                "parent": f"projects/{PROJECT}/locations/europe-west1",
                "build": {**build, "service_account": f"projects/{PROJECT}/serviceAccounts/{BUILD_ACCOUNT}"},
            }
        )


def test_the_build_account_setting_names_the_account(ready):
    fake = ready
    fake.secure_by_default_org = True
    run_steps("image", build_service_account="team-image-builder")
    [build] = fake.builds()
    assert build["serviceAccount"].endswith(f"/team-image-builder@{PROJECT}.iam.gserviceaccount.com")
    assert build["status"] == "SUCCESS"


# -- whose staging bucket? ---------------------------------------------------------------------------------------
def test_a_readable_staging_bucket_of_another_project_is_never_used(ready):
    """Anyone can create PROJECT_cloudbuild first and let us write to it: the sources would go to a stranger's bucket
    and the build would run what they put there."""
    fake = ready
    fake.bucket_of_another_project(STAGING)
    with pytest.raises(NameTakenError, match="another project") as info:
        run_steps("image")
    assert "--staging-bucket" in info.value.hint
    assert fake.objects(STAGING) == {}
    assert fake.builds() == []
    assert not [r for r in fake.mutating_requests() if STAGING in r.path]


def test_another_staging_bucket_can_be_named(ready, context_dir):
    fake = ready
    fake.bucket_of_another_project(STAGING)
    [result] = run_steps("image", staging_bucket="demo-project-builds")
    assert result.status is Status.CREATED
    assert f"mlflow-gcp/source-{image_tag(context_dir)}.tgz" in fake.objects("demo-project-builds")
    assert fake.objects(STAGING) == {}


def test_a_source_object_whose_content_differs_is_replaced_not_built(ready, context_dir):
    """A source object is reused by its content hash, never by its name alone."""
    fake = ready
    run_steps("image", mode=Mode.PLAN)
    ctx = StepContext(settings=settings(), clients=Clients(PROJECT))
    bucket = ctx.clients.storage().bucket(STAGING)
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    ctx.clients.storage().create_bucket(bucket, location="europe-west1")
    name = f"mlflow-gcp/source-{image_tag(context_dir)}.tgz"
    bucket.blob(name).upload_from_string(b"not this context")
    [result] = run_steps("image")
    assert result.status is Status.CREATED
    assert fake.objects(STAGING)[name] == build_context.pack(context_dir)
    [build] = fake.builds()
    assert build["status"] == "SUCCESS", build.get("statusDetail")
    assert build["source"]["storageSource"]["generation"] == fake.state["objects"][STAGING][name]["generation"]


def test_down_removes_our_sources_and_a_staging_bucket_it_made(ready):
    fake = ready
    run_steps("image")
    ctx = StepContext(settings=settings(), clients=Clients(PROJECT))
    staging = next(r for r in image_resources(ctx) if r.kind == "staging bucket")
    other = ctx.clients.storage().bucket(STAGING).blob("someone-else/source.tgz")
    other.upload_from_string(b"theirs")
    staging.delete(staging.read())
    assert list(fake.objects(STAGING)) == ["someone-else/source.tgz"]  # not ours: kept, and so is the bucket
    other.delete()
    staging.delete(staging.read())
    assert fake.bucket(STAGING) is None
