"""Where each of MLflow's two schemas stands against this image's MLflow: empty, at its head, behind, or newer.

A revision this MLflow's migration scripts do not know was written by a newer MLflow (the tool was downgraded):
this image can neither serve nor migrate it. MLflow before 3.6 kept its user store without an alembic version
table: such a database has tables and no revision, and is behind, not empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

TRACKING, AUTH = "tracking", "auth"
AUTH_VERSION_TABLE = "alembic_version_auth"


@dataclass(frozen=True)
class SchemaState:
    name: str  # TRACKING or AUTH
    revision: str | None  # the database's alembic revision; None when it has none
    head: str  # this MLflow's head revision
    known: bool  # the revision is one of this MLflow's (or there is none)
    has_tables: bool

    @property
    def empty(self) -> bool:
        return not self.has_tables

    @property
    def current(self) -> bool:
        return self.revision == self.head

    @property
    def newer(self) -> bool:
        return not self.known

    def describe(self) -> str:
        if self.empty:
            return "empty"
        if self.revision:
            return self.revision
        return "no revision (a user store of MLflow before 3.6)" if self.name == AUTH else "no revision"


def _tracking_script():
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config(""))


def _auth_script():
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config(""))


def _knows(script, revision: str | None) -> bool:
    from alembic.util import CommandError

    if revision is None:
        return True
    try:
        return script.get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError is one
        return False


def read_state(name: str, engine: sa.Engine) -> SchemaState:
    from alembic.migration import MigrationContext

    script = _tracking_script() if name == TRACKING else _auth_script()
    options = {"version_table": AUTH_VERSION_TABLE} if name == AUTH else {}
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection, opts=options).get_current_revision()
        has_tables = bool(sa.inspect(connection).get_table_names())
    return SchemaState(name, revision, script.get_current_head(), _knows(script, revision), has_tables)


def heads() -> dict[str, str]:
    return {TRACKING: _tracking_script().get_current_head(), AUTH: _auth_script().get_current_head()}
