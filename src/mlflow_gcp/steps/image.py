"""Step `image`: the build's service account, the Artifact Registry Docker repository, the staging bucket, the
build account's three grants, then the server image built by Cloud Build.

The image tag is a hash of the build context, so an image whose tag is already in the repository is neither
uploaded nor built again. Otherwise the context is packed as a .tar.gz, uploaded to the staging bucket
`PROJECT_cloudbuild` (made in the region if missing, as `gcloud builds submit` does; a bucket of that name owned by
another project is refused) and built by Cloud Build with `docker build`, which pushes the image to the repository.

The build runs as `mlflow-build`, not as Google's default build account: projects that started using Cloud Build
since mid-2024 build as the Compute Engine default account, which in organisations created since May 2024 holds no
role (https://cloud.google.com/build/docs/cloud-build-service-account-updates,
https://cloud.google.com/resource-manager/docs/secure-by-default-organizations). `mlflow-build` reads the staging
bucket, writes to the repository and writes logs, nothing else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.api_core import exceptions as gexc

from mlflow_gcp import build_context
from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import (
    BuildPermissionError,
    MlflowGcpError,
    NameTakenError,
    OperationFailedError,
    PermissionDeniedError,
    PrerequisiteMissingError,
)
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import google_message
from mlflow_gcp.gcp.operations import wait, wait_gapic
from mlflow_gcp.resources.iam import IamBinding, Policy, proto_policy_io
from mlflow_gcp.resources.project import check_owned_bucket, project_policy_io
from mlflow_gcp.service_spec import MANAGED_LABELS
from mlflow_gcp.steps.bucket import bucket_policy_io
from mlflow_gcp.steps.service_account import ServiceAccount

IMAGE_NAME = "mlflow-server"
BUILDER = "gcr.io/cloud-builders/docker"
BUILD_TIMEOUT = 1200  # seconds, the build's own limit
WAIT_TIMEOUT = BUILD_TIMEOUT + 600.0  # the build may queue first
REPOSITORY_TIMEOUT = 300.0
GLOBAL = "global"
LOCATIONS_DOC = "https://cloud.google.com/build/docs/locations"
# Cloud Build's answer (400 FAILED_PRECONDITION, no ErrorInfo to match on) when a new or low-usage project may not
# build in a region (google-github-actions/deploy-cloudrun#480).
REGION_REFUSED = "cannot run builds in this region"
SOURCE_PREFIX = "mlflow-gcp/"
UPLOAD_ATTEMPTS = 3
STAGING_HINT = (
    "Pass another staging bucket with --staging-bucket NAME (or MLFLOW_GCP_STAGING_BUCKET), one of this project."
)
BUILD_DISPLAY_NAME = "MLflow image builder (mlflow-gcp)"
BUILD_DESCRIPTION = (
    "Builds the MLflow server image with Cloud Build: reads the staging bucket, pushes to the repository, writes "
    "logs. Managed by mlflow-gcp."
)
OBJECT_VIEWER = "roles/storage.objectViewer"
REPOSITORY_WRITER = "roles/artifactregistry.writer"
LOG_WRITER = "roles/logging.logWriter"
BUILD_DONE = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
# The longest pause between two builds while the build account's grants apply.
BUILD_RETRY_MAX_DELAY = 60.0
# Cloud Build's refusal (403, no ErrorInfo to match on) when the caller may not act as the account a build names.
ACT_AS_REFUSED = "permission to act as service account"
PROPAGATION_DOC = "https://cloud.google.com/iam/docs/access-change-propagation"


@dataclass(frozen=True)
class BuildGrant:
    """A grant the build account needs, and the permissions a failed build names when it was denied them."""

    permissions: tuple[str, ...]
    needs: str
    role: str


BUILD_GRANTS = (
    BuildGrant(("storage.objects.get", "storage.objects.list"), "read the build source", OBJECT_VIEWER),
    BuildGrant(("artifactregistry.repositories.uploadArtifacts",), "push the image", REPOSITORY_WRITER),
    BuildGrant(("logging.logEntries.create", LOG_WRITER), "write the build's logs", LOG_WRITER),
)


def image_uri(ctx: StepContext, tag: str) -> str:
    s = ctx.settings
    return f"{s.region}-docker.pkg.dev/{s.project}/{s.repository}/{IMAGE_NAME}:{tag}"


class DockerRepository(Resource):
    kind = "Artifact Registry repository"
    # "Already exists" while the create of an interrupted run still runs: readable once it is done.
    appear_timeout = 120.0

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.repository)
        self.parent = f"projects/{ctx.project}/locations/{ctx.region}"
        self.path = f"{self.parent}/repositories/{self.name}"
        self._client = ctx.clients.artifact_registry()
        self._call = functools.partial(ctx.call, "artifactregistry")

    def read(self):
        try:
            return self._call(lambda: self._client.get_repository(name=self.path))
        except gexc.NotFound:
            return None

    def drift(self, current) -> list[str]:
        fields = []
        if current.format_.name != "DOCKER":
            fields.append("format")
        if any(current.labels.get(k) != v for k, v in MANAGED_LABELS.items()):
            fields.append("labels")
        return fields

    def create(self) -> None:
        operation = self._call(
            lambda: self._client.create_repository(
                request={
                    "parent": self.parent,
                    "repository_id": self.name,
                    "repository": {
                        "format_": "DOCKER",
                        "description": "MLflow server images (mlflow-gcp)",
                        "labels": dict(MANAGED_LABELS),
                    },
                }
            )
        )
        wait_gapic(operation, what=f"Creating {self.label}", timeout=REPOSITORY_TIMEOUT)

    def update(self, current, fields: list[str]) -> None:
        if "format" in fields:
            raise MlflowGcpError(
                f"{self.label[0].upper()}{self.label[1:]} exists but holds {current.format_.name} packages, "
                "not Docker images.",
                "Choose another repository name with --repository.",
            )
        labels = {**dict(current.labels), **MANAGED_LABELS}
        self._call(
            lambda: self._client.update_repository(
                request={"repository": {"name": self.path, "labels": labels}, "update_mask": {"paths": ["labels"]}}
            )
        )

    def details(self, current) -> dict[str, str]:
        return {"format": current.format_.name, "location": self.ctx.region}

    def outputs(self, current) -> dict[str, str]:
        return {"image.repository": f"{self.ctx.region}-docker.pkg.dev/{self.ctx.project}/{self.name}"}

    def delete(self, current) -> None:
        """Deletes the repository and every image in it."""
        try:
            operation = self._call(lambda: self._client.delete_repository(name=self.path))
        except gexc.NotFound:
            return
        wait_gapic(operation, what=f"Deleting {self.label}", timeout=REPOSITORY_TIMEOUT)


class StagingBucket(Resource):
    """The bucket Cloud Build reads the packed context from: `PROJECT_cloudbuild` unless --staging-bucket, made in
    the region if missing (as `gcloud builds submit` does). Anyone can create that name first, so a bucket of
    another project is a clear error, never used."""

    kind = "staging bucket"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.staging_bucket_name)
        self._client = ctx.clients.storage()
        self._call = functools.partial(ctx.call, "storage")

    def read(self):
        try:
            bucket = self._call(lambda: self._client.get_bucket(self.name))
        except gexc.NotFound:
            return None
        except gexc.Forbidden as e:
            if retry.is_service_activating(e):
                raise
            raise NameTakenError(
                f"The Cloud Build staging bucket gs://{self.name} exists but this project cannot read it: it "
                "belongs to another project, or the caller lacks storage.buckets.get on it.",
                STAGING_HINT,
            ) from e
        check_owned_bucket(self.ctx, bucket, "The Cloud Build staging bucket", STAGING_HINT)
        return bucket

    def create(self) -> None:
        bucket = self._client.bucket(self.name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        bucket.labels = dict(MANAGED_LABELS)
        try:
            self._call(lambda: self._client.create_bucket(bucket, project=self.ctx.project, location=self.ctx.region))
        except gexc.Conflict:
            self.read()  # ours (an earlier or concurrent run) or another project's: read tells, raising for the latter

    def details(self, current) -> dict[str, str]:
        return {"location": current.location or ""}

    def delete(self, current) -> None:
        """Deletes the sources mlflow-gcp uploaded; the bucket itself only when mlflow-gcp made it and nothing else
        is left in it (gcloud and others share `PROJECT_cloudbuild`)."""
        for blob in self._call(lambda: list(self._client.list_blobs(self.name, prefix=SOURCE_PREFIX))):
            try:
                self._call(lambda blob=blob: blob.delete())
            except gexc.NotFound:
                pass
        ours = all((current.labels or {}).get(k) == v for k, v in MANAGED_LABELS.items())
        if ours and not self._call(lambda: list(self._client.list_blobs(self.name, max_results=1))):
            try:
                self._call(lambda: current.delete())
            except gexc.NotFound:
                pass
        else:
            self.ctx.log(f"keeping gs://{self.name}: not made by mlflow-gcp, or it holds other files")


class ServerImage(Resource):
    kind = "image"

    def __init__(
        self, ctx: StepContext, repository: DockerRepository, staging: StagingBucket, build_account: str
    ) -> None:
        self.repository = repository
        self.staging = staging
        self.build_account = build_account
        self.context_dir: Path = build_context.container_dir()
        self.tag = build_context.context_hash(self.context_dir)
        self.uri = image_uri(ctx, self.tag)
        super().__init__(ctx, self.uri)
        self.tag_path = f"{repository.path}/packages/{IMAGE_NAME}/tags/{self.tag}"
        self._build_locations = (ctx.region, GLOBAL)
        self._registry = ctx.clients.artifact_registry()
        self._call = functools.partial(ctx.call, "artifactregistry")

    def read(self):
        try:
            return self._call(lambda: self._registry.get_tag(name=self.tag_path))
        except gexc.NotFound:  # the tag, or the repository in plan mode, does not exist
            return None

    def create(self) -> None:
        bucket, obj, generation = self._upload_source()
        self._build(bucket, obj, generation)

    # -- staging --------------------------------------------------------------------------------------------
    def _upload_source(self) -> tuple[str, str, int]:
        """The packed context in the staging bucket, as (bucket, object, generation). An object already there is
        reused only when its content hash is the context's: a name proves nothing."""
        bucket = self.staging.read()
        if bucket is None:
            raise PrerequisiteMissingError(f"The staging bucket gs://{self.staging.name} does not exist.")
        call = functools.partial(self.ctx.call, "storage")
        name = f"{SOURCE_PREFIX}source-{self.tag}.tgz"
        data = build_context.pack(self.context_dir)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        for _ in range(UPLOAD_ATTEMPTS):
            existing = call(lambda: bucket.get_blob(name))
            if existing is not None and existing.md5_hash == md5:
                return bucket.name, name, int(existing.generation)
            if existing is not None:
                self.ctx.log(
                    f"gs://{bucket.name}/{name} does not hold this build context (its hash differs): replacing it"
                )
            blob = bucket.blob(name)
            self.ctx.log(f"uploading the build context ({len(data) // 1024 + 1} KiB) to gs://{bucket.name}/{name}")
            try:
                call(
                    lambda blob=blob, existing=existing: blob.upload_from_string(
                        data,
                        content_type="application/gzip",
                        if_generation_match=int(existing.generation) if existing is not None else 0,
                    )
                )
            except gexc.PreconditionFailed:
                continue  # written meanwhile by someone else: check what it holds now
            # The build names this generation: what it reads is what was uploaded, whatever happens to the name.
            return bucket.name, name, int(blob.generation)
        raise MlflowGcpError(
            f"gs://{bucket.name}/{name} keeps changing while mlflow-gcp uploads the build context to it.",
            "Find out who writes to that bucket; pass another one with --staging-bucket NAME.",
        )

    # -- build ----------------------------------------------------------------------------------------------
    def _build(self, bucket: str, obj: str, generation: int) -> None:
        from google.cloud.devtools import cloudbuild_v1

        client = self.ctx.clients.cloud_build()
        call = functools.partial(self.ctx.call, "cloudbuild")
        region = self.ctx.region
        build = {
            "source": {"storage_source": {"bucket": bucket, "object_": obj, "generation": generation}},
            "steps": [{"name": BUILDER, "args": ["build", "-t", self.uri, "."]}],
            "images": [self.uri],
            "timeout": {"seconds": BUILD_TIMEOUT},
            "tags": ["mlflow-gcp"],
            # Its own account with only the grants of this step: in organisations made since May 2024 the default
            # account has no role at all. A build naming its account must choose where its logs go.
            "service_account": f"projects/{self.ctx.project}/serviceAccounts/{self.build_account}",
            "options": {"logging": cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY},
        }
        in_progress = self._build_in_progress(client, call)
        if in_progress is not None:  # started by an interrupted run: wait for it instead of building twice
            running, location = in_progress
            self.ctx.log(f"waiting for Cloud Build {running.id}, already building {self.uri}: {running.log_url}")
            try:
                self._finish_build(client, running.id, location)
                return
            except OperationFailedError as e:
                self.ctx.log(f"that build failed ({e.message}); building again")

        def build_once() -> None:
            started, location = self._create_build(client, call, build)
            where = "" if location == region else f" in {location}"
            self.ctx.log(f"building {self.uri}{where} (Cloud Build {started.id}): {started.log_url}")
            self._finish_build(client, started.id, location)

        # A build denied by a grant made minutes ago is built again once it has ended, until the grant applies.
        retry.call(build_once, predicate=retry.is_build_grant_not_yet_applied, maximum_delay=BUILD_RETRY_MAX_DELAY)

    def _create_build(self, client, call, build: dict):
        """Starts the build in the region, or in `global` where Cloud Build refuses the region for this project
        (remembered for the next build of this run). Returns the build started and the location it runs in.

        builds.create is not idempotent: after a lost answer, a build of this image that was not there before is
        ours (or that of another run building the same tag), so a second one is never started."""
        project, region = self.ctx.project, self.ctx.region
        for location in self._build_locations:
            try:
                known = {b.id for b in self._builds_of_image(client, call, location)}
                # `parent` only: with project_id the library would send the global (non-regional) request.
                started = call(
                    lambda location=location: client.create_build(
                        request={"parent": f"projects/{project}/locations/{location}", "build": build}
                    ).metadata.build,
                    applied=lambda location=location, known=known: next(
                        (b for b in self._builds_of_image(client, call, location) if b.id not in known), None
                    ),
                )
                return started, location
            except (gexc.Forbidden, gexc.PermissionDenied) as e:
                if ACT_AS_REFUSED in google_message(e):
                    raise self._act_as_error(e) from e
                raise
            except (gexc.BadRequest, gexc.FailedPrecondition) as e:
                if location == GLOBAL or not is_region_refused(e):
                    raise
                self._build_locations = (GLOBAL,)
                self.ctx.log(
                    f"Cloud Build refuses builds in {region} on this project (quota restrictions of new or "
                    f"low-usage projects, see {LOCATIONS_DOC}): building in {GLOBAL} instead; the image still "
                    f"goes to the repository in {region}"
                )
        raise AssertionError("unreachable")

    def _builds_of_image(self, client, call, location: str) -> list:
        parent = f"projects/{self.ctx.project}/locations/{location}"
        wanted = f'images="{self.uri}"'
        builds = call(lambda: list(client.list_builds(request={"parent": parent, "filter": wanted})))
        return [b for b in builds if self.uri in b.images]

    def _build_in_progress(self, client, call) -> tuple[object, str] | None:
        """A queued or running build of this very image, in the region or in `global` (where a refused region
        sends it), with its location; or None."""
        wanted = f'images="{self.uri}" AND (status="QUEUED" OR status="WORKING")'
        for location in (self.ctx.region, GLOBAL):
            parent = f"projects/{self.ctx.project}/locations/{location}"
            builds = call(lambda parent=parent: list(client.list_builds(request={"parent": parent, "filter": wanted})))
            running = next((b for b in builds if self.uri in b.images and b.status.name in ("QUEUED", "WORKING")), None)
            if running is not None:
                return running, location
        return None

    def _finish_build(self, client, build_id: str, location: str) -> None:
        """Waits for the build to end; raises BuildPermissionError when its account was denied one of its grants,
        OperationFailedError for any other failure."""
        name = f"projects/{self.ctx.project}/locations/{location}/builds/{build_id}"
        what = f"Cloud Build {build_id} of {self.uri}"
        done = wait(
            lambda: client.get_build(request={"name": name}),
            is_done=lambda b: b.status.name in BUILD_DONE,
            error_of=lambda _: None,
            what=what,
            timeout=WAIT_TIMEOUT,
        )
        message = build_error(done)
        if message is None:
            return
        grant = denied_grant(done)
        if grant is None:
            raise OperationFailedError(f"{what} failed: {message}")
        on = {
            OBJECT_VIEWER: f"gs://{self.staging.name}",
            REPOSITORY_WRITER: self.repository.label,
            LOG_WRITER: f"project {self.ctx.project}",
        }[grant.role]
        self.ctx.log(f"Cloud Build {build_id} failed: {self.build_account} may not {grant.needs} yet ({grant.role})")
        raise BuildPermissionError(
            f"{what} failed: its service account {self.build_account} was denied the permission to {grant.needs}. "
            f"Google said: {message}",
            f"mlflow-gcp grants it {grant.role} on {on}, and Google applies a grant within about 7 minutes "
            f"({PROPAGATION_DOC}); this one had not applied after that. Check that the grant is there "
            "(`mlflow-gcp status`) and that no IAM deny policy or VPC Service Controls perimeter blocks it, then run "
            "`mlflow-gcp up` again.",
        )

    def _act_as_error(self, exc: gexc.GoogleAPICallError) -> PermissionDeniedError:
        account, project = self.build_account, self.ctx.project
        return PermissionDeniedError(
            f"Cloud Build refused to start the image build as {account}: you may not act as that service account "
            f"(the permission iam.serviceAccounts.actAs; Google said: {google_message(exc)}).",
            f"Ask a project owner for roles/iam.serviceAccountUser on {account} (`gcloud iam service-accounts "
            f"add-iam-policy-binding {account} --project {project} --member user:YOUR_EMAIL "
            "--role roles/iam.serviceAccountUser`), or on the project, or for roles/owner; then run `mlflow-gcp up` "
            "again.",
        )

    def outputs(self, current) -> dict[str, str]:
        return {"image.uri": self.uri}

    def details(self, current) -> dict[str, str]:
        return {"uri": self.uri, "version": current.version.rsplit("/", 1)[-1]}

    def delete(self, current) -> None:
        """Deletes the image version the tag points to (with its tags)."""
        try:
            operation = self._call(
                lambda: self._registry.delete_version(request={"name": current.version, "force": True})
            )
        except gexc.NotFound:
            return
        wait_gapic(operation, what=f"Deleting {self.label}", timeout=REPOSITORY_TIMEOUT)


