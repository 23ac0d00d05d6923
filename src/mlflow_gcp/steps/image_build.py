"""The server image, built by Cloud Build as `mlflow-build` from the packed build context, unless its tag (a hash
of the context) is already in the repository: the upload, the build and its region, and the build's failures
told (a denied grant, a refused region, a caller who may not act as the build account)."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from google.api_core import exceptions as gexc

from mlflow_gcp import build_context
from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import (
    BuildPermissionError,
    MlflowGcpError,
    OperationFailedError,
    PermissionDeniedError,
    PrerequisiteMissingError,
)
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import google_message
from mlflow_gcp.gcp.operations import wait, wait_gapic
from mlflow_gcp.steps.image_storage import (
    IMAGE_NAME,
    REPOSITORY_TIMEOUT,
    SOURCE_PREFIX,
    DockerRepository,
    StagingBucket,
    image_uri,
)

OBJECT_VIEWER = "roles/storage.objectViewer"
REPOSITORY_WRITER = "roles/artifactregistry.writer"
LOG_WRITER = "roles/logging.logWriter"
BUILDER = "gcr.io/cloud-builders/docker"
BUILD_TIMEOUT = 1200  # seconds, the build's own limit
WAIT_TIMEOUT = BUILD_TIMEOUT + 600.0  # the build may queue first
GLOBAL = "global"
LOCATIONS_DOC = "https://cloud.google.com/build/docs/locations"
# Cloud Build's answer (400 FAILED_PRECONDITION, no ErrorInfo to match on) when a new or low-usage project may not
# build in a region (google-github-actions/deploy-cloudrun#480).
REGION_REFUSED = "cannot run builds in this region"
UPLOAD_ATTEMPTS = 3
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


class ServerImage(Resource):
    kind = "image"

    def __init__(
        self, ctx: StepContext, repository: DockerRepository, staging: StagingBucket, build_account: str
    ) -> None:
        self.repository = repository
        self.staging = staging
        self.build_account = build_account
        self.context_dir: Path = build_context.container_dir()
        self.tag = build_context.image_tag(self.context_dir, ctx.settings.mlflow_version)
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
            "steps": [
                {
                    "name": BUILDER,
                    "args": [
                        "build",
                        *build_context.build_args(self.context_dir, self.ctx.settings.mlflow_version),
                        "-t",
                        self.uri,
                        ".",
                    ],
                }
            ],
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
                    lambda location=location: (
                        client.create_build(
                            request={"parent": f"projects/{project}/locations/{location}", "build": build}
                        ).metadata.build
                    ),
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
