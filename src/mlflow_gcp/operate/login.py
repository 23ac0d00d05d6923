"""The MLflow login a client needs: the service URL and the `mlflow-credentials` version the service runs with.

The service pins secret versions, so the login that works is the one of the pinned version, not necessarily
the latest (a rotation that did not finish leaves a newer, unused version). Reads only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.config import SECRET_ENV, SECRET_MLFLOW, Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.resources.live_service import LATEST, pinned_versions, read_service
from mlflow_gcp.resources.secret import decode_payload, split_credentials


@dataclass(frozen=True)
class Login:
    url: str
    username: str
    password: str = field(repr=False)  # never shown in a traceback or a log
    version: str = ""


def access(clients: Clients, project: str, secret_id: str, version: str = LATEST) -> tuple[str, str]:
    """(value, version number) of a secret version; a missing or disabled version is a clear error."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp.errors import is_failed_precondition

    client = clients.secrets()
    name = f"projects/{project}/secrets/{secret_id}/versions/{version}"
    try:
        response = retry.call(lambda: client.access_secret_version(name=name))
    except gexc.NotFound as e:
        raise MlflowGcpError(
            f"The secret {secret_id} (version {version}) does not exist.",
            "Run `mlflow-gcp up`: it makes a new password, applies it and rolls out the server that uses it.",
        ) from e
    except gexc.GoogleAPICallError as e:
        if not is_failed_precondition(e):
            raise
        raise MlflowGcpError(
            f"Version {version} of the secret {secret_id}, the one the service runs with, is disabled or "
            "destroyed, so its login cannot be read.",
            f"If it is only disabled, enable it again (`gcloud secrets versions enable {version} --secret "
            f"{secret_id}`). If it was destroyed (or must stay unused), run `mlflow-gcp up`: it makes a new "
            "password, applies it and rolls out the server that uses it.",
        ) from e
    number = response.name.rsplit("/", 1)[-1]
    return decode_payload(secret_id, number, response.payload.data), number


def pinned_env(clients: Clients, project: str, service: Any) -> str:
    """The mlflow-env version the service runs with: the server's settings (its database host, ...)."""
    return access(clients, project, SECRET_ENV, pinned_versions(service).get(SECRET_ENV, LATEST))[0]


def db_host(env: str) -> str:
    """DB_HOST of an mlflow-env content: the database the server connects to."""
    return next((line[8:].strip() for line in env.splitlines() if line.startswith("DB_HOST=")), "")


def login_of(clients: Clients, settings: Settings, service: Any) -> Login:
    """The login of the mlflow-credentials version the service runs with."""
    version = pinned_versions(service).get(SECRET_MLFLOW, LATEST)
    value, number = access(clients, settings.project, SECRET_MLFLOW, version)
    username, password = split_credentials(SECRET_MLFLOW, value)
    return Login(service.uri, username, password, number)


def current_login(settings: Settings, clients: Clients | None = None) -> Login:
    clients = clients or Clients(settings.project)
    service = read_service(settings, clients)
    if service is None or not service.uri:
        raise MlflowGcpError(
            f"The Cloud Run service {settings.service} does not exist in {settings.project}/{settings.region}.",
            "Run `mlflow-gcp up` first (or check --project, --region and --service).",
        )
    return login_of(clients, settings, service)
