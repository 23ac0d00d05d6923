"""The two ways the image meets its databases: the migration job (`entrypoint.py migrate`) and a serving start.

On MySQL a schema migration is not transactional: one that fails halfway leaves a half-migrated schema (MLflow
issue 23721, "Table 'secrets' already exists"). So a serving instance migrates nothing that holds data: it creates
the schemas of an empty database (the first deploy) and refuses any other schema that is not at this image's head.
Only the migration job, which `mlflow-gcp up` runs after an on-demand backup, upgrades a schema.

Both run under the MySQL named lock (database.migration_lock): instances starting together and a job never work on
a schema at the same time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from mlflow_gcp_server import database, schema
from mlflow_gcp_server.admin import sync_admin_user

CURRENT, MIGRATED, NEWER_SCHEMA, FAILED = "current", "migrated", "newer-schema", "failed"
EXIT_CODES = {CURRENT: 0, MIGRATED: 0, NEWER_SCHEMA: 3, FAILED: 1}
RESULT_PREFIX = "migration result: "
ERROR_MAX_LENGTH = 500
UPGRADE_HINT = "run `mlflow-gcp up`, which migrates it with a backup first"


@dataclass(frozen=True)
class Engines:
    server: sa.Engine  # no database selected: waits, creates the databases, holds the lock
    tracking: sa.Engine
    auth: sa.Engine
    auth_uri: str


@dataclass
class MigrationResult:
    outcome: str
    mlflow: str
    tracking_before: str | None = None
    tracking_after: str | None = None
    auth_before: str | None = None
    auth_after: str | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def line(self) -> str:
        return RESULT_PREFIX + json.dumps(asdict(self), sort_keys=False)


class SchemaRefused(Exception):
    """A serving start found a schema it must not serve nor migrate."""


def mlflow_version() -> str:
    import mlflow

    return mlflow.__version__


def error_text(error: BaseException, secrets: tuple[str, ...]) -> str:
    """One line naming the error, without any of the secrets (a driver may quote a statement's parameters)."""
    original = getattr(error, "orig", None) or error
    text = " ".join(f"{type(original).__name__}: {original}".split())
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text[:ERROR_MAX_LENGTH]


def prepare(engines: Engines, wait_seconds: float, database_names: tuple[str, ...]) -> None:
    database.wait_for_server(engines.server, wait_seconds)
    database.create_databases(engines.server, database_names)


def _revision(engine: sa.Engine, name: str) -> str | None:
    try:
        return schema.read_state(name, engine).revision
    except sa.exc.SQLAlchemyError:
        return None


def migrate(engines: Engines, admin, secrets: tuple[str, ...], log: Callable[[str], None]) -> MigrationResult:
    """Bring both schemas to this image's heads; refuse a newer schema without changing anything.
    Expects `prepare` done; never raises for a database error (the result says `failed`)."""
    result = MigrationResult(FAILED, mlflow_version())
    try:
        with database.migration_lock(engines.server):
            tracking = schema.read_state(schema.TRACKING, engines.tracking)
            auth = schema.read_state(schema.AUTH, engines.auth)
            result.tracking_before, result.auth_before = tracking.revision, auth.revision
            if tracking.newer or auth.newer:
                result.tracking_after, result.auth_after = tracking.revision, auth.revision
                result.outcome = NEWER_SCHEMA
                newer = [s for s in (tracking, auth) if s.newer]
                result.error = "; ".join(f"the {s.name} schema is at {s.revision}, newer than MLflow "
                                         f"{result.mlflow} knows (its head: {s.head})" for s in newer)
                return result
            changed = not (tracking.current and auth.current)
            log(f"Tracking schema ({tracking.describe()}): {database.upgrade_tracking_schema(engines.tracking)}.")
            log(f"Auth schema ({auth.describe()}): {database.upgrade_auth_schema(engines.auth)}.")
            log(f"Admin user '{admin.user}': {sync_admin_user(engines.auth_uri, admin)}.")
        result.outcome = MIGRATED if changed else CURRENT
    except Exception as error:  # any failure is the `failed` result, possibly halfway
        result.outcome = FAILED
        result.error = error_text(error, secrets)
    if result.outcome != NEWER_SCHEMA:
        result.tracking_after = _revision(engines.tracking, schema.TRACKING)
        result.auth_after = _revision(engines.auth, schema.AUTH)
    return result


def refusal(state: schema.SchemaState, mlflow: str) -> str:
    if state.newer:
        where = f"is at revision {state.revision}, newer than this image's MLflow {mlflow} knows (head {state.head})"
    elif state.revision:
        where = f"is at revision {state.revision}, this image's MLflow {mlflow} needs {state.head}"
    else:
        where = f"has {state.describe()}, this image's MLflow {mlflow} needs {state.head}"
    return f"The {state.name} database schema {where}: not served and not migrated at start; {UPGRADE_HINT}."


def prepare_for_serving(engines: Engines, admin, log: Callable[[str], None]) -> None:
    """Create the schemas of an empty database; serve one at this image's head; refuse any other (SchemaRefused)."""
    with database.migration_lock(engines.server):
        tracking = schema.read_state(schema.TRACKING, engines.tracking)
        auth = schema.read_state(schema.AUTH, engines.auth)
        refused = [state for state in (tracking, auth) if not state.empty and not state.current]
        if refused:
            raise SchemaRefused(" ".join(refusal(state, mlflow_version()) for state in refused))
        if tracking.empty:
            log(f"Tracking schema: {database.upgrade_tracking_schema(engines.tracking)}.")
        if auth.empty:
            log(f"Auth schema: {database.upgrade_auth_schema(engines.auth)}.")
        log(f"Admin user '{admin.user}': {sync_admin_user(engines.auth_uri, admin)}.")
