"""The Terraform module of a deployment: the same resources, names and security properties as `mlflow-gcp up`.

The desired state comes from the same code the steps use where one exists (the Cloud Run service from
`service_spec.build_service`, the `mlflow-env` content from `service_spec.server_settings`), fed with settings whose
values are Terraform variables, so the module cannot drift from what `up` builds.

Two modes:
- new (default): passwords from `random_password`, secret versions made by Terraform.
- adopt (`--import`): for a deployment that `up` or a person already made. Secret versions stay as they are (the
  passwords are never read into code): the service pins the versions it runs with today, given as variables,
  and `import` blocks name every existing resource, so `terraform plan` creates and replaces nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlflow_gcp.config import (
    ENCRYPTED_ONLY,
    SECRET_ENV,
    SECRET_FLASK_KEY,
    SECRET_MLFLOW,
    SECRET_MYSQL,
    Settings,
    setting_fields,
)
from mlflow_gcp.service_spec import (
    MANAGED_LABELS,
    ServiceInputs,
    build_service,
    render_env_file,
    server_settings,
)
from mlflow_gcp.steps.apis import REQUIRED_APIS
from mlflow_gcp.steps.bucket import OBJECT_ADMIN
from mlflow_gcp.steps.database import CHARSET, COLLATION
from mlflow_gcp.steps.image import BUILD_DESCRIPTION, BUILD_DISPLAY_NAME, IMAGE_NAME, LOG_WRITER, REPOSITORY_WRITER
from mlflow_gcp.steps.network import MANAGED_DESCRIPTION
from mlflow_gcp.steps.secrets import ACCESSOR
from mlflow_gcp.steps.service_account import DESCRIPTION, DISPLAY_NAME, TOKEN_CREATOR
from mlflow_gcp.terraform.hcl import Block, Expr, render_file

GOOGLE_PROVIDER = "~> 6.0"
RANDOM_PROVIDER = "~> 3.6"
TERRAFORM_VERSION = ">= 1.5"  # import blocks

RUN_MEMBER = Expr('"serviceAccount:${google_service_account.run.email}"')

# Terraform name of each secret's resources -> secret id.
SECRETS: dict[str, str] = {
    "env": SECRET_ENV,
    "mysql": SECRET_MYSQL,
    "mlflow": SECRET_MLFLOW,
    "flask_key": SECRET_FLASK_KEY,
}
# Secrets whose value is a password Terraform generates (new mode), with the login that precedes it.
PASSWORD_SECRETS: dict[str, str | None] = {"mysql": "db_user", "mlflow": "mlflow_username", "flask_key": None}

# Keys of the Cloud Run service that are maps in Terraform (the other objects are nested blocks).
MAP_ATTRIBUTES = frozenset({"labels", "limits", "annotations"})

# checkov checks that do not fit this deployment, each with the reason written next to the skip.
CHECKOV_SKIPS: dict[str, list[tuple[str, str]]] = {
    "google_artifact_registry_repository": [
        ("CKV_GCP_84", "Holds only the server image built from public code; Google-managed encryption is enough."),
    ],
    "google_storage_bucket": [
        ("CKV_GCP_62", "Access logs of artifact reads are left to the team: Cloud Audit Logs covers data access."),
        ("CKV_GCP_78", "Runs write their artifacts once; MLflow keeps no history in object versions."),
    ],
    "google_compute_subnetwork": [
        ("CKV_GCP_26", "Flow logs of the server's egress subnet cost money; the team turns them on if it wants."),
        ("CKV_GCP_76", "The subnet is IPv4 only: no IPv6 Private Google Access to configure."),
    ],
    "google_sql_database_instance": [
        (
            "CKV_GCP_6",
            "sslMode ENCRYPTED_ONLY requires TLS; client certificates are not asked (the server checks "
            "the instance's CA).",
        ),
        ("CKV_GCP_50", "MySQL flags are left at Cloud SQL's defaults, as `mlflow-gcp up` does."),
        ("CKV_GCP_79", "MySQL 8.4 is the newest major version Cloud SQL offers; the check knows other engines."),
        ("CKV2_GCP_20", "MySQL flags are left at Cloud SQL's defaults, as `mlflow-gcp up` does."),
    ],
}


@dataclass(frozen=True)
class LiveDeployment:
    """What adoption needs from the running deployment: the secret versions and the image it runs."""

    secret_versions: Mapping[str, str] = field(default_factory=dict)
    image: str = ""


@dataclass(frozen=True)
class ModuleFiles:
    files: dict[str, str]  # file name -> content


def _variable_settings() -> Settings:
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


def _resource(type_: str, name: str, body: dict, *, depends_on: list[str] | None = None) -> Block:
    if depends_on:
        body = {**body, "depends_on": [Expr(d) for d in depends_on]}
    comments = tuple(f"checkov:skip={check}:{reason}" for check, reason in CHECKOV_SKIPS.get(type_, []))
    return Block("resource", (type_, name), body, comments)


def _variables(adopt: LiveDeployment | None) -> list[Block]:
    blocks = []
    for f in setting_fields():
        is_int = isinstance(f.default, int)
        body: dict = {"description": f.metadata["help"], "type": Expr("number" if is_int else "string")}
        if f.name != "project":
            body["default"] = f.default
        blocks.append(Block("variable", (f.name,), body))
    blocks.append(
        Block(
            "variable",
            ("image",),
            {
                "description": "Server image; empty means the image `mlflow-gcp up` builds from container/ "
                "(see README.md to build it).",
                "type": Expr("string"),
                "default": "",
            },
        )
    )
    if adopt is not None:
        blocks.append(
            Block(
                "variable",
                ("secret_versions",),
                {
                    "description": "Secret id -> version the service runs with (managed by "
                    "`mlflow-gcp credentials rotate`, not by Terraform).",
                    "type": Expr("map(string)"),
                    "default": {secret: adopt.secret_versions.get(secret, "latest") for secret in SECRETS.values()},
                },
            )
        )
    return blocks


def _tfvars(settings: Settings, image: str) -> str:
    lines = ["# The settings of this deployment (tool defaults are in variables.tf)."]
    for f in setting_fields():
        value = getattr(settings, f.name)
        if f.name == "bucket":
            value = settings.bucket_name
        if f.name == "project" or value != f.default:
            rendered = str(value) if isinstance(value, int) else f'"{value}"'
            lines.append(f"{f.name} = {rendered}")
    lines.append(f'image = "{image}"')
    return "\n".join(lines) + "\n"


def _network(settings: Settings) -> tuple[list[Block], str]:
    """The network block and the expression of its id. The `default` network is Google's: read, never made."""
    if settings.network == "default":
        return [Block("data", ("google_compute_network", "vpc"), {"name": Expr("var.network")})], (
            "data.google_compute_network.vpc.id"
        )
    body = {"name": Expr("var.network"), "auto_create_subnetworks": False, "description": MANAGED_DESCRIPTION}
    return [_resource("google_compute_network", "vpc", body)], "google_compute_network.vpc.id"


