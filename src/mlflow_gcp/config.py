"""Settings: one dataclass, each field a CLI flag, an environment variable and a line of `.env.example`.

Validation happens here, before any API call, and raises ConfigError (exit code 2) with one sentence per
bad value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field

from mlflow_gcp.errors import ConfigError
from mlflow_gcp.suggest import did_you_mean

ENV_PREFIX = "MLFLOW_GCP_"


def setting(default, help: str, *, group: str = "Deployment", choices: tuple[str, ...] = (), metavar: str = ""):
    """`choices` are shown in the help and completed (validate() checks them); `metavar` says what is expected."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class Settings:
    project: str = setting("", "Google Cloud project id.", group="Project", metavar="PROJECT_ID")
    region: str = setting("europe-west1", "Region of every regional resource.", group="Project", metavar="REGION")
    network: str = setting("default", "VPC network (`up` creates it if it does not exist).", group="Network")
    peering_range: str = setting(
        "mlflow-private-services", "Name of the address range reserved for Cloud SQL.", group="Network"
    )
    peering_prefix_length: int = setting(
        20, "Prefix length of the range reserved for Cloud SQL private IPs.", group="Network", metavar="BITS"
    )
    vpc_egress: str = setting(
        "connector",
        "How the server reaches the database: 'connector' (Serverless VPC Access, as the manual process) or "
        "'direct' (Direct VPC egress: no connector instances to pay for).",
        group="Network",
        choices=("connector", "direct"),
    )
    egress_subnet: str = setting(
        "mlflow-direct-egress",
        "Subnet for Direct VPC egress on a custom-mode network (the auto-mode subnet is used otherwise).",
        group="Network",
    )
    egress_subnet_range: str = setting(
        "10.8.64.0/26",
        "Free private range (/26 or larger) of the Direct VPC egress subnet.",
        group="Network",
        metavar="CIDR",
    )
    connector: str = setting("vpc-connector-mlflow", "Serverless VPC Access connector name.", group="Network")
    connector_range: str = setting("10.8.0.0/28", "Free /28 range of the connector.", group="Network", metavar="CIDR")
    connector_machine_type: str = setting(
        "e2-micro",
        "Connector machine type: f1-micro, e2-micro or e2-standard-4.",
        group="Network",
        choices=("f1-micro", "e2-micro", "e2-standard-4"),
        metavar="TYPE",
    )
    connector_min_instances: int = setting(2, "Connector minimum instances.", group="Network", metavar="COUNT")
    connector_max_instances: int = setting(3, "Connector maximum instances.", group="Network", metavar="COUNT")
    db_instance: str = setting("mlflow-tracking-database", "Cloud SQL instance name.", group="Database")
    db_name: str = setting("mlflow_tracking_database", "MySQL database of the MLflow runs.", group="Database")
    auth_db_name: str = setting("mlflow_auth_database", "MySQL database of MLflow's users.", group="Database")
    db_version: str = setting("MYSQL_8_4", "Cloud SQL database version.", group="Database", metavar="VERSION")
    db_edition: str = setting(
        "ENTERPRISE",
        "Cloud SQL edition: ENTERPRISE or ENTERPRISE_PLUS.",
        group="Database",
        choices=("ENTERPRISE", "ENTERPRISE_PLUS"),
        metavar="EDITION",
    )
    db_tier: str = setting("db-f1-micro", "Cloud SQL machine tier.", group="Database", metavar="TIER")
    db_user: str = setting("root", "MySQL user MLflow connects as.", group="Database")
    db_ssl_mode: str = setting(
        "ENCRYPTED_ONLY",
        "Cloud SQL connections: ENCRYPTED_ONLY (the server uses TLS and checks the instance's CA) or "
        "ALLOW_UNENCRYPTED_AND_ENCRYPTED.",
        group="Database",
        choices=("ENCRYPTED_ONLY", "ALLOW_UNENCRYPTED_AND_ENCRYPTED"),
        metavar="MODE",
    )
    bucket: str = setting("", "Artifact bucket (default: PROJECT-mlflow-artifacts).", group="Storage")
    staging_bucket: str = setting(
        "", "Bucket Cloud Build reads the server's source from (default: PROJECT_cloudbuild).", group="Storage"
    )
    bucket_soft_delete_days: int = setting(
        7,
        "Days a deleted or overwritten artifact can still be restored (bucket soft delete: 0 turns it off, else 7 "
        "to 90; Google's default is 7).",
        group="Storage",
    )
    service_account: str = setting("run-mlflow", "Service account id the server runs as.", group="Deployment")
    build_service_account: str = setting(
        "mlflow-build", "Service account id Cloud Build builds the server image as.", group="Deployment"
    )
    repository: str = setting("mlflow", "Artifact Registry Docker repository.", group="Deployment")
    service: str = setting("mlflow", "Cloud Run service name.", group="Deployment")
    min_instances: int = setting(
        0, "Cloud Run minimum instances (0 scales to zero).", group="Deployment", metavar="COUNT"
    )
    max_instances: int = setting(2, "Cloud Run maximum instances.", group="Deployment", metavar="COUNT")
    cpu: str = setting("1", "Cloud Run CPU limit.", group="Deployment", metavar="CPUS")
    memory: str = setting("1Gi", "Cloud Run memory limit.", group="Deployment", metavar="SIZE")
    mlflow_username: str = setting("admin", "MLflow admin login.", group="Deployment", metavar="LOGIN")
    secret_replication: str = setting(
        "automatic",
        "Secret Manager replication: automatic, or user-managed (kept in the region; for organization policies "
        "on resource locations). Applies to secrets the tool creates.",
        group="Deployment",
        choices=("automatic", "user-managed"),
        metavar="MODE",
    )
    mlflow_version: str = setting(
        "",
        "MLflow of the server image (default: the tested pin). Remembered, so upgrading mlflow-gcp keeps it; "
        "a change is an upgrade, backup first.",
        group="Deployment",
        metavar="VERSION",
    )
    extra_hosts: str = setting(
        "",
        "Other host names the server answers to, comma-separated (a custom domain or a load balancer in front).",
        group="Deployment",
        metavar="HOST,...",
    )

    @property
    def bucket_name(self) -> str:
        return self.bucket or f"{self.project}-mlflow-artifacts"

    @property
    def staging_bucket_name(self) -> str:
        return self.staging_bucket or f"{self.project}_cloudbuild"

    @property
    def build_service_account_email(self) -> str:
        return f"{self.build_service_account}@{self.project}.iam.gserviceaccount.com"

    @property
    def service_account_email(self) -> str:
        return f"{self.service_account}@{self.project}.iam.gserviceaccount.com"


