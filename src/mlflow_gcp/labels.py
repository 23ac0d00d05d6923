"""The labels on everything the tool makes (issue 20): `managed-by: mlflow-gcp`, and the deployment it belongs to.

The deployment is named by its Cloud Run service (unique in its project and region, and a valid label value:
lowercase letters, digits and hyphens, at most 49 characters). With that label `status` and `down` find what a
deployment left behind under other names (the old Cloud SQL instance after a move, a bucket of an earlier name).
Labels are metadata: adding one changes nothing a user sees and restarts nothing.

Serverless VPC Access connectors and Compute networks and subnetworks have no labels (their REST resources have
no such field); the tool marks those it makes by their description instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow_gcp.config import Settings

MANAGED_BY = {"managed-by": "mlflow-gcp"}
DEPLOYMENT_LABEL = "mlflow-gcp-deployment"


def deployment_labels(settings: Settings) -> dict[str, str]:
    """The labels every labelled resource of this deployment carries."""
    return {**MANAGED_BY, DEPLOYMENT_LABEL: str(settings.service)}


def lacks_labels(live: Mapping[str, str] | None, settings: Settings) -> bool:
    """Whether a resource's live labels miss (or differ in) one of ours; labels of others are left alone."""
    live = live or {}
    return any(live.get(key) != value for key, value in deployment_labels(settings).items())


def with_labels(live: Mapping[str, str] | None, settings: Settings) -> dict[str, str]:
    """The live labels kept, ours put back."""
    return {**dict(live or {}), **deployment_labels(settings)}


def of_deployment(live: Mapping[str, str] | None, settings: Settings) -> bool:
    """Made by this tool for this deployment, or made by it before the deployment label existed (one deployment
    per project: the settings record and the secrets have fixed names)."""
    live = live or {}
    return live.get("managed-by") == MANAGED_BY["managed-by"] and live.get(DEPLOYMENT_LABEL, settings.service) == str(
        settings.service
    )


# The MLflow version whose schema the Cloud SQL instance's databases hold (issue 24). On the instance, not the
# service: `down` deletes the service and keeps the instance with its data, and the next `up` must know what the
# data is. A label value allows no dot: `3.17.2` is written `3_17_2` (PEP 440 versions hold no underscore).
SCHEMA_LABEL = "mlflow-gcp-mlflow-version"
SCHEMA_NOT_KNOWN = "unknown"  # a migration under way, or data restored from a backup of an unknown MLflow


def schema_label_value(version: str) -> str:
    value = "".join(c if c.isalnum() or c in "-_" else "_" if c == "." else "-" for c in version.lower())
    return value[:63]


def schema_version(live: Mapping[str, str] | None) -> str:
    """The MLflow version a Cloud SQL instance's labels record its schema at; "" when none is recorded."""
    value = (live or {}).get(SCHEMA_LABEL, "")
    return "" if value in ("", SCHEMA_NOT_KNOWN) else value.replace("_", ".")
