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
    ca = str(mariadb.ca_file) if mariadb.tls else ""
    server = sa.create_engine(database.mysql_uri(credentials, "127.0.0.1", mariadb.port, "", ca), poolclass=sa.NullPool)
    database.create_databases(server, (name,))
    return sa.create_engine(database.mysql_uri(credentials, "127.0.0.1", mariadb.port, name, ca), poolclass=sa.NullPool)


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


def test_the_server_reaches_an_encrypted_only_database_with_tls_and_checks_its_ca(mariadb: MariaDB, tmp_path):
    """The session's MariaDB accepts only TLS (require_secure_transport), like Cloud SQL with sslMode
    ENCRYPTED_ONLY; its certificate names the instance, not 127.0.0.1."""
    assert mariadb.tls
    credentials = Credentials("root", mariadb.root_password)
    with_ca = sa.create_engine(
        database.mysql_uri(credentials, "127.0.0.1", mariadb.port, "", str(mariadb.ca_file)), poolclass=sa.NullPool
    )
    with with_ca.connect() as connection:
        cipher = connection.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1]
    assert cipher  # the session is encrypted
    import pymysql

    with pytest.raises(pymysql.err.OperationalError):  # refused without TLS
        pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", password=mariadb.root_password,
                        ssl_disabled=True).close()
    from e2e_mariadb import write_tls_files

    write_tls_files(tmp_path)  # another CA: the server's certificate is not trusted
    wrong_ca = sa.create_engine(
        database.mysql_uri(credentials, "127.0.0.1", mariadb.port, "", str(tmp_path / "ca.pem")),
        poolclass=sa.NullPool,
    )
    with pytest.raises(sa.exc.OperationalError):
        wrong_ca.connect().close()
