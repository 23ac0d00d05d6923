"""`import` blocks (Terraform 1.5+) naming each resource of an existing deployment by its import ID, as the
`google` provider's documentation of each resource gives it."""

from __future__ import annotations

from mlflow_gcp.config import Settings
from mlflow_gcp.steps.apis import REQUIRED_APIS
from mlflow_gcp.steps.bucket import OBJECT_ADMIN
from mlflow_gcp.steps.image_build import LOG_WRITER, REPOSITORY_WRITER
from mlflow_gcp.steps.secrets import ACCESSOR
from mlflow_gcp.steps.service_account import TOKEN_CREATOR
from mlflow_gcp.terraform.hcl import Block, Expr

SQL_USER_HOST = "%"


def import_ids(settings: Settings, secrets: dict[str, str]) -> dict[str, str]:
    """Resource address -> import ID. `secrets`: Terraform name -> secret id."""
    s = settings
    p = s.project
    email = s.service_account_email
    member = f"serviceAccount:{email}"
    account = f"projects/{p}/serviceAccounts/{email}"
    ids = {f'google_project_service.apis["{api}"]': f"{p}/{api}" for api in REQUIRED_APIS}
    if s.network != "default":
        ids["google_compute_network.vpc"] = f"projects/{p}/global/networks/{s.network}"
    ids.update(
        {
            "google_compute_global_address.peering": f"projects/{p}/global/addresses/{s.peering_range}",
            "google_service_networking_connection.private": (
                f"projects/{p}/global/networks/{s.network}:servicenetworking.googleapis.com"
            ),
            "google_sql_database_instance.mlflow": f"projects/{p}/instances/{s.db_instance}",
            "google_sql_database.runs": f"projects/{p}/instances/{s.db_instance}/databases/{s.db_name}",
            "google_sql_database.auth": f"projects/{p}/instances/{s.db_instance}/databases/{s.auth_db_name}",
            "google_sql_user.mlflow": f"{p}/{s.db_instance}/{SQL_USER_HOST}/{s.db_user}",
            "google_vpc_access_connector.mlflow": f"projects/{p}/locations/{s.region}/connectors/{s.connector}",
            "google_service_account.run": account,
            "google_service_account.build": f"projects/{p}/serviceAccounts/{s.build_service_account_email}",
            "google_artifact_registry_repository_iam_member.build_pushes_images": (
                f"projects/{p}/locations/{s.region}/repositories/{s.repository} {REPOSITORY_WRITER} "
                f"serviceAccount:{s.build_service_account_email}"
            ),
            "google_project_iam_member.build_writes_logs": (
                f"{p} {LOG_WRITER} serviceAccount:{s.build_service_account_email}"
            ),
            "google_service_account_iam_member.run_signs_blobs": f"{account} {TOKEN_CREATOR} {member}",
            "google_storage_bucket.artifacts": f"{p}/{s.bucket_name}",
            "google_storage_bucket_iam_member.run_writes_artifacts": f"b/{s.bucket_name} {OBJECT_ADMIN} {member}",
            "google_artifact_registry_repository.mlflow": (
                f"projects/{p}/locations/{s.region}/repositories/{s.repository}"
            ),
            "google_cloud_run_v2_service.mlflow": f"projects/{p}/locations/{s.region}/services/{s.service}",
        }
    )
    for name, secret_id in secrets.items():
        path = f"projects/{p}/secrets/{secret_id}"
        ids[f"google_secret_manager_secret.{name}"] = path
        ids[f"google_secret_manager_secret_iam_member.run_reads_{name}"] = f"{path} {ACCESSOR} {member}"
    if s.vpc_egress == "direct":
        del ids["google_vpc_access_connector.mlflow"]
        if s.network != "default":
            ids["google_compute_subnetwork.egress"] = f"projects/{p}/regions/{s.region}/subnetworks/{s.egress_subnet}"
    return ids


def import_blocks(settings: Settings, secrets: dict[str, str]) -> list[Block]:
    return [Block("import", body={"to": Expr(to), "id": id_}) for to, id_ in import_ids(settings, secrets).items()]