def _secrets(adopt: LiveDeployment | None, env_file: str) -> list[Block]:
    blocks: list[Block] = []
    for name, secret_id in SECRETS.items():
        blocks.append(
            _resource(
                "google_secret_manager_secret",
                name,
                {
                    "secret_id": secret_id,
                    "labels": Expr("local.labels"),
                    "replication": Block("replication", body={"auto": Block("auto")}),
                },
                depends_on=["google_project_service.apis"],
            )
        )
        blocks.append(
            _resource(
                "google_secret_manager_secret_iam_member",
                f"run_reads_{name}",
                {
                    "secret_id": Expr(f"google_secret_manager_secret.{name}.id"),
                    "role": ACCESSOR,
                    "member": RUN_MEMBER,
                },
            )
        )
    if adopt is not None:
        return blocks
    for name, login in PASSWORD_SECRETS.items():
        blocks.append(_resource("random_password", name, {"length": 43 if login else 64, "special": False}))
        value = (
            "${var." + login + "}:${random_password." + name + ".result}"
            if login
            else "${random_password." + name + ".result}"
        )
        blocks.append(
            _resource(
                "google_secret_manager_secret_version",
                name,
                {"secret": Expr(f"google_secret_manager_secret.{name}.id"), "secret_data": value},
            )
        )
    blocks.append(
        _resource(
            "google_secret_manager_secret_version",
            "env",
            {"secret": Expr("google_secret_manager_secret.env.id"), "secret_data": env_file},
        )
    )
    return blocks


