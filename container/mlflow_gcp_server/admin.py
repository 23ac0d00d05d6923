"""Keep MLflow's admin user in line with the `mlflow-credentials` secret.

MLflow creates the admin user only when it is missing and ignores the configured password once
the user exists, so a rotated secret would never reach the user store. Here the secret is the
source of truth: the admin is created, or its password and admin flag are brought back in line.
"""

from __future__ import annotations

from mlflow_gcp_server.config import Credentials


def sync_admin_user(auth_db_uri: str, admin: Credentials) -> str:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_db_uri)
    try:
        return _sync(store, admin)
    finally:
        store.engine.dispose()


def _sync(store, admin: Credentials) -> str:
    if not store.has_user(admin.user, use_primary=True):
        store.create_user(admin.user, admin.password, is_admin=True)
        return "created"
    changes = []
    if not store.authenticate_user(admin.user, admin.password, use_primary=True):
        store.update_user(admin.user, password=admin.password)
        changes.append("password rotated")
    if not store.get_user(admin.user).is_admin:
        store.update_user(admin.user, is_admin=True)
        changes.append("admin flag restored")
    return ", ".join(changes) or "unchanged"