def is_region_refused(exc: BaseException) -> bool:
    return isinstance(exc, gexc.GoogleAPICallError) and REGION_REFUSED in (exc.message or "")


def build_error(build) -> str | None:
    """Google's reason a finished build did not succeed, with where to read its log."""
    status = build.status.name
    if status == "SUCCESS":
        return None
    detail = (build.status_detail or build.failure_info.detail or status).rstrip(".")
    return f"{status}: {detail}. Build log: {build.log_url}"


def denied_grant(build) -> BuildGrant | None:
    """The grant whose permission a failed build says its account was denied, or None. Google's failure type
    (FETCH_SOURCE_FAILED, PUSH_NOT_AUTHORIZED...) does not tell a denied permission from other causes; the detail
    names the permission (https://cloud.google.com/build/docs/troubleshooting)."""
    if build.status.name != "FAILURE":
        return None
    detail = f"{build.status_detail} {build.failure_info.detail}"
    return next((g for g in BUILD_GRANTS if any(p in detail for p in g.permissions)), None)


def repository_policy_io(ctx: StepContext, repository: DockerRepository):
    """The repository's IAM policy; while it does not exist (planning), an empty one."""
    get, set_ = proto_policy_io(ctx.clients.artifact_registry(), repository.path)

    def planned_get() -> Policy:
        try:
            return ctx.call("artifactregistry", get)
        except gexc.GoogleAPICallError as e:
            if (ctx.dry_run and isinstance(e, gexc.NotFound)) or ctx.absent_in_plan(e):
                return {}
            raise

    return planned_get, lambda policy: ctx.call("artifactregistry", lambda: set_(policy))


def resources(ctx: StepContext) -> Iterator[Resource]:
    account = ServiceAccount(
        ctx,
        ctx.settings.build_service_account,
        display_name=BUILD_DISPLAY_NAME,
        description=BUILD_DESCRIPTION,
        output_prefix="build_service_account",
    )
    yield account
    member = f"serviceAccount:{account.email}"
    repository = DockerRepository(ctx)
    yield repository
    staging = StagingBucket(ctx)
    yield staging
    # Least privilege: read on the staging bucket only, write on the repository only, logs on the project.
    get, set_ = bucket_policy_io(ctx, staging.name)
    yield IamBinding(ctx, staging.label, OBJECT_VIEWER, member, get, set_)
    get, set_ = repository_policy_io(ctx, repository)
    yield IamBinding(ctx, repository.label, REPOSITORY_WRITER, member, get, set_)
    get, set_ = project_policy_io(ctx)
    log_writer = IamBinding(ctx, f"project {ctx.project}", LOG_WRITER, member, get, set_)
    log_writer.target = account.label  # status folds it into the account's line: the project has none
    yield log_writer
    yield ServerImage(ctx, repository, staging, account.email)
