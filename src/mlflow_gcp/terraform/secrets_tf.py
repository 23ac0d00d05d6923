"""The secrets of the module: the four Secret Manager secrets as `up` makes them, the server's grant on each, and in a
new module their versions, each password made by an ephemeral `random_password` and written through write-only
arguments so it never reaches the state."""

from __future__ import annotations

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL, Settings
from mlflow_gcp.resources.secret import USER_MANAGED
from mlflow_gcp.steps.secrets import ACCESSOR
from mlflow_gcp.terraform.blocks import Resources
from mlflow_gcp.terraform.hcl import Block, Expr

RUN_MEMBER = Expr('"serviceAccount:${google_service_account.run.email}"')

# Terraform name of each secret's resources -> secret id.
SECRETS: dict[str, str] = {
    "env": SECRET_ENV,
    "mysql": SECRET_MYSQL,
    "mlflow": SECRET_MLFLOW,
    "flask_key": SECRET_FLASK_KEY,
}
# Secrets whose value is a password (new mode: made by an ephemeral random_password), with the login before it.
PASSWORD_SECRETS: dict[str, str | None] = {"mysql": "db_user", "mlflow": "mlflow_username", "flask_key": None}
# Secrets `credentials rotate` changes: an adopted module reads the version in use from their record.
ROTATED_SECRETS = ("mysql", "mlflow")


def replication(settings: Settings) -> Block:
    """As `up` makes them: replication cannot change after creation (a different block replaces the secret
    and destroys its versions, the passwords)."""
    if settings.secret_replication == USER_MANAGED:
        replicas = Block("replicas", body={"location": Expr("var.region")})
        return Block("replication", body={"user_managed": Block("user_managed", body={"replicas": replicas})})
    return Block("replication", body={"auto": Block("auto")})


def secret_blocks(r: Resources, settings: Settings, *, new: bool, env_file: str) -> list[Block]:
    """The four secrets, the server's grant on each, and in a new module their versions (passwords write-only)."""
    blocks: list[Block] = []
    for name, secret_id in SECRETS.items():
        blocks.append(
            r.resource(
                "google_secret_manager_secret",
                name,
                {"secret_id": secret_id, "labels": Expr("local.labels"), "replication": replication(settings)},
                after_apis=True,
            )
        )
        blocks.append(
            r.resource(
                "google_secret_manager_secret_iam_member",
                f"run_reads_{name}",
                {
                    "secret_id": Expr(f"google_secret_manager_secret.{name}.id"),
                    "role": ACCESSOR,
                    "member": RUN_MEMBER,
                },
            )
        )
    if not new:
        # The record `up` and `credentials rotate` keep on each password secret: the version its user has.
        for name in ROTATED_SECRETS:
            blocks.append(Block("data", ("google_secret_manager_secret", name), {"secret_id": SECRETS[name]}))
        return blocks
    for name, login in PASSWORD_SECRETS.items():
        blocks.append(Block("ephemeral", ("random_password", name), {"length": 43 if login else 64, "special": False}))
        password = "${ephemeral.random_password." + name + ".result}"
        blocks.append(
            r.resource(
                "google_secret_manager_secret_version",
                name,
                {
                    "secret": Expr(f"google_secret_manager_secret.{name}.id"),
                    # Write-only: the password is in Secret Manager, never in the state (Terraform 1.11).
                    "secret_data_wo": "${var." + login + "}:" + password if login else password,
                    "secret_data_wo_version": Expr("var.password_version"),
                },
                # The MySQL user gets the same password in the same apply, before the secret names it.
                depends_on=["google_sql_user.mlflow"] if name == "mysql" else None,
                lifecycle={"create_before_destroy": True},
            )
        )
    blocks.append(
        r.resource(
            "google_secret_manager_secret_version",
            "env",
            {"secret": Expr("google_secret_manager_secret.env.id"), "secret_data": env_file},
        )
    )
    return blocks
