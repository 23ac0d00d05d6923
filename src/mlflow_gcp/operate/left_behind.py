"""What a deployment left behind under other names, and its data resources deleted by hand (issue 20).

A move (`up --db-instance other --move-to-new-resources`, a new bucket name) leaves the old Cloud SQL instance or
bucket in place: it keeps the data and keeps billing, and the current settings no longer name it. Everything the
tool makes carries the label `mlflow-gcp-deployment` (mlflow_gcp.labels), so `status` and `down` list the labelled
resources the settings do not name. Listed: Cloud SQL instances (one project-wide list) and buckets (one list).
Not listed: Serverless VPC Access connectors (no labels; finding one would mean listing every region), and
Artifact Registry repositories and Cloud Run services of other regions (a list per region): since issue 20 a
region change is refused before anything is made, so none are left there by this tool's current version.
An instance the server runs on (a restore or its way back cut short between the record and the rollout) is not left
behind, whatever the settings name: it is never listed with the commands that delete it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow_gcp.config import Settings
from mlflow_gcp.labels import of_deployment

INSTANCE, BUCKET = "Cloud SQL instance", "bucket"


@dataclass(frozen=True)
class LeftBehind:
    kind: str  # INSTANCE or BUCKET
    name: str
    location: str
    delete: str  # the commands that delete it, once its data is no longer needed

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class LeftBehindReport:
    items: list[LeftBehind] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # what could not be listed, and why
    serving: str = ""  # the labelled instance the settings do not name but the server runs on (not listed)


def _instances(settings: Settings, clients, report: LeftBehindReport, serving_host: str) -> list[LeftBehind]:
    from mlflow_gcp.gcp import retry
    from mlflow_gcp.gcp.errors import execute
    from mlflow_gcp.operate.restore_plan import private_ip

    answer = retry.call(lambda: execute(clients.sqladmin().instances().list(project=settings.project)))
    found = []
    for item in answer.get("items", []):
        labels = (item.get("settings") or {}).get("userLabels")
        if of_deployment(labels, settings) and item.get("name") != settings.db_instance:
            if serving_host and private_ip(item) == serving_host:
                report.serving = item["name"]
                continue
            name, project = item["name"], settings.project
            found.append(
                LeftBehind(
                    INSTANCE,
                    name,
                    item.get("region", ""),
                    f"gcloud sql instances patch {name} --no-deletion-protection --project {project} && "
                    f"gcloud sql instances delete {name} --project {project}",
                )
            )
    return found


def _buckets(settings: Settings, clients) -> list[LeftBehind]:
    from mlflow_gcp.gcp import retry

    named = {settings.bucket_name, settings.staging_bucket_name}
    buckets = retry.call(lambda: list(clients.storage().list_buckets(project=settings.project)))
    return [
        LeftBehind(BUCKET, b.name, (b.location or "").lower(), f"gcloud storage rm --recursive gs://{b.name}")
        for b in buckets
        if of_deployment(b.labels, settings) and b.name not in named
    ]


def find_left_behind(settings: Settings, clients, serving_host: str = "") -> LeftBehindReport:
    """The deployment's labelled instances and buckets the settings do not name, but the instance at `serving_host`
    (the database the server runs on, when known). Reads only; a list that cannot be made (API not enabled: nothing
    there; no permission) is said, never an error of the command."""
    from google.api_core import exceptions as gexc

    report = LeftBehindReport()
    listers = (
        ("Cloud SQL instances", lambda: _instances(settings, clients, report, serving_host)),
        ("buckets", lambda: _buckets(settings, clients)),
    )
    for what, lister in listers:
        try:
            report.items += lister()
        except (gexc.NotFound, gexc.FailedPrecondition):
            continue  # the API is not enabled: nothing was ever made there
        except gexc.GoogleAPICallError as e:
            from mlflow_gcp.gcp import retry

            if not retry.is_service_activating(e):
                report.unlisted.append(f"{what}: {e.message}")
    return report


def deleted_instance_note(name: str, project: str) -> str:
    """A recorded Cloud SQL instance that no longer exists: what `up` would do and where the backups may be."""
    return (
        f"Cloud SQL instance {name} was deleted: `up` would create a NEW, EMPTY instance (the runs and users it "
        "held are gone unless restored from a backup); backups: Cloud SQL keeps a deleted instance's backups only "
        "if retained backups were enabled on it or a final backup was taken when it was deleted; list them with "
        f"`gcloud sql backups list --project {project}` (Console: Cloud SQL > Backups) and restore one with "
        "`gcloud sql backups restore`"
    )
