"""Where the server image and its source live: the Artifact Registry Docker repository (with its IAM policy)
and the staging bucket the build context is uploaded to."""

from __future__ import annotations

import functools

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import (
    MlflowGcpError,
    NameTakenError,
)
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.operations import wait_gapic
from mlflow_gcp.labels import deployment_labels, lacks_labels, with_labels
from mlflow_gcp.resources.iam import Policy, proto_policy_io
from mlflow_gcp.resources.project import check_owned_bucket
from mlflow_gcp.service_spec import MANAGED_LABELS

IMAGE_NAME = "mlflow-server"
REPOSITORY_TIMEOUT = 300.0
SOURCE_PREFIX = "mlflow-gcp/"
STAGING_HINT = (
    "Pass another staging bucket with --staging-bucket NAME (or MLFLOW_GCP_STAGING_BUCKET), one of this project."
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
        if lacks_labels(dict(current.labels), self.ctx.settings):
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
                        "labels": deployment_labels(self.ctx.settings),
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
        labels = with_labels(dict(current.labels), self.ctx.settings)
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
        bucket.labels = deployment_labels(self.ctx.settings)
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
