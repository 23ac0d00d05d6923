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

from collections.abc import Iterator

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.resources.iam import IamBinding
from mlflow_gcp.resources.project import project_policy_io
from mlflow_gcp.steps.bucket import bucket_policy_io
from mlflow_gcp.steps.image_build import LOG_WRITER, OBJECT_VIEWER, REPOSITORY_WRITER, ServerImage
from mlflow_gcp.steps.image_storage import DockerRepository, StagingBucket, repository_policy_io
from mlflow_gcp.steps.service_account import ServiceAccount

BUILD_DISPLAY_NAME = "MLflow image builder (mlflow-gcp)"
BUILD_DESCRIPTION = (
    "Builds the MLflow server image with Cloud Build: reads the staging bucket, pushes to the repository, writes "
    "logs. Managed by mlflow-gcp."
)


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
