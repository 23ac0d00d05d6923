"""main.tf: the resources of the deployment, as `up` makes them.

The desired state comes from the same code the steps use where one exists (the Cloud Run service from
`service_spec.build_service`, the `mlflow-env` content from `service_spec.server_settings`), fed with settings whose
values are Terraform variables, so the module cannot drift from what `up` builds. Settings that decide which
resources exist or a value that cannot change after creation (egress mode, the kind of network, secret
replication, the database's SSL mode) are fixed at export: the module is written for them (README.md says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlflow_gcp.config import (
    ENCRYPTED_ONLY,
    Settings,
    setting_fields,
)
from mlflow_gcp.labels import SCHEMA_LABEL, deployment_labels
from mlflow_gcp.resources.credential_record import APPLIED
from mlflow_gcp.service_spec import ServiceInputs, build_service, render_env_file, server_settings
from mlflow_gcp.steps.apis import REQUIRED_APIS
from mlflow_gcp.steps.bucket import DAY, OBJECT_ADMIN
from mlflow_gcp.steps.database import CHARSET, COLLATION
from mlflow_gcp.steps.image import BUILD_DESCRIPTION, BUILD_DISPLAY_NAME
from mlflow_gcp.steps.image_build import LOG_WRITER, REPOSITORY_WRITER
from mlflow_gcp.steps.network import MANAGED_DESCRIPTION
from mlflow_gcp.steps.service_account import DESCRIPTION, DISPLAY_NAME, TOKEN_CREATOR
from mlflow_gcp.terraform.blocks import Resources
from mlflow_gcp.terraform.hcl import Block, Expr
from mlflow_gcp.terraform.secrets_tf import ROTATED_SECRETS, RUN_MEMBER, SECRETS, secret_blocks

# Keys of the Cloud Run service that are maps in Terraform (the other objects are nested blocks).
MAP_ATTRIBUTES = frozenset({"labels", "limits", "annotations"})


@dataclass(frozen=True)
class LiveDeployment:
    """What adoption needs from the running deployment: the secret versions and the image it runs."""

    secret_versions: Mapping[str, str] = field(default_factory=dict)
    image: str = ""


def variable_settings() -> Settings:
    """Settings whose every value is its Terraform variable: what the steps' builders turn into HCL."""
    values = {}
    for f in setting_fields():
        values[f.name] = Expr(f"var.{f.name}") if isinstance(f.default, int) else "${var." + f.name + "}"
    values["bucket"] = "${local.bucket_name}"
    return Settings(**values)


def _camel_to_snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _as_body(value: Mapping) -> dict:
    """A Cloud Run REST JSON object as a Terraform body: snake_case keys, nested objects as blocks."""
    body: dict = {}
    for key, item in value.items():
        name = _camel_to_snake(key)
        if isinstance(item, Mapping) and name not in MAP_ATTRIBUTES:
            body[name] = Block(name, body=_as_body(item))
        elif isinstance(item, list) and item and all(isinstance(v, Mapping) for v in item):
            body[name] = [Block(name, body=_as_body(v)) for v in item]
        else:
            body[name] = dict(item) if isinstance(item, Mapping) else item
    return body


