"""Step `bucket`: the GCS artifact bucket, writable by the server's service account only.

Uniform bucket-level access (no object ACLs), public access prevention enforced, in the deployment's region,
and `roles/storage.objectAdmin` for the service account on this bucket alone. Bucket names are global: a
name owned by another project is a clear error that suggests `--bucket`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import PENDING, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, NameTakenError
from mlflow_gcp.gcp import retry
from mlflow_gcp.labels import deployment_labels, lacks_labels, with_labels
from mlflow_gcp.resources.iam import IamBinding, Policy
from mlflow_gcp.resources.project import check_owned_bucket

MANAGED_LABELS = {"managed-by": "mlflow-gcp"}
OBJECT_ADMIN = "roles/storage.objectAdmin"
ENFORCED = "enforced"
STORAGE = "storage.googleapis.com"
DAY = 86400


def soft_delete_seconds(bucket) -> int:
    """How long Cloud Storage keeps a deleted or overwritten object restorable (0: soft delete off)."""
    return int(bucket.soft_delete_policy.retention_duration_seconds or 0)


def _taken(name: str) -> NameTakenError:
    return NameTakenError(
        f"The bucket name {name} belongs to another project (or you may not read it): bucket names are "
        "global across all of Google Cloud.",
        "Choose another name with `--bucket NAME` (or MLFLOW_GCP_BUCKET), e.g. one that starts with your project id.",
    )


class Bucket(Resource):
    kind = "bucket"
    holds_data = True

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.bucket_name)
        self.location = ctx.region.upper()
        self._client = ctx.clients.storage()

    def _call(self, fn, **kwargs):
        return self.ctx.call(STORAGE, fn, **kwargs)

    def read(self):
        try:
            current = self._call(lambda: self._client.lookup_bucket(self.name, retry=None))
        except gexc.GoogleAPICallError as e:
            if isinstance(e, gexc.Forbidden) and not retry.is_service_activating(e):
                # Google answers 403 for a bucket of another project, as it does to a caller without the
                # storage.buckets.get permission; both need another name or another account.
                raise _taken(self.name) from e
            raise
        if current is not None:
            # Readable is not ours: another project may have made the name first and let us read it.
            check_owned_bucket(self.ctx, current, "The artifact bucket", _taken(self.name).hint)
        return current

    def drift(self, current) -> list[str]:
        fields = []
        if (current.location or "").upper() != self.location:
            fields.append("location")
        if not current.iam_configuration.uniform_bucket_level_access_enabled:
            fields.append("uniformBucketLevelAccess")
        if current.iam_configuration.public_access_prevention != ENFORCED:
            fields.append("publicAccessPrevention")
        if lacks_labels(current.labels, self.ctx.settings):
            fields.append("labels")
        if soft_delete_seconds(current) != self.ctx.settings.bucket_soft_delete_days * DAY:
            fields.append("softDeletePolicy")
        return fields

    def create(self) -> None:
        bucket = self._client.bucket(self.name)
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = ENFORCED
        bucket.labels = deployment_labels(self.ctx.settings)
        bucket.soft_delete_policy.retention_duration_seconds = self.ctx.settings.bucket_soft_delete_days * DAY
        # "Already exists": ours (created meanwhile, or a retried insert that had succeeded) or someone else's;
        # the engine's read tells them apart (name_taken below), no message parsing needed.
        self._call(
            lambda: self._client.create_bucket(bucket, project=self.ctx.project, location=self.ctx.region, retry=None)
        )

    def name_taken(self) -> NameTakenError:
        return _taken(self.name)

    def update(self, current, fields: list[str]) -> None:
        if "location" in fields:
            raise MlflowGcpError(
                f"The bucket {self.name} exists in {current.location}, not in {self.location}; a bucket's "
                "location cannot change.",
                f"Pass `--region {current.location.lower()}`, or another bucket name with `--bucket NAME` "
                "(copy the artifacts over with `gcloud storage cp -r`).",
            )
        if "uniformBucketLevelAccess" in fields:
            current.iam_configuration.uniform_bucket_level_access_enabled = True
        if "publicAccessPrevention" in fields:
            current.iam_configuration.public_access_prevention = ENFORCED
        if "labels" in fields:
            current.labels = with_labels(current.labels, self.ctx.settings)
        if "softDeletePolicy" in fields:
            current.soft_delete_policy.retention_duration_seconds = self.ctx.settings.bucket_soft_delete_days * DAY
        self._call(lambda: current.patch(retry=None))

    def outputs(self, current) -> dict[str, str]:
        return {"bucket.name": current.name}

    def details(self, current) -> dict[str, str]:
        config = current.iam_configuration
        return {
            "location": current.location or "",
            "uniform access": "on" if config.uniform_bucket_level_access_enabled else "off",
            "public access prevention": config.public_access_prevention or "",
            "soft delete": f"{soft_delete_seconds(current) // DAY} d" if soft_delete_seconds(current) else "off",
        }

    def delete(self, current) -> None:
        """Deletes the artifacts too: `down` calls this only with --delete-data."""
        try:
            for blob in self._call(lambda: list(self._client.list_blobs(self.name, retry=None))):
                try:
                    self._call(lambda blob=blob: blob.delete(retry=None))
                except gexc.NotFound:
                    pass  # deleted meanwhile
            self._call(lambda: current.delete(retry=None))
        except gexc.NotFound:
            pass  # already gone


def bucket_policy_io(ctx: StepContext, name: str):
    """Getter and setter of the bucket's IAM policy as plain dicts (the REST JSON shape, etag included, so
    a concurrent write answers 412 and resources.iam redoes the read-modify-write). While the bucket does not
    exist (planning), the getter gives an empty policy, so the binding reads as absent."""
    from google.api_core.iam import Policy as ApiPolicy

    client = ctx.clients.storage()

    def get() -> Policy:
        try:
            policy = ctx.call(
                STORAGE, lambda: client.bucket(name).get_iam_policy(requested_policy_version=3, retry=None)
            )
        except gexc.GoogleAPICallError as e:
            if (ctx.dry_run and isinstance(e, gexc.NotFound)) or ctx.absent_in_plan(e):
                return {}
            raise
        return policy.to_api_repr()

    def set_(policy: Policy) -> None:
        ctx.call(
            STORAGE,
            lambda: client.bucket(name).set_iam_policy(ApiPolicy.from_api_repr(copy.deepcopy(policy)), retry=None),
        )

    return get, set_


def resources(ctx: StepContext) -> Iterator[Resource]:
    bucket = Bucket(ctx)
    yield bucket
    member = ctx.output("service_account.member", "service-account")
    if member == PENDING:  # planning before the account exists: its name is known all the same
        member = f"serviceAccount:{ctx.settings.service_account_email}"
    get, set_ = bucket_policy_io(ctx, bucket.name)
    yield IamBinding(ctx, f"bucket {bucket.name}", OBJECT_ADMIN, member, get, set_)
