"""Container entrypoint: configure and start `mlflow server` behind MLflow's basic-auth login.

Reads the secrets as the deploy step exposes them (see `mlflow_gcp.service_spec` in the deploy
tool), prepares the MySQL databases (an empty one gets fresh schemas; a schema not at this image's
head is refused, never migrated at start; admin user in line with the secret) and then runs
`mlflow server` in this process, so MLflow is imported once and the start stays as fast as a plain
`mlflow server`. Secrets reach MLflow through environment variables and a private file, never
through argv or logs.

Modes (container/README.md): no argument serves; `migrate` is the migration job (exit 0, 3 for a
newer schema, 1 for a failure); MLFLOW_GCP_MAINTENANCE set serves the maintenance answer.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

# Keep the image's (and the build context's) directory free of __pycache__; MLflow's own
# bytecode is compiled by pip at install time.
sys.dont_write_bytecode = True
CONTAINER_DIR = Path(__file__).resolve().parent
if str(CONTAINER_DIR) not in sys.path:
    sys.path.insert(0, str(CONTAINER_DIR))

from mlflow_gcp_server.config import ConfigError, ServerConfig, read_config  # noqa: E402

_logger = logging.getLogger("mlflow-gcp")

# Raw secrets are parsed once, then dropped from the environment the server inherits.
RAW_SECRET_VARS = ("MLFLOW_ENV", "MYSQL_CREDENTIALS", "MLFLOW_CREDENTIALS")
AUTH_CACHE_TTL_SECONDS = 120
# How long to wait for MySQL to accept connections (Cloud SQL restarts, maintenance).
DATABASE_WAIT_VAR = "MLFLOW_GCP_DATABASE_WAIT_SECONDS"
DEFAULT_DATABASE_WAIT_SECONDS = 60
# Set on the revision `mlflow-gcp up` deploys while it backs up and migrates: its value is the reason.
MAINTENANCE_VAR = "MLFLOW_GCP_MAINTENANCE"
MAINTENANCE_REASON_MAX_LENGTH = 100
# A db-f1-micro allows ~250 connections; each instance keeps at most 5 + 5 for the runs.
SIZING_DEFAULTS = {
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "5",
    "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "1800",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
# Security settings mlflow-env cannot override (set after its MLFLOW_* values).
# - A route MLflow's auth has no permission decision for is refused (403) to non-admins. MLflow 3.17 defaults to
#   it; set here so that a later default, or a stray setting, cannot open such routes to every logged-in user.
# - The AI gateway is refused by the route policy (route_policy.py): MLflow then says so in server-info and the UI
#   hides it, instead of advertising `"gateway": true`.
SECURITY_SETTINGS = {
    "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true",
    "MLFLOW_ENABLE_AI_GATEWAY": "false",
}


def allowed_hosts(config: ServerConfig) -> list[str]:
    # Cloud Run gives the service a second name, SERVICE-HASH-REGION.a.run.app, that the deploy step cannot know
    # before the service exists. run.app is a domain only Google serves and routes by name, so a request with
    # such a Host reaches only this service: accepting the service's run.app names is safe, and the first
    # deploy needs no second revision to tell the server its URLs. CORS below stays exact.
    own = [urlsplit(url).netloc for url in config.service_urls]
    return [*own, f"{config.service_name}-*.run.app"]


def allowed_origins(config: ServerConfig) -> list[str]:
    if config.service_urls:
        return list(config.service_urls)
    return [f"https://{config.service_name}-*.run.app"]


def ini_value(value: str) -> str:
    # MLflow reads the file with configparser's interpolation, where '%' is special.
    return value.replace("%", "%%")


def write_auth_config(config: ServerConfig, auth_db_uri: str) -> Path:
    """MLflow's auth settings, in a file only this user can read (it holds the database URI)."""
    directory = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))
    path = directory / "basic_auth.ini"
    lines = [
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = {ini_value(auth_db_uri)}",
        f"admin_username = {ini_value(config.admin.user)}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_SECONDS}",
        "auth_cache_max_size = 10000",
    ]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def python_path() -> str:
    # The uvicorn worker must find `mlflow_gcp_server` and its entry points (the dist-info here).
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(filter(None, (str(CONTAINER_DIR), existing)))


def server_environment(config: ServerConfig, backend_uri: str, auth_config_path: Path) -> dict[str, str]:
    return {
        **SIZING_DEFAULTS,
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config_path),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": config.flask_secret_key,
        "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(allowed_hosts(config)),
        "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": ",".join(allowed_origins(config)),
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "GOOGLE_CLOUD_PROJECT": config.project,
        "MLFLOW_GCP_SIGNING_SERVICE_ACCOUNT": config.service_account_email,
        "PYTHONPATH": python_path(),
        "PYTHONDONTWRITEBYTECODE": "1",
        **config.mlflow_overrides,
        **SECURITY_SETTINGS,
    }


def server_arguments(config: ServerConfig) -> list[str]:
    return [
        "server",
        "--host", "0.0.0.0",
        "--port", str(config.port),
        "--workers", "1",
        # MLflow's basic-auth app behind the container's guard (mlflow_gcp_server.app): no forwarding
        # header is trusted from any peer, the scheme is https, laptop-only route families are refused.
        "--app-name", "mlflow-gcp",
        "--uvicorn-opts", "--no-proxy-headers",
        "--serve-artifacts",
        "--artifacts-destination", config.artifacts_destination,
    ]


