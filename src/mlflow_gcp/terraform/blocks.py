"""What every resource of the module shares: the checkov skips (with reasons that follow the settings) and the
waits a new project needs."""

from __future__ import annotations

from mlflow_gcp.config import ENCRYPTED_ONLY, Settings
from mlflow_gcp.terraform.hcl import Block, Expr

# `time_sleep` (hashicorp/time) where Google needs time before the next call succeeds, as Google's own Terraform
# modules do (terraform-google-modules/project-factory waits after enabling APIs):
# - APIs answer SERVICE_DISABLED for a while after they are enabled (the tool retries them the same way);
# - the `default` network appears some time after the Compute API is enabled;
# - a new IAM grant takes minutes to apply: Cloud Run refuses a revision whose account cannot read its secrets yet
#   (https://cloud.google.com/iam/docs/access-change-propagation).
WAITS: dict[str, tuple[str, str]] = {
    "apis_ready": ("60s", "APIs just enabled answer SERVICE_DISABLED for a while"),
    "default_network": ("60s", "the default network appears after the Compute API is enabled"),
    "grants_ready": ("90s", "new IAM grants take minutes to apply"),
}


def checkov_skips(type_: str, settings: Settings) -> list[tuple[str, str]]:
    """checkov checks that do not fit this deployment, each with the reason written next to the skip."""
    if type_ == "google_artifact_registry_repository":
        return [
            ("CKV_GCP_84", "Holds only the server image built from public code; Google-managed encryption is enough.")
        ]
    if type_ == "google_storage_bucket":
        return [
            ("CKV_GCP_62", "Access logs of artifact reads are left to the team: Cloud Audit Logs covers data access."),
            ("CKV_GCP_78", "Runs write their artifacts once; MLflow keeps no history in object versions."),
        ]
    if type_ == "google_compute_subnetwork":
        return [
            ("CKV_GCP_26", "Flow logs of the server's egress subnet cost money; the team turns them on if it wants."),
            ("CKV_GCP_76", "The subnet is IPv4 only: no IPv6 Private Google Access to configure."),
        ]
    if type_ == "google_sql_database_instance":
        if settings.db_ssl_mode == ENCRYPTED_ONLY:
            tls = (
                "sslMode ENCRYPTED_ONLY requires TLS; client certificates are not asked (the server checks "
                "the instance's CA)."
            )
        else:
            tls = (
                f"sslMode {settings.db_ssl_mode} was chosen (--db-ssl-mode): unencrypted connections are accepted. "
                "The instance has no public IP; only the VPC reaches it."
            )
        return [
            ("CKV_GCP_6", tls),
            ("CKV_GCP_50", "MySQL flags are left at Cloud SQL's defaults, as `mlflow-gcp up` does."),
            ("CKV_GCP_79", "MySQL 8.4 is the newest major version Cloud SQL offers; the check knows other engines."),
            ("CKV2_GCP_20", "MySQL flags are left at Cloud SQL's defaults, as `mlflow-gcp up` does."),
            (
                "CKV2_GCP_7",
                "The MySQL user has a password: write-only (password_wo, kept out of the state) in a new module, the "
                "one in mysql-credentials when adopted; the check reads only `password`.",
            ),
        ]
    return []


class Resources:
    """Makes the module's resource blocks for one export: checkov skips from the settings, and in a new project
    every resource waits for API enablement (an adopted deployment has its APIs: no wait to plan)."""

    def __init__(self, settings: Settings, *, waits: bool) -> None:
        self.settings = settings
        self.waits = waits

    def resource(
        self,
        type_: str,
        name: str,
        body: dict,
        *,
        depends_on: list[str] | None = None,
        after_apis: bool = False,
        lifecycle: dict | None = None,
    ) -> Block:
        depends = list(depends_on or [])
        if after_apis:
            depends.insert(0, "time_sleep.apis_ready" if self.waits else "google_project_service.apis")
        if lifecycle:
            body = {**body, "lifecycle": Block("lifecycle", body=lifecycle)}
        if depends:
            body = {**body, "depends_on": [Expr(d) for d in depends]}
        comments = tuple(f"checkov:skip={check}:{reason}" for check, reason in checkov_skips(type_, self.settings))
        return Block("resource", (type_, name), body, comments)

    def wait(self, name: str, after: list[str]) -> list[Block]:
        if not self.waits:
            return []
        duration, _ = WAITS[name]
        return [
            Block(
                "resource",
                ("time_sleep", name),
                {"create_duration": duration, "depends_on": [Expr(a) for a in after]},
            )
        ]