def _egress(settings: Settings, network_id: str) -> tuple[list[Block], str]:
    """Direct VPC egress: the subnet blocks (none on the `default` network, whose regional subnet Google made
    and which is named like it) and the expression of the subnet's name."""
    if settings.network == "default":
        return [], "${var.network}"
    body = {
        "name": Expr("var.egress_subnet"),
        "region": Expr("var.region"),
        "network": Expr(network_id),
        "ip_cidr_range": Expr("var.egress_subnet_range"),
        "private_ip_google_access": True,
        "description": f"Direct VPC egress of Cloud Run. {MANAGED_DESCRIPTION}",
    }
    return [_resource("google_compute_subnetwork", "egress", body)], "${google_compute_subnetwork.egress.name}"


def _build_account() -> list[Block]:
    """The account the server image is built as (`gcloud builds submit --service-account`, see README.md), with
    what `up` gives it: write on the repository only and log writing on the project. Reading the build's source
    bucket is granted where gcloud makes it (README.md)."""
    member = Expr('"serviceAccount:${google_service_account.build.email}"')
    return [
        _resource(
            "google_service_account",
            "build",
            {
                "account_id": Expr("var.build_service_account"),
                "display_name": BUILD_DISPLAY_NAME,
                "description": BUILD_DESCRIPTION,
            },
            depends_on=["google_project_service.apis"],
        ),
        _resource(
            "google_artifact_registry_repository_iam_member",
            "build_pushes_images",
            {
                "location": Expr("google_artifact_registry_repository.mlflow.location"),
                "repository": Expr("google_artifact_registry_repository.mlflow.name"),
                "role": REPOSITORY_WRITER,
                "member": member,
            },
        ),
        _resource(
            "google_project_iam_member",
            "build_writes_logs",
            {"project": Expr("var.project"), "role": LOG_WRITER, "member": member},
        ),
    ]


def _service(adopt: LiveDeployment | None, egress_subnet: str | None = None) -> Block:
    variables = _variable_settings()
    if adopt is None:
        versions = {sid: "${google_secret_manager_secret_version." + n + ".version}" for n, sid in SECRETS.items()}
    else:
        versions = {sid: '${var.secret_versions["' + sid + '"]}' for sid in SECRETS.values()}
    inputs = ServiceInputs(
        image="${local.image}",
        connector="" if egress_subnet else "${google_vpc_access_connector.mlflow.id}",
        service_urls=("${local.service_url}",),
        secret_versions=versions,
        network_interface=("${var.network}", egress_subnet) if egress_subnet else None,
    )
    service = build_service(variables, inputs)
    service["template"]["serviceAccount"] = "${google_service_account.run.email}"
    body = {"name": Expr("var.service"), "location": Expr("var.region"), **_as_body(service)}
    depends = [f"google_secret_manager_secret_iam_member.run_reads_{name}" for name in SECRETS]
    return _resource("google_cloud_run_v2_service", "mlflow", body, depends_on=depends)


