"""Build-time check: fail the image build loudly if this MLflow changed what the container relies on.

Run by the Dockerfile after `pip install` (and by the e2e tests). It checks that
- MLflow's auth migrations still create their tables through alembic `Operations.create_table`,
  where `mlflow_gcp_server.database.unique_foreign_key_names` renames duplicate foreign-key names
  (the MySQL fix for MLflow issues 9642 / 10964), and that after the fix every name is unique;
- the private MLflow functions, settings and classes the entrypoint and the GCS plugin use exist;
- MLflow's FastAPI permission middleware is where `mlflow_gcp_server.fastapi_passthrough` wraps it;
- MLflow's app uses Flask's cookie sessions, which `mlflow_gcp_server.cookie_sessions` opens the same way;
- MLflow's `_get_request_message` parses through `parse_dict`, where `mlflow_gcp_server.request_parse` keeps it;
- the `gs` artifact repository entry point resolves to this container's signing repository;
- the `mlflow-gcp` app resolves to this container's guard, and every route of the server (Flask
  url_map and FastAPI routes) falls in a route family of `mlflow_gcp_server.route_policy`, the
  families meant for a laptop being refused: an MLflow upgrade that adds a route family fails the
  build until someone decides whether this deployment serves it;
- every request field that looks like a storage address, and every location tag, is classified in
  `mlflow_gcp_server.storage_locations`, and every module that reads a trace's data location is guarded;
- every route it serves has a permission decision in MLflow's auth (a validator, public, or
  self-authorizing) or is declared admin-only (`mlflow_gcp_server.validator_coverage`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

REQUIRED_ATTRIBUTES = {
    "mlflow.store.db.utils": ("_initialize_tables", "_get_schema_version",
                              "_get_latest_schema_revision", "_upgrade_db", "_get_alembic_config"),
    "mlflow.server.auth.db.utils": ("_get_alembic_config", "migrate"),
    "mlflow.server.auth.sqlalchemy_store.SqlAlchemyStore": ("init_db", "has_user", "create_user",
                                                             "authenticate_user", "update_user", "get_user"),
    # database_uri: read by mlflow_gcp_server.versions.
    "mlflow.server.auth.config.AuthConfig": ("auth_cache_ttl_seconds", "auth_cache_max_size", "database_uri"),
    "mlflow.environment_variables": (
        "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_SERVER_ALLOWED_HOSTS",
        "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE", "MLFLOW_DISABLE_TELEMETRY",
        "MLFLOW_BASIC_AUTH_FAIL_CLOSED", "MLFLOW_ENABLE_AI_GATEWAY",
    ),
    "mlflow.store.artifact.artifact_repo": ("MultipartUploadMixin", "MultipartDownloadMixin"),
    "mlflow.store.artifact.gcs_artifact_repo.GCSArtifactRepository": (
        "create_multipart_upload", "complete_multipart_upload", "abort_multipart_upload", "parse_gcs_uri",
        "_get_bucket",
    ),
    "alembic.operations.Operations": ("create_table", "create_foreign_key"),
    # Wrapped by mlflow_gcp_server.permission_cache.
    "mlflow.server.auth": ("sender_is_admin", "authorize", "_run_requirement", "authenticate_request",
                           "workspace_context", "auth_config",
                           # Used by mlflow_gcp_server.fastapi_passthrough.
                           "get_routed_asgi_path", "_find_fastapi_validator", "_native_fastapi_routes",
                           "_scope_matches_native_route", "add_fastapi_permission_middleware"),
}


class CompatibilityError(Exception):
    pass


def resolve(dotted: str):
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module_name), attribute)


def check_required_attributes() -> None:
    missing = [f"{owner}.{name}" for owner, names in REQUIRED_ATTRIBUTES.items()
               for name in names if not hasattr(resolve(owner), name)]
    if missing:
        raise CompatibilityError(f"MLflow no longer has: {', '.join(missing)}")


def check_basic_auth_app() -> None:
    from mlflow.server import _find_app

    if _find_app("basic-auth") != "mlflow.server.auth:create_app":
        raise CompatibilityError("the 'basic-auth' app no longer points to mlflow.server.auth:create_app")


def permission_middleware_app():
    """MLflow's FastAPI app around an empty Flask app, with the basic-auth app's permission middleware."""
    from flask import Flask
    from mlflow.server.auth import add_fastapi_permission_middleware
    from mlflow.server.fastapi_app import create_fastapi_app

    fastapi_app = create_fastapi_app(Flask("check"))
    add_fastapi_permission_middleware(fastapi_app)
    return fastapi_app


def check_fastapi_passthrough() -> None:
    from mlflow_gcp_server import fastapi_passthrough

    if not fastapi_passthrough.install(permission_middleware_app()):
        raise CompatibilityError("MLflow's FastAPI permission middleware (an @app.middleware('http') function named "
                                 f"{fastapi_passthrough.MLFLOW_DISPATCH_NAME}) is not where fastapi_passthrough looks")


def check_cookie_sessions() -> str:
    from mlflow.server import app as flask_app
    from mlflow_gcp_server import cookie_sessions

    if not isinstance(flask_app.session_interface, cookie_sessions.SecureCookieSessionInterface):
        raise CompatibilityError(f"MLflow's app no longer uses Flask's cookie sessions: {flask_app.session_interface}")
    try:
        return cookie_sessions.check_equivalence()
    except AssertionError as error:
        raise CompatibilityError(str(error)) from None


def check_request_parse() -> None:
    from mlflow_gcp_server import request_parse

    if not request_parse.parses_through_parse_dict():
        raise CompatibilityError("mlflow.server.handlers._get_request_message no longer parses through parse_dict, "
                                 "where mlflow_gcp_server.request_parse keeps a request's parse")


def check_gs_plugin() -> None:
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow_gcp_server.gcs import SignedUrlGCSArtifactRepository

    repository = _artifact_repository_registry.get_registered_artifact_repositories().get("gs")
    if repository is not SignedUrlGCSArtifactRepository:
        raise CompatibilityError(f"the 'gs' scheme resolves to {repository}, not the signing repository")
    parameters = inspect.signature(resolve("mlflow.store.artifact.gcs_artifact_repo.GCSArtifactRepository")).parameters
    if "client" not in parameters:
        raise CompatibilityError("GCSArtifactRepository no longer accepts a storage client")


# Modules whose routes must stay refused, whatever their path: the assistant, jobs, the AI gateway.
LAPTOP_ONLY_MODULES = ("mlflow.server.assistant", "mlflow.server.job_api", "mlflow.server.gateway_api",
                       "mlflow.server.sandbox")
# Requests that must be refused: the review's findings (issue 15).
MUST_BE_REFUSED = ("/ajax-api/3.0/mlflow/assistant/config", "/ajax-api/3.0/mlflow/assistant/message",
                   "/ajax-api/3.0/mlflow/demo/generate", "/ajax-api/3.0/jobs/", "/gateway/x/mlflow/invocations",
                   "/api/2.0/mlflow/webhooks", "//ajax-api/3.0/mlflow/assistant/config", "/unknown-family/x")


def check_route_policy() -> str:
    from mlflow.server import _find_app
    from mlflow_gcp_server.route_policy import Verdict, is_allowed, list_server_routes

    if _find_app("mlflow-gcp") != "mlflow_gcp_server.app:create_app":
        raise CompatibilityError("the 'mlflow-gcp' app does not resolve to mlflow_gcp_server.app:create_app")
    if allowed := [path for path in MUST_BE_REFUSED if is_allowed(path)]:
        raise CompatibilityError(f"the route policy lets these through: {allowed}")
    routes = list_server_routes()
    unclassified = sorted({f"{route.source} {route.path}" for route in routes if route.family is None})
    if unclassified:
        raise CompatibilityError(
            "routes in no family of mlflow_gcp_server/route_policy.py (decide whether this deployment serves "
            f"them, then add them to an ALLOW or DENY family): {unclassified}")
    opened = sorted({route.path for route in routes if route.module.startswith(LAPTOP_ONLY_MODULES)
                     and route.family.verdict is Verdict.ALLOW})
    if opened:
        raise CompatibilityError(f"routes of laptop-only modules fall in an ALLOW family: {opened}")
    from mlflow_gcp_server.validator_coverage import undecided

    if missing := undecided(routes):
        raise CompatibilityError(
            "routes of ALLOW families for which MLflow's auth has no permission decision (fail-closed keeps them to "
            "admins): declare each in mlflow_gcp_server/validator_coverage.py DECLARED_ADMIN_ONLY with its reason, "
            f"or DENY it in route_policy.py: {missing}")
    denied = sum(route.family.verdict is Verdict.DENY for route in routes)
    return f"{len(routes)} routes, {denied} refused, every served one with a permission decision"


def check_storage_locations() -> str:
    from mlflow_gcp_server import location_fields, storage_locations, trace_locations

    try:
        return f"{storage_locations.check_classification()}; {trace_locations.check_trace_guard()}"
    except location_fields.ClassificationError as error:
        raise CompatibilityError(str(error)) from None


def check_signing_credentials() -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import _signing
    from mlflow_gcp_server.signing import IamSigningCredentials

    _signing.ensure_signed_credentials(IamSigningCredentials(AnonymousCredentials(), "sa@p.iam.gserviceaccount.com"))


def foreign_keys(items) -> list:
    import sqlalchemy as sa

    return [item for item in items if isinstance(item, sa.ForeignKeyConstraint) and item.name]


def created_foreign_key_names() -> tuple[list[str], int]:
    """Run the auth migrations with the fix on a scratch SQLite database; return the foreign-key
    names the fix let through and how many it renamed."""
    import sqlalchemy as sa
    from alembic.operations import Operations
    from mlflow.server.auth.db import utils
    from mlflow_gcp_server.database import unique_foreign_key_names

    names: list[str] = []
    renamed = 0
    with unique_foreign_key_names(set()):
        fixed_create_table = Operations.create_table

        def recording_create_table(self, table_name, *items, **kwargs):
            nonlocal renamed
            declared = [str(item.name) for item in foreign_keys(items)]
            result = fixed_create_table(self, table_name, *items, **kwargs)
            created = [str(item.name) for item in foreign_keys(items)]
            names.extend(created)
            renamed += sum(before != after for before, after in zip(declared, created, strict=True))
            return result

        Operations.create_table = recording_create_table
        try:
            with tempfile.TemporaryDirectory() as directory:
                engine = sa.create_engine(f"sqlite:///{directory}/auth.db")
                utils.migrate(engine, "head")
                engine.dispose()
        finally:
            Operations.create_table = fixed_create_table
    return names, renamed


def check_auth_migrations() -> str:
    names, renamed = created_foreign_key_names()
    if not names:
        raise CompatibilityError("the auth migrations created no named foreign key through "
                                 "Operations.create_table: the MySQL foreign-key fix no longer applies")
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise CompatibilityError(f"duplicate foreign-key names remain after the fix: {duplicates}")
    return f"{len(names)} foreign keys, {renamed} renamed" + ("" if renamed else " (MLflow may have fixed it)")


def main() -> int:
    checks = (("MLflow internals", check_required_attributes), ("basic-auth app", check_basic_auth_app),
              ("FastAPI permission middleware", check_fastapi_passthrough), ("cookie sessions", check_cookie_sessions),
              ("one parse per request", check_request_parse),
              ("gs plugin", check_gs_plugin), ("signing credentials", check_signing_credentials),
              ("auth migrations on MySQL", check_auth_migrations), ("route policy", check_route_policy),
              ("storage locations", check_storage_locations))
    for label, check in checks:
        try:
            detail = check()
        except CompatibilityError as error:
            print(f"INCOMPATIBLE MLflow for the mlflow-gcp container: {label}: {error}", file=sys.stderr)
            return 1
        print(f"ok: {label}" + (f" ({detail})" if detail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
