"""The settings variants every export is checked in: each shapes the module differently. `every-setting` sets every
setting `up` has to a value other than its default (with the connector; `direct-custom` covers the egress subnet)."""

from __future__ import annotations

from mlflow_gcp.config import Settings, flag
from tests.fake_gcp.server import PROJECT

VARIANTS: dict[str, dict[str, str]] = {
    "defaults": {},
    "user-managed-replication": {"secret_replication": "user-managed"},
    "extra-hosts": {"extra_hosts": "mlflow.example.com, ML.example.org"},
    "direct-auto": {"vpc_egress": "direct"},
    "direct-custom": {
        "vpc_egress": "direct",
        "network": "team-net",
        "egress_subnet": "ml-egress",
        "egress_subnet_range": "10.9.64.0/26",
    },
    "tier-and-user": {"db_tier": "db-g1-small", "db_user": "mlflow_app"},
    "every-setting": {
        "region": "europe-west4",
        "network": "team-net",
        "peering_range": "ml-private-services",
        "peering_prefix_length": "22",
        "connector": "ml-connector",
        "connector_range": "10.9.0.0/28",
        "connector_machine_type": "e2-standard-4",
        "connector_min_instances": "3",
        "connector_max_instances": "5",
        "db_instance": "ml-db",
        "db_name": "runs_db",
        "auth_db_name": "auth_db",
        "db_version": "MYSQL_8_0",
        "db_edition": "ENTERPRISE_PLUS",
        "db_tier": "db-perf-optimized-N-2",
        "db_user": "mlflow_app",
        "db_ssl_mode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED",
        "bucket": f"{PROJECT}-ml-artifacts",
        "bucket_soft_delete_days": "30",
        "staging_bucket": f"{PROJECT}-ml-staging",
        "service_account": "ml-runner",
        "build_service_account": "ml-builder",
        "repository": "ml-images",
        "service": "tracking",
        "min_instances": "1",
        "max_instances": "4",
        "cpu": "2",
        "memory": "2Gi",
        "mlflow_username": "boss",
        "secret_replication": "user-managed",
        "extra_hosts": "mlflow.example.com",
    },
}


def args(variant: str) -> list[str]:
    return [item for name, value in VARIANTS[variant].items() for item in (flag(name), value)]


def settings(variant: str) -> Settings:
    from mlflow_gcp.config import setting_fields

    types = {f.name: type(f.default) for f in setting_fields()}
    return Settings(project=PROJECT, **{k: types[k](v) for k, v in VARIANTS[variant].items()})