ENCRYPTED_ONLY = "ENCRYPTED_ONLY"
DB_SSL_MODES = (ENCRYPTED_ONLY, "ALLOW_UNENCRYPTED_AND_ENCRYPTED")

SECRET_ENV = "mlflow-env"
SECRET_MYSQL = "mysql-credentials"
SECRET_MLFLOW = "mlflow-credentials"
SECRET_FLASK_KEY = "mlflow-flask-secret-key"


def setting_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_MLFLOW_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([a-z]+\d*)?$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_RESOURCE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_MYSQL_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MYSQL_USER = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_LOGIN = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_TIER = re.compile(r"^db-[A-Za-z0-9-]+$")  # db-perf-optimized-N-2 has a capital
_MEMORY = re.compile(r"^[0-9]+(Mi|Gi)$")
_CPU = re.compile(r"^(1|2|4|6|8|[0-9]+m)$")


def bucket_problem(name: str) -> str | None:
    """Why `name` breaks Cloud Storage naming rules, or None."""
    if not _BUCKET.match(name) or len(name) > 222:
        return (
            "it must be 3 to 63 characters of lowercase letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    if ".." in name or any(len(part) > 63 for part in name.split(".")):
        return "each dot-separated part must be 1 to 63 characters"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return "names may not start with 'goog' or contain 'google'"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return "an IP address is not a valid bucket name"


def _check_name(problems: list[str], label: str, value: str, pattern: re.Pattern, rule: str, max_len: int) -> None:
    if not pattern.match(value) or len(value) > max_len:
        problems.append(f"{label} '{value}' is not valid: {rule}.")


def validate(settings: Settings, *, combinations: bool = True) -> Settings:
    """Raise ConfigError listing every bad value; return the settings unchanged when all are good. Without
    `combinations`, only each value on its own is checked (min < max and other rules between two settings are
    left for when every value is known, e.g. after the recorded settings are read)."""
    s = settings
    problems: list[str] = []
    if not s.project:
        problems.append(
            f"No project given: pass --project, set {env_var('project')} (in the environment or .env), or "
            "`gcloud config set project PROJECT_ID`."
        )
    elif not _PROJECT.match(s.project):
        problems.append(
            f"Project id '{s.project}' is not valid: it must be 6 to 30 lowercase letters, digits or hyphens, "
            "start with a letter and not end with a hyphen (the id, not the display name or number)."
        )
    if not _REGION.match(s.region):
        problems.append(f"Region '{s.region}' is not a Google Cloud region name such as europe-west1.")
    lowercase_rule = "lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen"
    _check_name(problems, "Network", s.network, _RESOURCE, lowercase_rule + ", at most 63 characters", 63)
    _check_name(problems, "Peering range", s.peering_range, _RESOURCE, lowercase_rule + ", at most 63", 63)
    _check_name(
        problems,
        "Cloud SQL instance",
        s.db_instance,
        _RESOURCE,
        lowercase_rule + " (no underscores), at most 84 characters",
        84,
    )
    _check_name(problems, "Connector", s.connector, _RESOURCE, lowercase_rule + ", at most 25 characters", 25)
    _check_name(
        problems,
        "Service account",
        s.service_account,
        _SERVICE_ACCOUNT,
        "6 to 30 lowercase letters, digits or hyphens, starting with a letter",
        30,
    )
    _check_name(
        problems,
        "Build service account",
        s.build_service_account,
        _SERVICE_ACCOUNT,
        "6 to 30 lowercase letters, digits or hyphens, starting with a letter",
        30,
    )
    if s.build_service_account == s.service_account:
        problems.append("The build service account must differ from the server's: each holds only its own grants.")
    _check_name(problems, "Artifact Registry repository", s.repository, _RESOURCE, lowercase_rule, 63)
    _check_name(problems, "Cloud Run service", s.service, _RESOURCE, lowercase_rule + ", at most 49", 49)
    problems.extend(_host_problems(s.extra_hosts))
    for label, value in (("Database", s.db_name), ("Auth database", s.auth_db_name)):
        _check_name(problems, label, value, _MYSQL_NAME, "letters, digits and underscores, at most 64", 64)
    if combinations and s.db_name == s.auth_db_name:
        problems.append("The runs database and the auth database must have different names.")
    _check_name(problems, "MySQL user", s.db_user, _MYSQL_USER, "letters, digits, '_', '.', '-', at most 32", 32)
    _check_name(
        problems,
        "MLflow login",
        s.mlflow_username,
        _LOGIN,
        "1 to 64 letters, digits or '_.@+-' (no ':' since the secret is login:password)",
        64,
    )
    _check_name(problems, "Cloud SQL tier", s.db_tier, _TIER, "a tier name such as db-f1-micro", 64)
    if s.secret_replication not in ("automatic", "user-managed"):
        problems.append(
            f"Secret replication '{s.secret_replication}' must be automatic or user-managed."
            + did_you_mean(s.secret_replication, ("automatic", "user-managed"))
        )
    if s.db_edition not in ("ENTERPRISE", "ENTERPRISE_PLUS"):
        problems.append(
            f"Cloud SQL edition '{s.db_edition}' must be ENTERPRISE or ENTERPRISE_PLUS."
            + did_you_mean(s.db_edition, ("ENTERPRISE", "ENTERPRISE_PLUS"))
        )
    if s.db_ssl_mode not in DB_SSL_MODES:
        problems.append(
            f"Database SSL mode '{s.db_ssl_mode}' must be one of {', '.join(DB_SSL_MODES)}."
            + did_you_mean(s.db_ssl_mode, DB_SSL_MODES)
        )
    if not re.match(r"^MYSQL_[0-9]+(_[0-9]+)*$", s.db_version):
        problems.append(f"Database version '{s.db_version}' is not a MySQL version such as MYSQL_8_4.")
    if s.project and _PROJECT.match(s.project):
        problem = bucket_problem(s.bucket_name)
        if problem:
            hint = "" if s.bucket else " (the default name is derived from the project id; pass --bucket)"
            problems.append(f"Bucket name '{s.bucket_name}' breaks Cloud Storage rules: {problem}{hint}.")
        if s.staging_bucket and (problem := bucket_problem(s.staging_bucket)):
            problems.append(f"Staging bucket name '{s.staging_bucket}' breaks Cloud Storage rules: {problem}.")
    if s.bucket_soft_delete_days != 0 and not 7 <= s.bucket_soft_delete_days <= 90:
        problems.append(
            f"Bucket soft delete of {s.bucket_soft_delete_days} days: Cloud Storage keeps deleted objects 7 to 90 "
            "days, or not at all (0)."
        )
    problems.extend(_range_problems(s))
    problems.extend(_egress_problems(s))
    problems.extend(_count_problems(s) if combinations else _bound_problems(s))
    if not _MEMORY.match(s.memory):
        problems.append(f"Memory '{s.memory}' must look like 512Mi or 2Gi.")
    if not _CPU.match(s.cpu):
        problems.append(f"CPU '{s.cpu}' must be 1, 2, 4, 6, 8 or millicores such as 500m.")
    if s.mlflow_version and not _MLFLOW_VERSION.match(s.mlflow_version):
        problems.append(f"MLflow version '{s.mlflow_version}' must be a release number such as 3.17.2.")
    if problems:
        raise ConfigError(" ".join(problems))
    return settings


_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def extra_host_names(value: str) -> list[str]:
    return [host.strip().lower() for host in value.split(",") if host.strip()]


def _host_problems(value: str) -> list[str]:
    bad = [host for host in extra_host_names(value) if not _HOST.match(host)]
    if bad:
        return [
            f"Extra host '{bad[0]}' is not a host name such as mlflow.example.com (no scheme, port or path; "
            "several are separated by commas)."
        ]
    return []


def _range_problems(s: Settings) -> list[str]:
    try:
        net = ipaddress.ip_network(s.connector_range, strict=True)
    except ValueError:
        return [f"Connector range '{s.connector_range}' is not a network in CIDR notation such as 10.8.0.0/28."]
    if net.version != 4 or net.prefixlen != 28:
        return [f"Connector range '{s.connector_range}' must be an IPv4 /28 such as 10.8.0.0/28."]
    if not net.is_private:
        return [f"Connector range '{s.connector_range}' must be a private (RFC 1918) range."]
    return []


VPC_EGRESS_MODES = ("connector", "direct")


def egress_range_problem(value: str) -> str | None:
    """Why `value` cannot be the Direct VPC egress subnet's range, or None."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        return f"Egress subnet range '{value}' is not a network in CIDR notation such as 10.8.64.0/26."
    if net.version != 4 or not 8 <= net.prefixlen <= 26:
        # Cloud Run takes IPs from the subnet as instances start; Google advises /26 or larger
        # (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc#ip-address-allocation).
        return f"Egress subnet range '{value}' must be an IPv4 range of /26 or larger (e.g. 10.8.64.0/26)."
    if not net.is_private:
        return f"Egress subnet range '{value}' must be a private (RFC 1918) range."
    return None


def _egress_problems(s: Settings) -> list[str]:
    problems = []
    if s.vpc_egress not in VPC_EGRESS_MODES:
        problems.append(
            f"VPC egress '{s.vpc_egress}' must be 'connector' or 'direct'."
            + did_you_mean(s.vpc_egress, VPC_EGRESS_MODES)
        )
        return problems
    if s.vpc_egress != "direct":
        return problems
    _check_name(problems, "Egress subnet", s.egress_subnet, _RESOURCE, "lowercase letters, digits and hyphens", 63)
    problem = egress_range_problem(s.egress_subnet_range)
    if problem:
        problems.append(problem)
        return problems
    connector = ipaddress.ip_network(s.connector_range, strict=False) if not _range_problems(s) else None
    if connector is not None and connector.overlaps(ipaddress.ip_network(s.egress_subnet_range)):
        problems.append(
            f"Egress subnet range {s.egress_subnet_range} overlaps the connector range {s.connector_range}: "
            "pick another with --egress-subnet-range."
        )
    return problems


def _bound_problems(s: Settings) -> list[str]:
    """The rules of _count_problems that hold for each count on its own."""
    problems = []
    if s.connector_min_instances < 2 or s.connector_max_instances > 10:
        problems.append("Connector instances must satisfy 2 <= min < max <= 10.")
    if s.min_instances < 0 or s.max_instances < 1:
        problems.append("Cloud Run instances must satisfy 0 <= min <= max and max >= 1.")
    return problems


def _count_problems(s: Settings) -> list[str]:
    problems = []
    if not 8 <= s.peering_prefix_length <= 24:
        problems.append("The peering prefix length must be between 8 and 24 (Cloud SQL needs at least a /24).")
    if not 2 <= s.connector_min_instances < s.connector_max_instances <= 10:
        problems.append("Connector instances must satisfy 2 <= min < max <= 10.")
    if s.min_instances < 0 or s.max_instances < 1 or s.min_instances > s.max_instances:
        problems.append("Cloud Run instances must satisfy 0 <= min <= max and max >= 1.")
    return problems