class MainTf:
    def __init__(self, settings: Settings, adopt: LiveDeployment | None, image_default: str) -> None:
        self.settings = settings
        self.adopt = adopt
        self.image_default = image_default
        self.new = adopt is None
        self.r = Resources(settings, waits=self.new)
        self.direct = settings.vpc_egress == "direct"
        self.default_network = settings.network == "default"
        self.network_id = (
            "data.google_compute_network.vpc.id" if self.default_network else "google_compute_network.vpc.id"
        )

    # -- network ---------------------------------------------------------------------------------------------
    def network(self) -> list[Block]:
        """The `default` network is Google's: read (once it exists), never made."""
        if self.default_network:
            body: dict = {"name": Expr("var.network")}
            if self.new:
                body["depends_on"] = [Expr("time_sleep.default_network")]
            return [
                *self.r.wait("default_network", ["time_sleep.apis_ready"]),
                Block("data", ("google_compute_network", "vpc"), body),
            ]
        body = {"name": Expr("var.network"), "auto_create_subnetworks": False, "description": MANAGED_DESCRIPTION}
        return [self.r.resource("google_compute_network", "vpc", body, after_apis=True)]

    def egress(self) -> tuple[list[Block], str | None]:
        """Direct VPC egress: the subnet (none on the `default` network, whose regional subnet Google made and
        which is named like it) and the expression of the subnet's name; a connector otherwise."""
        if not self.direct:
            connector = self.r.resource(
                "google_vpc_access_connector",
                "mlflow",
                {
                    "name": Expr("var.connector"),
                    "region": Expr("var.region"),
                    "network": Expr("var.network"),
                    "ip_cidr_range": Expr("var.connector_range"),
                    "machine_type": Expr("var.connector_machine_type"),
                    "min_instances": Expr("var.connector_min_instances"),
                    "max_instances": Expr("var.connector_max_instances"),
                },
                depends_on=[] if self.default_network else ["google_compute_network.vpc"],
                after_apis=True,
            )
            return [connector], None
        if self.default_network:
            return [], "${var.network}"
        body = {
            "name": Expr("var.egress_subnet"),
            "region": Expr("var.region"),
            "network": Expr(self.network_id),
            "ip_cidr_range": Expr("var.egress_subnet_range"),
            "private_ip_google_access": True,
            "description": f"Direct VPC egress of Cloud Run. {MANAGED_DESCRIPTION}",
        }
        return [
            self.r.resource("google_compute_subnetwork", "egress", body)
        ], "${google_compute_subnetwork.egress.name}"

    # -- database --------------------------------------------------------------------------------------------
    def database(self) -> list[Block]:
        instance_settings = {
            "tier": Expr("var.db_tier"),
            "edition": Expr("var.db_edition"),
            "deletion_protection_enabled": True,
            "disk_autoresize": True,
            "user_labels": Expr("local.labels"),
            "ip_configuration": Block(
                "",
                body={
                    "ipv4_enabled": False,
                    "private_network": Expr(self.network_id),
                    "ssl_mode": self.settings.db_ssl_mode,
                },
            ),
            "backup_configuration": Block("", body={"enabled": True, "binary_log_enabled": True}),
        }
        user: dict = {
            "name": Expr("var.db_user"),
            "instance": Expr("google_sql_database_instance.mlflow.name"),
            "host": "%",
        }
        if self.new:
            # Write-only: sent to Cloud SQL, never kept in the state (Terraform 1.11).
            user["password_wo"] = Expr("ephemeral.random_password.mysql.result")
            user["password_wo_version"] = Expr("var.password_version")
        # Adopted: the password stays the one in mysql-credentials (Terraform never reads it).
        return [
            self.r.resource(
                "google_compute_global_address",
                "peering",
                {
                    "name": Expr("var.peering_range"),
                    "purpose": "VPC_PEERING",
                    "address_type": "INTERNAL",
                    "prefix_length": Expr("var.peering_prefix_length"),
                    "network": Expr(self.network_id),
                    "description": f"Private services access range for Cloud SQL. {MANAGED_DESCRIPTION}.",
                    "labels": Expr("local.labels"),
                },
                after_apis=True,
            ),
            self.r.resource(
                "google_service_networking_connection",
                "private",
                {
                    "network": Expr(self.network_id),
                    "service": "servicenetworking.googleapis.com",
                    "reserved_peering_ranges": [Expr("google_compute_global_address.peering.name")],
                    # Cloud SQL stays registered as a producer after its deletion, and the connection cannot be
                    # deleted then (hashicorp/terraform-provider-google#16275).
                    "deletion_policy": "ABANDON",
                },
            ),
            self.r.resource(
                "google_sql_database_instance",
                "mlflow",
                {
                    "name": Expr("var.db_instance"),
                    "region": Expr("var.region"),
                    "database_version": Expr("var.db_version"),
                    "deletion_protection": True,
                    "settings": Block("", body=instance_settings),
                },
                depends_on=["google_service_networking_connection.private"],
                # `up` records on the instance the MLflow version its schema is at (steps/schema_record.py); the
                # module does not migrate, so it neither sets nor removes that label.
                lifecycle={"ignore_changes": [Expr(f'settings[0].user_labels["{SCHEMA_LABEL}"]')]},
            ),
            *[
                self.r.resource(
                    "google_sql_database",
                    name,
                    {
                        "name": Expr(f"var.{setting}"),
                        "instance": Expr("google_sql_database_instance.mlflow.name"),
                        "charset": CHARSET,
                        "collation": COLLATION,
                    },
                )
                for name, setting in (("runs", "db_name"), ("auth", "auth_db_name"))
            ],
            self.r.resource("google_sql_user", "mlflow", user),
        ]

    # -- identities and storage --------------------------------------------------------------------------------
    def accounts_and_bucket(self) -> list[Block]:
        return [
            self.r.resource(
                "google_service_account",
                "run",
                {"account_id": Expr("var.service_account"), "display_name": DISPLAY_NAME, "description": DESCRIPTION},
                after_apis=True,
            ),
            # The server signs artifact URLs with its own identity (IAM signBlob).
            self.r.resource(
                "google_service_account_iam_member",
                "run_signs_blobs",
                {
                    "service_account_id": Expr("google_service_account.run.name"),
                    "role": TOKEN_CREATOR,
                    "member": RUN_MEMBER,
                },
            ),
            self.r.resource(
                "google_storage_bucket",
                "artifacts",
                {
                    "name": Expr("local.bucket_name"),
                    "location": Expr("upper(var.region)"),
                    "uniform_bucket_level_access": True,
                    "public_access_prevention": "enforced",
                    "labels": Expr("local.labels"),
                    "force_destroy": False,
                    # The setting is in days, as `up` takes it; 0 turns soft delete off, as in the API.
                    "soft_delete_policy": Block(
                        "soft_delete_policy",
                        body={"retention_duration_seconds": Expr(f"var.bucket_soft_delete_days * {DAY}")},
                    ),
                },
                after_apis=True,
            ),
            self.r.resource(
                "google_storage_bucket_iam_member",
                "run_writes_artifacts",
                {"bucket": Expr("google_storage_bucket.artifacts.name"), "role": OBJECT_ADMIN, "member": RUN_MEMBER},
            ),
        ]

    def env_file(self) -> str:
        # The server checks the instance's CA when the instance accepts only encrypted connections.
        ca = (
            "${base64encode(google_sql_database_instance.mlflow.server_ca_cert[0].cert)}"
            if self.settings.db_ssl_mode == ENCRYPTED_ONLY
            else ""
        )
        return render_env_file(
            server_settings(
                variable_settings(),
                db_host="${google_sql_database_instance.mlflow.private_ip_address}",
                db_ca_cert_b64=ca,
            )
        )

    # -- image and service -----------------------------------------------------------------------------------
    def image_build(self) -> list[Block]:
        """The account the server image is built as (`gcloud builds submit --service-account`, see README.md),
        with what `up` gives it: write on the repository only and log writing on the project. Reading the build's
        source bucket is granted where gcloud makes it (README.md)."""
        member = Expr('"serviceAccount:${google_service_account.build.email}"')
        return [
            self.r.resource(
                "google_artifact_registry_repository",
                "mlflow",
                {
                    "repository_id": Expr("var.repository"),
                    "location": Expr("var.region"),
                    "format": "DOCKER",
                    "description": "MLflow server images (mlflow-gcp)",
                    "labels": Expr("local.labels"),
                },
                after_apis=True,
            ),
            self.r.resource(
                "google_service_account",
                "build",
                {
                    "account_id": Expr("var.build_service_account"),
                    "display_name": BUILD_DISPLAY_NAME,
                    "description": BUILD_DESCRIPTION,
                },
                after_apis=True,
            ),
            self.r.resource(
                "google_artifact_registry_repository_iam_member",
                "build_pushes_images",
                {
                    "location": Expr("google_artifact_registry_repository.mlflow.location"),
                    "repository": Expr("google_artifact_registry_repository.mlflow.name"),
                    "role": REPOSITORY_WRITER,
                    "member": member,
                },
            ),
            self.r.resource(
                "google_project_iam_member",
                "build_writes_logs",
                {"project": Expr("var.project"), "role": LOG_WRITER, "member": member},
            ),
        ]

    def secret_versions(self) -> dict[str, str]:
        if self.new:
            return {sid: "${google_secret_manager_secret_version." + n + ".version}" for n, sid in SECRETS.items()}
        versions = {sid: '${var.secret_versions["' + sid + '"]}' for sid in SECRETS.values()}
        for name in ROTATED_SECRETS:
            sid = SECRETS[name]
            # The version its user has (recorded by `up` and `credentials rotate`); the one pinned at export when
            # the secret has no record.
            versions[sid] = (
                "${lookup(data.google_secret_manager_secret."
                + name
                + f'.effective_annotations, "{APPLIED}", var.secret_versions["{sid}"])'
                + "}"
            )
        return versions

    def grants(self) -> list[str]:
        return [
            "google_service_account_iam_member.run_signs_blobs",
            "google_storage_bucket_iam_member.run_writes_artifacts",
            *[f"google_secret_manager_secret_iam_member.run_reads_{name}" for name in SECRETS],
        ]

    def service(self, egress_subnet: str | None) -> list[Block]:
        inputs = ServiceInputs(
            image="${local.image}",
            connector="" if self.direct else "${google_vpc_access_connector.mlflow.id}",
            service_urls=('${join(",", local.service_urls)}',),
            secret_versions=self.secret_versions(),
            network_interface=("${var.network}", egress_subnet) if self.direct else None,
        )
        service = build_service(variable_settings(), inputs)
        service["template"]["serviceAccount"] = "${google_service_account.run.email}"
        body = {"name": Expr("var.service"), "location": Expr("var.region"), **_as_body(service)}
        depends = ["time_sleep.grants_ready"] if self.new else self.grants()
        return [
            *self.r.wait("grants_ready", self.grants()),
            self.r.resource(
                "google_cloud_run_v2_service",
                "mlflow",
                body,
                depends_on=depends,
                # `up` and `credentials rotate` mark a revision that brings in a new password with a template label
                # (mlflow-gcp-new-password); other tools add their own. The module sets no template label.
                lifecycle={"ignore_changes": [Expr("template[0].labels")]},
            ),
        ]

    # -- the file --------------------------------------------------------------------------------------------
    def locals_(self) -> Block:
        return Block(
            "locals",
            body={
                "labels": deployment_labels(variable_settings()),
                "apis": list(REQUIRED_APIS),
                "bucket_name": Expr('var.bucket != "" ? var.bucket : "${var.project}-mlflow-artifacts"'),
                "image": Expr(f'var.image != "" ? var.image : "{self.image_default}"'),
                # Cloud Run's deterministic URL, known before the service exists.
                "service_url": "https://${var.service}-${data.google_project.this.number}.${var.region}.run.app",
                # What the server answers to (host-header and CORS checks): its URL and the extra hosts.
                "service_urls": Expr('concat([local.service_url], formatlist("https://%s", var.extra_hosts))'),
            },
        )

    def project_number(self) -> Block:
        """The project's number (in the service's deterministic URL), read once the APIs are on in a new project."""
        body: dict = {"project_id": Expr("var.project")}
        if self.new:
            body["depends_on"] = [Expr("time_sleep.apis_ready")]
        return Block("data", ("google_project", "this"), body)

    def blocks(self) -> list[Block]:
        egress_blocks, egress_subnet = self.egress()
        return [
            self.locals_(),
            self.project_number(),
            self.r.resource(
                "google_project_service",
                "apis",
                {"for_each": Expr("toset(local.apis)"), "service": Expr("each.value"), "disable_on_destroy": False},
            ),
            *self.r.wait("apis_ready", ["google_project_service.apis"]),
            *self.network(),
            *self.database(),
            *egress_blocks,
            *self.accounts_and_bucket(),
            *secret_blocks(self.r, self.settings, new=self.new, env_file=self.env_file()),
            *self.image_build(),
            *self.service(egress_subnet),
        ]