def _main_blocks(settings: Settings, adopt: LiveDeployment | None, image_default: str) -> list[Block]:
    network_blocks, network_id = _network(settings)
    direct = settings.vpc_egress == "direct"
    egress_blocks, egress_subnet = _egress(settings, network_id) if direct else ([], None)
    variables = _variable_settings()
    # The server checks the instance's CA when the instance accepts only encrypted connections.
    ca = (
        "${base64encode(google_sql_database_instance.mlflow.server_ca_cert[0].cert)}"
        if settings.db_ssl_mode == ENCRYPTED_ONLY
        else ""
    )
    env_file = render_env_file(
        server_settings(
            variables, db_host="${google_sql_database_instance.mlflow.private_ip_address}", db_ca_cert_b64=ca
        )
    )
    locals_ = Block(
        "locals",
        body={
            "labels": dict(MANAGED_LABELS),
            "apis": list(REQUIRED_APIS),
            "bucket_name": Expr('var.bucket != "" ? var.bucket : "${var.project}-mlflow-artifacts"'),
            "image": Expr(f'var.image != "" ? var.image : "{image_default}"'),
            # Cloud Run's deterministic URL, known before the service exists.
            "service_url": "https://${var.service}-${data.google_project.this.number}.${var.region}.run.app",
        },
    )
    instance_settings = {
        "tier": Expr("var.db_tier"),
        "edition": Expr("var.db_edition"),
        "deletion_protection_enabled": True,
        "disk_autoresize": True,
        "user_labels": Expr("local.labels"),
        "ip_configuration": Block(
            "",
            body={"ipv4_enabled": False, "private_network": Expr(network_id), "ssl_mode": Expr("var.db_ssl_mode")},
        ),
        "backup_configuration": Block("", body={"enabled": True, "binary_log_enabled": True}),
    }
    blocks = [
        locals_,
        Block("data", ("google_project", "this"), {"project_id": Expr("var.project")}),
        _resource(
            "google_project_service",
            "apis",
            {"for_each": Expr("toset(local.apis)"), "service": Expr("each.value"), "disable_on_destroy": False},
        ),
        *network_blocks,
        _resource(
            "google_compute_global_address",
            "peering",
            {
                "name": Expr("var.peering_range"),
                "purpose": "VPC_PEERING",
                "address_type": "INTERNAL",
                "prefix_length": Expr("var.peering_prefix_length"),
                "network": Expr(network_id),
                "description": f"Private services access range for Cloud SQL. {MANAGED_DESCRIPTION}.",
                "labels": Expr("local.labels"),
            },
            depends_on=["google_project_service.apis"],
        ),
        _resource(
            "google_service_networking_connection",
            "private",
            {
                "network": Expr(network_id),
                "service": "servicenetworking.googleapis.com",
                "reserved_peering_ranges": [Expr("google_compute_global_address.peering.name")],
                # Cloud SQL stays registered as a producer after its deletion, and the connection cannot be
                # deleted then (hashicorp/terraform-provider-google#16275).
                "deletion_policy": "ABANDON",
            },
        ),
        _resource(
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
        ),
        *[
            _resource(
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
        _resource(
            "google_sql_user",
            "mlflow",
            {
                "name": Expr("var.db_user"),
                "instance": Expr("google_sql_database_instance.mlflow.name"),
                "host": "%",
                # Adopted: the password stays the one in mysql-credentials (Terraform never reads it).
                "password": Expr("null" if adopt is not None else "random_password.mysql.result"),
            },
        ),
        _resource(
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
            depends_on=["google_project_service.apis"],
        ),
        _resource(
            "google_service_account",
            "run",
            {"account_id": Expr("var.service_account"), "display_name": DISPLAY_NAME, "description": DESCRIPTION},
            depends_on=["google_project_service.apis"],
        ),
        # The server signs artifact URLs with its own identity (IAM signBlob).
        _resource(
            "google_service_account_iam_member",
            "run_signs_blobs",
            {
                "service_account_id": Expr("google_service_account.run.name"),
                "role": TOKEN_CREATOR,
                "member": RUN_MEMBER,
            },
        ),
        _resource(
            "google_storage_bucket",
            "artifacts",
            {
                "name": Expr("local.bucket_name"),
                "location": Expr("upper(var.region)"),
                "uniform_bucket_level_access": True,
                "public_access_prevention": "enforced",
                "labels": Expr("local.labels"),
                "force_destroy": False,
            },
        ),
        _resource(
            "google_storage_bucket_iam_member",
            "run_writes_artifacts",
            {"bucket": Expr("google_storage_bucket.artifacts.name"), "role": OBJECT_ADMIN, "member": RUN_MEMBER},
        ),
        *_secrets(adopt, env_file),
        _resource(
            "google_artifact_registry_repository",
            "mlflow",
            {
                "repository_id": Expr("var.repository"),
                "location": Expr("var.region"),
                "format": "DOCKER",
                "description": "MLflow server images (mlflow-gcp)",
                "labels": Expr("local.labels"),
            },
            depends_on=["google_project_service.apis"],
        ),
        *_build_account(),
        _service(adopt, egress_subnet),
    ]
    if direct:
        # Direct VPC egress: the service's network interface on a subnet, no connector.
        blocks = [b for b in blocks if b.labels[:1] != ("google_vpc_access_connector",)] + egress_blocks
    return blocks


def _versions() -> list[Block]:
    return [
        Block(
            "terraform",
            body={
                "required_version": TERRAFORM_VERSION,
                "required_providers": Block(
                    "required_providers",
                    body={
                        "google": {"source": "hashicorp/google", "version": GOOGLE_PROVIDER},
                        "random": {"source": "hashicorp/random", "version": RANDOM_PROVIDER},
                    },
                ),
            },
        ),
        Block("provider", ("google",), {"project": Expr("var.project"), "region": Expr("var.region")}),
    ]


def _outputs() -> list[Block]:
    outputs = {
        "url": ("The server's URL (its login is in the mlflow-credentials secret).", "local.service_url"),
        "bucket": ("Artifact bucket.", "google_storage_bucket.artifacts.name"),
        "service_account": ("Service account the server runs as.", "google_service_account.run.email"),
    }
    blocks = [
        Block("output", (name,), {"description": text, "value": Expr(expr)}) for name, (text, expr) in outputs.items()
    ]
    secrets = {name: Expr(f"google_secret_manager_secret.{name}.secret_id") for name in SECRETS}
    blocks.append(Block("output", ("secrets",), {"description": "Secret Manager secrets.", "value": secrets}))
    return blocks


def build_module(
    settings: Settings, *, image_tag: str, adopt: LiveDeployment | None = None, with_imports: bool = False
) -> ModuleFiles:
    """The module's files for `settings`; `adopt` (with `import` blocks when `with_imports`) for an existing
    deployment."""
    from mlflow_gcp.terraform.imports import import_blocks
    from mlflow_gcp.terraform.readme import module_readme

    image_default = "${var.region}-docker.pkg.dev/${var.project}/${var.repository}/" + f"{IMAGE_NAME}:{image_tag}"
    image = (adopt.image if adopt and adopt.image else None) or (
        f"{settings.region}-docker.pkg.dev/{settings.project}/{settings.repository}/{IMAGE_NAME}:{image_tag}"
    )
    header = "# Written by `mlflow-gcp export terraform`. The same deployment as `mlflow-gcp up`."
    files = {
        "versions.tf": render_file(_versions(), header),
        "variables.tf": render_file(_variables(adopt), header),
        "main.tf": render_file(_main_blocks(settings, adopt, image_default), header),
        "outputs.tf": render_file(_outputs(), header),
        "terraform.tfvars": _tfvars(settings, image),
        "README.md": module_readme(settings, image, adopted=adopt is not None),
    }
    if with_imports:
        files["imports.tf"] = render_file(import_blocks(settings, SECRETS), header)
    return ModuleFiles(files)
