"""A deployment is recognised from its resources, never from the settings record alone (issue 20).

Without a record (`mlflow-gcp-settings` deleted in the Console, say), the settings of a run are the given ones and
the defaults: if the project already has a Cloud SQL instance or a Cloud Run service this tool labelled, under
other names, a run with those settings would build a second, empty deployment next to it. So the labelled
resources are listed first, and a run whose names miss them stops with the names to give.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError

MANAGED = ("managed-by", "mlflow-gcp")
DEPLOYMENT_LABEL = "mlflow-gcp-deployment"


@dataclass(frozen=True)
class Labelled:
    setting: str  # the setting that names it: db_instance or service
    name: str
    deployment: str  # the value of its deployment label, "" for a resource made before that label


def _labelled(labels: dict | None) -> bool:
    return (labels or {}).get(MANAGED[0]) == MANAGED[1]


def labelled_resources(settings: Settings, clients) -> list[Labelled]:
    """The Cloud SQL instances of the project and the Cloud Run services of the region labelled as made by this
    tool. An API not enabled yet (a new project) holds nothing."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp import retry
    from mlflow_gcp.gcp.errors import execute, translate

    found: list[Labelled] = []
    try:
        answer = retry.call(lambda: execute(clients.sqladmin().instances().list(project=settings.project)))
        for item in answer.get("items", []):
            labels = (item.get("settings") or {}).get("userLabels")
            if _labelled(labels):
                found.append(Labelled("db_instance", item["name"], labels.get(DEPLOYMENT_LABEL, "")))
        parent = f"projects/{settings.project}/locations/{settings.region}"
        for service in retry.call(lambda: list(clients.run_services().list_services(parent=parent))):
            if _labelled(dict(service.labels)):
                name = service.name.rsplit("/", 1)[-1]
                found.append(Labelled("service", name, service.labels.get(DEPLOYMENT_LABEL, "")))
    except (gexc.NotFound, gexc.FailedPrecondition):
        pass
    except gexc.GoogleAPICallError as e:
        if not retry.is_service_activating(e):
            raise translate(e, "listing the resources this tool made", settings.project) from e
    return found


def check_recognised(settings: Settings, clients) -> None:
    """No record: refuse settings whose instance or service is none of the labelled ones that exist."""
    found = labelled_resources(settings, clients)
    missed = [
        kind
        for kind in ("db_instance", "service")
        if any(r.setting == kind for r in found) and getattr(settings, kind) not in {r.name for r in found}
    ]
    if not missed:
        return
    listing = ", ".join(
        f"{'Cloud SQL instance' if r.setting == 'db_instance' else 'Cloud Run service'} {r.name}" for r in found
    )
    flags = " ".join(f"--{r.setting.replace('_', '-')} {r.name}" for r in found if r.setting in missed)
    raise MlflowGcpError(
        f"This project holds a deployment made by mlflow-gcp ({listing}), but the settings recorded with it (the "
        f"secret mlflow-gcp-settings) are gone, and these settings name other resources: the tool would build a "
        "second, empty deployment next to it. Nothing was changed.",
        f"Give the deployment's names as flags (e.g. `{flags}`, and --bucket, --db-name, --auth-db-name if they are "
        "not the defaults) and run the command again: `up` then writes the record anew.",
    )