def database_wait_seconds() -> int:
    value = os.environ.get(DATABASE_WAIT_VAR, "")
    return int(value) if value.isdigit() else DEFAULT_DATABASE_WAIT_SECONDS


def database_engines(config: ServerConfig, ca_file: str):
    import sqlalchemy as sa
    from mlflow_gcp_server import database
    from mlflow_gcp_server.migration import Engines

    def engine(uri: str) -> sa.Engine:
        return sa.create_engine(uri, poolclass=sa.NullPool)

    auth_db_uri = database.mysql_uri(config.mysql, config.db_host, config.db_port, config.auth_db_name, ca_file)
    return Engines(
        server=engine(database.mysql_uri(config.mysql, config.db_host, config.db_port, "", ca_file)),
        tracking=engine(database.mysql_uri(config.mysql, config.db_host, config.db_port, config.db_name, ca_file)),
        auth=engine(auth_db_uri),
        auth_uri=auth_db_uri,
    )


def prepare_databases(config: ServerConfig, ca_file: str) -> None:
    """Serving: create the schemas of an empty database, refuse one that is not at this image's head."""
    from mlflow_gcp_server import migration

    engines = database_engines(config, ca_file)
    migration.prepare(engines, database_wait_seconds(), (config.db_name, config.auth_db_name))
    migration.prepare_for_serving(engines, config.admin, _logger.info)


def run_migration(config: ServerConfig, ca_file: str) -> int:
    """The migration job: both schemas to this image's heads; the result as the last line on stderr."""
    import sqlalchemy as sa
    from mlflow_gcp_server import migration

    secrets = (config.mysql.password, config.admin.password, config.flask_secret_key)
    engines = database_engines(config, ca_file)
    try:
        migration.prepare(engines, database_wait_seconds(), (config.db_name, config.auth_db_name))
    except (sa.exc.SQLAlchemyError, TimeoutError) as error:
        result = migration.MigrationResult(migration.FAILED, migration.mlflow_version(),
                                           error=migration.error_text(error, secrets))
    else:
        result = migration.migrate(engines, config.admin, secrets, _logger.info)
    if result.error:
        _logger.error("Migration %s: %s", result.outcome, result.error)
    _logger.info(result.line())
    return result.exit_code


def run_mlflow_server(config: ServerConfig) -> None:
    from mlflow.cli import cli

    cli.main(args=server_arguments(config), prog_name="mlflow")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="mlflow-gcp: %(message)s", stream=sys.stderr)
    # Alembic and MLflow log their own progress; keep ours to one line per step.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def database_error_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    return f"Cannot prepare the MySQL databases: {type(original).__name__}: {original}"


def maintenance_reason() -> str:
    return " ".join(os.environ.get(MAINTENANCE_VAR, "").split())[:MAINTENANCE_REASON_MAX_LENGTH]


def main(argv: list[str] | None = None) -> None:
    """`entrypoint.py`: serve (or, with MLFLOW_GCP_MAINTENANCE set, the maintenance answer);
    `entrypoint.py migrate`: the migration job, which migrates even with MLFLOW_GCP_MAINTENANCE set (a job made
    from the maintenance revision's template has it)."""
    arguments = sys.argv[1:] if argv is None else argv
    configure_logging()
    if arguments not in ([], ["migrate"]):
        _logger.error("Unknown arguments %s: run with no argument to serve, or `migrate`.", arguments)
        sys.exit(2)
    migrate = arguments == ["migrate"]
    if not migrate and (reason := maintenance_reason()):
        from mlflow_gcp_server import maintenance

        _logger.info("Maintenance (%s): every request but /health answers 503; no database is opened.", reason)
        maintenance.serve(int(os.environ.get("PORT") or "8080"), reason)
        return
    try:
        config = read_config(os.environ)
    except ConfigError as error:
        _logger.error("Configuration error: %s", error)
        if migrate:  # the job's contract: exit 1 and the result line
            from mlflow_gcp_server import migration

            result = migration.MigrationResult(migration.FAILED, migration.mlflow_version(),
                                               error=f"configuration error: {error}")
            _logger.info(result.line())
            sys.exit(result.exit_code)
        sys.exit(2)
    for name in RAW_SECRET_VARS:
        os.environ.pop(name, None)

    from mlflow_gcp_server.database import mysql_uri, write_ca_file

    ca_file = write_ca_file(config.db_ca_pem) if config.db_ca_pem else ""
    if not ca_file:
        _logger.warning("No database CA in MLFLOW_ENV: connecting to MySQL without TLS.")
    auth_db_uri = mysql_uri(config.mysql, config.db_host, config.db_port, config.auth_db_name, ca_file)
    backend_uri = mysql_uri(config.mysql, config.db_host, config.db_port, config.db_name, ca_file)
    # Set before MLflow is imported: its auth module reads the configuration at import time.
    os.environ.update(server_environment(config, backend_uri, write_auth_config(config, auth_db_uri)))
    if migrate:
        sys.exit(run_migration(config, ca_file))
    if not config.service_urls:
        _logger.warning("MLFLOW_GCP_SERVICE_URLS is not set: accepting hosts %s.", allowed_hosts(config)[0])

    import sqlalchemy as sa
    from mlflow_gcp_server.migration import SchemaRefused

    try:
        prepare_databases(config, ca_file)
    except SchemaRefused as refused:
        _logger.error("%s", refused)
        sys.exit(1)
    except (sa.exc.SQLAlchemyError, TimeoutError) as error:
        _logger.error(database_error_line(error))
        sys.exit(1)
    run_mlflow_server(config)


if __name__ == "__main__":
    main()
