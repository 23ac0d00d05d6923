"""Schema preparation on a real MariaDB: an older tracking schema is upgraded, the auth schema is
created with unique foreign-key names, and a second run changes nothing."""

from __future__ import annotations

import secrets
import sys

import pytest
import sqlalchemy as sa
from e2e_deployment import ENTRYPOINT
from e2e_mariadb import MariaDB

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ENTRYPOINT.parent))
from mlflow_gcp_server import database  # noqa: E402
from mlflow_gcp_server.config import Credentials  # noqa: E402

REVISIONS_BEHIND = 8


def fresh_database(mariadb: MariaDB) -> sa.Engine:
    name = f"db_{secrets.token_hex(4)}"
    credentials = Credentials("root", mariadb.root_password)
    server = sa.create_engine(database.mysql_uri(credentials, "127.0.0.1", mariadb.port), poolclass=sa.NullPool)
    database.create_databases(server, (name,))
    return sa.create_engine(database.mysql_uri(credentials, "127.0.0.1", mariadb.port, name), poolclass=sa.NullPool)


def older_revision() -> str:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    revisions = list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())
    return revisions[REVISIONS_BEHIND].revision


def create_old_tracking_schema(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_tracking_schema_of_an_older_mlflow_is_upgraded(mariadb: MariaDB):
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    engine = fresh_database(mariadb)
    revision = older_revision()
    create_old_tracking_schema(engine, revision)
    assert _get_schema_version(engine) == revision

    assert database.upgrade_tracking_schema(engine) == "upgraded"
    assert _get_schema_version(engine) == _get_latest_schema_revision()
    assert database.upgrade_tracking_schema(engine) == "unchanged"


def test_auth_schema_is_created_on_mysql_with_unique_foreign_key_names(mariadb: MariaDB):
    engine = fresh_database(mariadb)
    with database.migration_lock(engine):
        assert database.upgrade_auth_schema(engine) == "upgraded"
    names = [fk["name"] for table in sa.inspect(engine).get_table_names()
             for fk in sa.inspect(engine).get_foreign_keys(table)]
    assert len(names) == len(set(names)) and "fk_user_id" in names
    assert database.upgrade_auth_schema(engine) == "unchanged"
