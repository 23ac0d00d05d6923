"""Prepare the MySQL databases before the server starts: create them, bring both schemas to head.

MLflow refuses to start on an out-of-date tracking schema (it asks for `mlflow db upgrade`), and
its auth migrations fail on MySQL because two tables declare the same foreign-key name
`fk_user_id` (MLflow issues 9642 and 10964): MySQL and MariaDB want foreign-key names unique per
database. Both are handled here, under a MySQL named lock so that instances starting together
migrate one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from urllib.parse import quote

import sqlalchemy as sa
from alembic.operations import Operations

from mlflow_gcp_server.config import Credentials

_logger = logging.getLogger(__name__)

MIGRATION_LOCK = "mlflow_gcp_schema_migration"
MIGRATION_LOCK_TIMEOUT_SECONDS = 600
MYSQL_IDENTIFIER_MAX_LENGTH = 64


def mysql_uri(credentials: Credentials, host: str, port: int, database: str = "", ca_file: str = "") -> str:
    """With `ca_file`, PyMySQL connects with TLS and checks the server's certificate against those CAs. Not its
    host name: Cloud SQL's per-instance server certificates name the instance, not its private IP (like the
    mysql client's --ssl-mode=VERIFY_CA)."""
    user = quote(credentials.user, safe="")
    password = quote(credentials.password, safe="")
    uri = f"mysql+pymysql://{user}:{password}@{host}:{port}/{database}?charset=utf8mb4"
    if ca_file:
        uri += f"&ssl_ca={quote(ca_file, safe='/')}&ssl_check_hostname=false"
    return uri


def write_ca_file(pem: str) -> str:
    """The CA certificates in a file of a private directory (PyMySQL reads them by path)."""
    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="mlflow-db-ca-"))
    path = directory / "server-ca.pem"
    path.write_text(pem, encoding="ascii")
    path.chmod(0o600)
    return str(path)


def wait_for_server(engine: sa.Engine, timeout: float) -> None:
    """Cloud SQL can take a few seconds to accept connections after a restart or a failover."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect():
                return
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def create_databases(engine: sa.Engine, names: tuple[str, ...]) -> None:
    # Names are validated as [A-Za-z0-9_]{1,64} by the configuration, so quoting is enough.
    with engine.begin() as connection:
        for name in names:
            connection.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"))


@contextlib.contextmanager
def migration_lock(engine: sa.Engine) -> Iterator[None]:
    with engine.connect() as connection:
        acquired = connection.execute(
            sa.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": MIGRATION_LOCK, "timeout": MIGRATION_LOCK_TIMEOUT_SECONDS},
        ).scalar()
        if acquired != 1:
            raise TimeoutError("Another instance held the schema migration lock for too long.")
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK})


def upgrade_tracking_schema(engine: sa.Engine) -> str:
    """Create the tracking tables on an empty database, or upgrade them to this MLflow's head."""
    from mlflow.store.db import utils

    current = utils._get_schema_version(engine)
    if current is None:
        utils._initialize_tables(engine)
        return "created"
    if current != utils._get_latest_schema_revision():
        utils._upgrade_db(engine)
        return "upgraded"
    return "unchanged"


def existing_foreign_key_names(engine: sa.Engine) -> set[str]:
    inspector = sa.inspect(engine)
    return {
        foreign_key["name"]
        for table in inspector.get_table_names()
        for foreign_key in inspector.get_foreign_keys(table)
        if foreign_key.get("name")
    }


def unique_name(name: str, table_name: str, taken: set[str]) -> str:
    candidate = f"{name}_{table_name}"[:MYSQL_IDENTIFIER_MAX_LENGTH]
    counter = 2
    while candidate in taken:
        suffix = f"_{counter}"
        candidate = f"{name}_{table_name}"[: MYSQL_IDENTIFIER_MAX_LENGTH - len(suffix)] + suffix
        counter += 1
    return candidate


def rename_taken_foreign_keys(table_name: str, items: tuple, taken: set[str]) -> None:
    for item in items:
        if isinstance(item, sa.ForeignKeyConstraint) and item.name:
            if item.name in taken:
                item.name = unique_name(str(item.name), table_name, taken)
            taken.add(str(item.name))


@contextlib.contextmanager
def unique_foreign_key_names(taken: set[str]) -> Iterator[None]:
    """While migrations run, give a foreign key whose name is already used in the database a
    name of its own (`fk_user_id` -> `fk_user_id_registered_model_permissions`)."""
    original_create_table = Operations.create_table
    original_create_foreign_key = Operations.create_foreign_key

    def create_table(self, table_name, *items, **kwargs):
        rename_taken_foreign_keys(table_name, items, taken)
        return original_create_table(self, table_name, *items, **kwargs)

    def create_foreign_key(self, constraint_name, source_table, *args, **kwargs):
        if constraint_name in taken:
            constraint_name = unique_name(constraint_name, source_table, taken)
        if constraint_name:
            taken.add(constraint_name)
        return original_create_foreign_key(self, constraint_name, source_table, *args, **kwargs)

    Operations.create_table = create_table
    Operations.create_foreign_key = create_foreign_key
    try:
        yield
    finally:
        Operations.create_table = original_create_table
        Operations.create_foreign_key = original_create_foreign_key


def auth_schema_is_current(engine: sa.Engine) -> bool:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db import utils

    script = ScriptDirectory.from_config(utils._get_alembic_config(""))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": "alembic_version_auth"})
        return context.get_current_revision() == script.get_current_head()


def upgrade_auth_schema(engine: sa.Engine) -> str:
    """Bring MLflow's user store to head with MySQL-safe foreign-key names."""
    from mlflow.server.auth.db import utils

    if auth_schema_is_current(engine):
        return "unchanged"
    with unique_foreign_key_names(existing_foreign_key_names(engine)):
        utils.migrate(engine, "head")
    return "upgraded"
