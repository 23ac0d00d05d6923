"""What adoption reads from the running deployment: the secret versions and the image of the Cloud Run service."""

from __future__ import annotations

from google.api_core import exceptions as gexc

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.gcp.errors import translate
from mlflow_gcp.terraform.main_tf import LiveDeployment


def read_live_deployment(settings: Settings) -> LiveDeployment:
    name = f"projects/{settings.project}/locations/{settings.region}/services/{settings.service}"
    client = Clients(settings.project).run_services()
    try:
        service = client.get_service(name=name)
    except gexc.NotFound as e:
        raise MlflowGcpError(
            f"The Cloud Run service {settings.service} does not exist in {settings.project} ({settings.region}), "
            "so there is no deployment to adopt.",
            "Run `mlflow-gcp export terraform` without --import to write a module that creates everything.",
        ) from e
    except gexc.GoogleAPICallError as e:
        raise translate(e, f"reading the Cloud Run service {settings.service}", settings.project) from e
    container = service.template.containers[0]
    versions = {
        env.value_source.secret_key_ref.secret.rsplit("/", 1)[-1]: env.value_source.secret_key_ref.version
        for env in container.env
        if env.value_source and env.value_source.secret_key_ref.secret
    }
    return LiveDeployment(secret_versions=versions, image=container.image)
