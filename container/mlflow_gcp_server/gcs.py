"""MLflow's GCS artifact repository, with signed URLs that work on Cloud Run and direct downloads.

Registered for the `gs` scheme through the `mlflow.artifact_repository` entry point of this
directory's `mlflow_gcp_server-1.0.dist-info` (the entrypoint puts the directory on PYTHONPATH).

- Multipart uploads (MLflow's `/mlflow-artifacts/mpu/*`) sign one URL per part: the client PUTs
  the parts straight to GCS, so no request to Cloud Run carries more than a part of JSON.
- Downloads are offered as signed URLs too (`MultipartDownloadMixin`): the client reads large
  artifacts from GCS with Range requests instead of through Cloud Run's 32 MiB response limit.
"""

from __future__ import annotations

import datetime
import os
import posixpath

from mlflow.entities.presigned_download import PresignedDownloadUrlResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.artifact_repo import MultipartDownloadMixin
from mlflow.store.artifact.gcs_artifact_repo import GCSArtifactRepository

from mlflow_gcp_server.signing import storage_credentials


def storage_client():
    from google.cloud import storage

    credentials, project = storage_credentials()
    if credentials is None:
        return storage.Client.create_anonymous_client()
    return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or project, credentials=credentials)


class SignedUrlGCSArtifactRepository(GCSArtifactRepository, MultipartDownloadMixin):
    def __init__(self, artifact_uri, client=None, credential_refresh_def=None, tracking_uri=None,
                 registry_uri=None):
        super().__init__(
            artifact_uri,
            client=client or storage_client(),
            credential_refresh_def=credential_refresh_def,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
        )

    def get_download_presigned_url(self, artifact_path, expiration=300):
        bucket_name, root = self.parse_gcs_uri(self.artifact_uri)
        blob = self._get_bucket(bucket_name).get_blob(posixpath.join(root, artifact_path))
        if blob is None:
            raise MlflowException(f"Artifact '{artifact_path}' does not exist.", RESOURCE_DOES_NOT_EXIST)
        url = blob.generate_signed_url(
            version="v4", method="GET", expiration=datetime.timedelta(seconds=expiration)
        )
        return PresignedDownloadUrlResponse(url=url, headers={}, file_size=blob.size)
