"""`GET /mlflow-gcp/versions`: the MLflow this server runs and where each database's schema stands (admins only).

`mlflow-gcp status` reads it. The schemas are read at each request, so a schema migrated by a later image while
this revision still serves shows as it is. MLflow's auth has no permission decision for this route: with
MLFLOW_BASIC_AUTH_FAIL_CLOSED it answers 401 without a login and 403 to a non-admin before the view runs
(validator_coverage.DECLARED_ADMIN_ONLY); the view checks the admin flag again all the same.
"""

from __future__ import annotations

import os

from mlflow_gcp_server import schema

ROUTE = "/mlflow-gcp/versions"
_engines: dict[str, object] = {}


def _engine(name: str):
    import sqlalchemy as sa

    if name not in _engines:
        if name == schema.TRACKING:
            uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
        else:
            from mlflow.server.auth import auth_config

            uri = auth_config.database_uri
        _engines[name] = sa.create_engine(uri, poolclass=sa.NullPool)
    return _engines[name]


def versions() -> dict[str, str | None]:
    import mlflow

    tracking = schema.read_state(schema.TRACKING, _engine(schema.TRACKING))
    auth = schema.read_state(schema.AUTH, _engine(schema.AUTH))
    return {"mlflow": mlflow.__version__, "tracking_schema": tracking.revision, "tracking_head": tracking.head,
            "auth_schema": auth.revision, "auth_head": auth.head}


def versions_view():
    from flask import jsonify
    from mlflow.server import auth

    if not auth.sender_is_admin():
        return jsonify(error_code="PERMISSION_DENIED", message="Admins only."), 403
    return jsonify(versions())


def install(flask_app) -> None:
    flask_app.add_url_rule(ROUTE, "mlflow_gcp_versions", versions_view, methods=["GET"])
