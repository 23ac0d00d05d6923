"""Step `image`: the Artifact Registry Docker repository, then the server image built by Cloud Build.

The image tag is a hash of the build context, so an image whose tag is already in the repository is neither
uploaded nor built again. Otherwise the context is packed as a .tar.gz, uploaded to the staging bucket
`PROJECT_cloudbuild` (made in the region if missing, as `gcloud builds submit` does) and built by Cloud Build
with `docker build`, which pushes the image to the repository.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from google.api_core import exceptions as gexc

from mlflow_gcp import build_context
from mlflow_gcp.errors import MlflowGcpError, NameTakenError, OperationFailedError
from mlflow_gcp.gcp.operations import wait, wait_gapic
from mlflow_gcp.service_spec import MANAGED_LABELS
from mlflow_gcp.steps.base import Resource, StepContext

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
BUILD_DONE = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}


def image_uri(ctx: StepContext, tag: str) -> str:
    s = ctx.settings
    return f"{s.region}-docker.pkg.dev/{s.project}/{s.repository}/{IMAGE_NAME}:{tag}"


def staging_bucket_name(project: str) -> str:
    return f"{project}_cloudbuild"


class DockerRepository(Resource):
    kind = "Artifact Registry repository"

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
        try:
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
        except gexc.Conflict:
            # Created meanwhile, or by an interrupted run whose operation is still running: wait until readable.
            wait(self.read, is_done=bool, error_of=lambda _: None, what=f"Creating {self.label}", timeout=120)
            return
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


class ServerImage(Resource):
    kind = "image"

    def __init__(self, ctx: StepContext, repository: DockerRepository) -> None:
        self.context_dir: Path = build_context.container_dir()
        self.tag = build_context.context_hash(self.context_dir)
        self.uri = image_uri(ctx, self.tag)
        super().__init__(ctx, self.uri)
        self.tag_path = f"{repository.path}/packages/{IMAGE_NAME}/tags/{self.tag}"
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
    def _staging_bucket(self):
        client = self.ctx.clients.storage()
        call = functools.partial(self.ctx.call, "storage")
        name = staging_bucket_name(self.ctx.project)
        try:
            return call(lambda: client.get_bucket(name))
        except gexc.NotFound:
            pass
        except gexc.Forbidden as e:
            raise NameTakenError(
                f"The Cloud Build staging bucket {name} exists but this project cannot use it ({e.message}).",
                f"Grant the caller roles/storage.admin on gs://{name}, or delete it if it is yours.",
            ) from e
        self.ctx.log(f"creating the staging bucket gs://{name}")
        bucket = client.bucket(name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        bucket.labels = dict(MANAGED_LABELS)
        try:
            return call(lambda: client.create_bucket(bucket, location=self.ctx.region))
        except gexc.Conflict:
            try:
                return call(lambda: client.get_bucket(name))
            except gexc.Forbidden as e:
                raise NameTakenError(
                    f"The Cloud Build staging bucket name {name} belongs to another project.",
                    "Ask the owner of that bucket to delete it, or build from another project.",
                ) from e

    def _upload_source(self) -> tuple[str, str, int]:
        bucket = self._staging_bucket()
        call = functools.partial(self.ctx.call, "storage")
        blob = bucket.blob(f"mlflow-gcp/source-{self.tag}.tgz")
        try:
            existing = call(lambda: bucket.get_blob(blob.name))
        except gexc.NotFound:
            existing = None
        if existing is not None:  # the same context (same tag) was uploaded by an earlier run
            return bucket.name, blob.name, int(existing.generation)
        data = build_context.pack(self.context_dir)
        self.ctx.log(f"uploading the build context ({len(data) // 1024 + 1} KiB) to gs://{bucket.name}/{blob.name}")
        try:
            call(lambda: blob.upload_from_string(data, content_type="application/gzip", if_generation_match=0))
        except gexc.PreconditionFailed:
            pass  # uploaded meanwhile: same name, same content
        uploaded = call(lambda: bucket.get_blob(blob.name))
        return bucket.name, blob.name, int(uploaded.generation)

    # -- build ----------------------------------------------------------------------------------------------
    def _build(self, bucket: str, obj: str, generation: int) -> None:
        client = self.ctx.clients.cloud_build()
        call = functools.partial(self.ctx.call, "cloudbuild")
        region = self.ctx.region
        build = {
            "source": {"storage_source": {"bucket": bucket, "object_": obj, "generation": generation}},
            "steps": [{"name": BUILDER, "args": ["build", "-t", self.uri, "."]}],
            "images": [self.uri],
            "timeout": {"seconds": BUILD_TIMEOUT},
            "tags": ["mlflow-gcp"],
        }
        in_progress = self._build_in_progress(client, call)
        if in_progress is not None:  # started by an interrupted run: wait for it instead of building twice
            running, location = in_progress
            self.ctx.log(f"waiting for Cloud Build {running.id}, already building {self.uri}: {running.log_url}")
            try:
                self._wait_for_build(client, running.id, location)
                return
            except OperationFailedError as e:
                self.ctx.log(f"that build failed ({e.message}); building again")
        operation, location = self._create_build(client, call, build)
        build_id = operation.metadata.build.id
        where = "" if location == region else f" in {location}"
        self.ctx.log(f"building {self.uri}{where} (Cloud Build {build_id}): {operation.metadata.build.log_url}")
        self._wait_for_build(client, build_id, location)

    def _create_build(self, client, call, build: dict):
        """Starts the build in the region, or in `global` where Cloud Build refuses the region for this project.
        Returns the operation and the location the build runs in."""
        project, region = self.ctx.project, self.ctx.region
        for location in (region, GLOBAL):
            try:
                # `parent` only: with project_id the library would send the global (non-regional) request.
                operation = call(
                    lambda location=location: client.create_build(
                        request={"parent": f"projects/{project}/locations/{location}", "build": build}
                    )
                )
                return operation, location
            except (gexc.BadRequest, gexc.FailedPrecondition) as e:
                if location == GLOBAL or not is_region_refused(e):
                    raise
                self.ctx.log(
                    f"Cloud Build refuses builds in {region} on this project (quota restrictions of new or "
                    f"low-usage projects, see {LOCATIONS_DOC}): building in {GLOBAL} instead; the image still "
                    f"goes to the repository in {region}"
                )
        raise AssertionError("unreachable")

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

    def _wait_for_build(self, client, build_id: str, location: str) -> None:
        name = f"projects/{self.ctx.project}/locations/{location}/builds/{build_id}"
        wait(
            lambda: client.get_build(request={"name": name}),
            is_done=lambda b: b.status.name in BUILD_DONE,
            error_of=build_error,
            what=f"Cloud Build {build_id} of {self.uri}",
            timeout=WAIT_TIMEOUT,
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
    detail = build.status_detail or build.failure_info.detail or status
    return f"{status}: {detail}. Build log: {build.log_url}"


def resources(ctx: StepContext) -> Iterator[Resource]:
    repository = DockerRepository(ctx)
    yield repository
    yield ServerImage(ctx, repository)
