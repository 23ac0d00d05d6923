"""The live Cloud Run service, read: where it is, whether it is ready, its URLs and the secret versions its
template pins. Reads only; steps (deploy, the password secrets) and operations (login, rotate, open) share it."""

from __future__ import annotations

from typing import Any

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.service_spec import SECRET_ENV_VARS, SERVICE_URLS_VAR

LATEST = "latest"


def service_path(settings: Settings) -> str:
    return f"projects/{settings.project}/locations/{settings.region}/services/{settings.service}"


def read_service(settings: Settings, clients: Clients) -> Any | None:
    """The Cloud Run service (run_v2.Service), or None."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp.errors import translate

    client = clients.run_services()
    try:
        return retry.call(lambda: client.get_service(name=service_path(settings)))
    except gexc.NotFound:
        return None
    except gexc.GoogleAPICallError as e:
        if retry.is_service_activating(e):  # SERVICE_DISABLED: a project where `up` has not run
            raise MlflowGcpError(
                f"Nothing is deployed in {settings.project}: the Cloud Run API is not enabled there, so there is no "
                "MLflow server yet.",
                "Run `mlflow-gcp up` to deploy one, or check --project.",
            ) from e
        raise translate(e, f"reading the Cloud Run service {settings.service}", settings.project) from e


def pinned_versions(service: Any) -> dict[str, str]:
    """Secret id → version the service's template refers to ("latest" when not pinned)."""
    pins: dict[str, str] = {}
    if service is None or not service.template.containers:
        return pins
    for env in service.template.containers[0].env:
        ref = env.value_source.secret_key_ref if env.value_source else None
        if ref and ref.secret and env.name in SECRET_ENV_VARS:
            pins[ref.secret.rsplit("/", 1)[-1]] = ref.version or LATEST
    return pins


def pinned_number(service: Any, secret_id: str) -> str | None:
    """The version number of `secret_id` the service pins; None when it refers to `latest` or not at all."""
    pin = pinned_versions(service).get(secret_id, "")
    return pin if pin.isdigit() else None


def service_ready(service: Any) -> bool:
    return service is not None and service.terminal_condition.state.name == "CONDITION_SUCCEEDED"


def urls_told_to_server(service: Any) -> tuple[str, ...]:
    """The URLs the live service's server was told (its MLFLOW_GCP_SERVICE_URLS), in order."""
    for container in service.template.containers[:1]:
        for env in container.env:
            if env.name == SERVICE_URLS_VAR and env.value:
                return tuple(url for url in env.value.split(",") if url)
    return ()
