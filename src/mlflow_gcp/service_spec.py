"""What the server container is given: the `mlflow-env` settings file and the Cloud Run service definition.

This is the contract between the deploy step and `container/entrypoint.py`: secrets reach the container only
as `secretKeyRef` environment variables (never plain values in the service), settings that are not secret
come from the `mlflow-env` secret (an env file, as in the manual process) and the service's own URLs come as
a plain variable so MLflow's host-header and CORS protection can allow exactly them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL, Settings, extra_host_names
from mlflow_gcp.labels import deployment_labels

CONTAINER_PORT = 8080
MANAGED_LABELS = {"managed-by": "mlflow-gcp"}

# Environment variable name -> Secret Manager secret id.
SECRET_ENV_VARS: dict[str, str] = {
    "MLFLOW_ENV": SECRET_ENV,
    "MYSQL_CREDENTIALS": SECRET_MYSQL,
    "MLFLOW_CREDENTIALS": SECRET_MLFLOW,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_FLASK_KEY,
}
SERVICE_URLS_VAR = "MLFLOW_GCP_SERVICE_URLS"

# What a client needs besides the login so artifacts over Cloud Run's 32 MiB request limit go straight to the
# bucket through URLs the server signs (multipart upload, direct download).
CLIENT_SETTINGS = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "true",
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(16 * 1024 * 1024),
}


DB_CA_SETTING = "DB_CA_CERT_B64"


def server_settings(settings: Settings, db_host: str, db_ca_cert_b64: str = "") -> dict[str, str]:
    """The content of the `mlflow-env` secret: everything the container needs that is not a password.
    `db_ca_cert_b64` (the instance's server CA certificates, PEM, base64 so it fits one line) makes the server
    connect with TLS and check the database's certificate against it."""
    values = {
        "DB_HOST": db_host,
        "DB_PORT": "3306",
        "DB_NAME": settings.db_name,
        "AUTH_DB_NAME": settings.auth_db_name,
        "ARTIFACTS_DESTINATION": f"gs://{settings.bucket_name}/mlflow-artifacts",
        "GCP_PROJECT": settings.project,
        "SERVICE_ACCOUNT_EMAIL": settings.service_account_email,
    }
    if db_ca_cert_b64:
        values[DB_CA_SETTING] = db_ca_cert_b64
    return values


def deterministic_url(settings: Settings, project_number: str) -> str:
    """The URL Cloud Run gives a service from its name, project number and region, known before it exists
    (https://cloud.google.com/run/docs/triggering/https-request#deterministic)."""
    return f"https://{settings.service}-{project_number}.{settings.region}.run.app"


def own_urls(settings: Settings, project_number: str) -> tuple[str, ...]:
    """What the server is told its URLs are: the deterministic one and the extra hosts. The server also accepts
    the service's other `SERVICE-*.run.app` name (run.app is a domain only Google serves), so the first
    deploy needs no second revision to tell the server its URLs."""
    extra = (f"https://{host}" for host in extra_host_names(settings.extra_hosts))
    return (deterministic_url(settings, project_number), *extra)


def render_env_file(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


@dataclass(frozen=True)
class ServiceInputs:
    image: str
    connector: str  # projects/P/locations/R/connectors/NAME; "" with Direct VPC egress
    service_urls: tuple[str, ...] = ()  # known once the service exists
    # Secret id -> version number to pin; "latest" where unknown.
    secret_versions: Mapping[str, str] = field(default_factory=dict)
    # Direct VPC egress: (network, subnetwork) names, instead of a connector.
    network_interface: tuple[str, str] | None = None


def build_service(settings: Settings, inputs: ServiceInputs) -> dict[str, Any]:
    """The Cloud Run v2 Service, in the REST JSON shape, with only the fields this tool owns."""
    env: list[dict[str, Any]] = [
        {
            "name": var,
            "valueSource": {
                "secretKeyRef": {"secret": secret, "version": inputs.secret_versions.get(secret, "latest")}
            },
        }
        for var, secret in SECRET_ENV_VARS.items()
    ]
    if inputs.service_urls:
        env.append({"name": SERVICE_URLS_VAR, "value": ",".join(inputs.service_urls)})
    return {
        "labels": deployment_labels(settings),
        "ingress": "INGRESS_TRAFFIC_ALL",
        # MLflow checks the login itself; Cloud Run lets every request reach it.
        "invokerIamDisabled": True,
        "template": {
            "serviceAccount": settings.service_account_email,
            "scaling": {"minInstanceCount": settings.min_instances, "maxInstanceCount": settings.max_instances},
            "vpcAccess": vpc_access(inputs),
            "maxInstanceRequestConcurrency": 80,
            "timeout": "300s",
            "containers": [
                {
                    "image": inputs.image,
                    "ports": [{"name": "http1", "containerPort": CONTAINER_PORT}],
                    "resources": {
                        "limits": {"cpu": settings.cpu, "memory": settings.memory},
                        "cpuIdle": True,
                        "startupCpuBoost": True,
                    },
                    "env": env,
                    "startupProbe": {
                        "httpGet": {"path": "/health", "port": CONTAINER_PORT},
                        "periodSeconds": 5,
                        "timeoutSeconds": 3,
                        "failureThreshold": 36,
                    },
                }
            ],
        },
    }


def vpc_access(inputs: ServiceInputs) -> dict[str, Any]:
    """Traffic to private ranges (the database's IP) goes into the VPC: through the connector, or with Direct
    VPC egress through a network interface on a subnet (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc)."""
    if inputs.network_interface is not None:
        network, subnetwork = inputs.network_interface
        return {
            "networkInterfaces": [{"network": network, "subnetwork": subnetwork}],
            "egress": "PRIVATE_RANGES_ONLY",
        }
    return {"connector": inputs.connector, "egress": "PRIVATE_RANGES_ONLY"}


def container_environment(service: dict[str, Any], resolve_secret: Callable[[str, str], str]) -> dict[str, str]:
    """The environment a container of `service` starts with on Cloud Run, secret references resolved by
    `resolve_secret(secret_id, version)`. Used by the end-to-end tests to start the server exactly as
    Cloud Run would."""
    container = service["template"]["containers"][0]
    env = {"PORT": str(CONTAINER_PORT), "K_SERVICE": "mlflow"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueSource"]["secretKeyRef"]
            env[item["name"]] = resolve_secret(ref["secret"], ref.get("version", "latest"))
    return env
