"""Cloud SQL backups of the deployment's instance: list them, take one on demand, and the point-in-time window.

Cloud SQL keeps two kinds (https://cloud.google.com/sql/docs/mysql/backup-recovery/backups): the daily automated
ones `up` turns on, and on-demand ones (`backupRuns.insert`), which stay until deleted. With binary logging on,
the instance can also be cloned as it was at any time of the window `getLatestRecoveryTime` gives.

An on-demand backup is not idempotent: each insert is another backup. Its description carries a token of the run,
so a retry after a lost answer finds the backup the first try made instead of taking a second one.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError, OperationFailedError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.gcp.errors import execute, translate
from mlflow_gcp.gcp.operations import wait

Log = Callable[[str], None]

SUCCESSFUL = "SUCCESSFUL"
# Statuses after which a backup run changes no more (BackupRun.status in the Cloud SQL Admin v1 reference).
FINISHED = ("SUCCESSFUL", "FAILED", "SKIPPED", "DELETED", "DELETION_FAILED")
BACKUP_TIMEOUT = 60 * 60.0  # a large instance's first backup takes long; Google gives no bound
STALE_AFTER = dt.timedelta(hours=36)  # a daily backup missed once, and more
DESCRIPTION_PREFIX = "mlflow-gcp"


@dataclass(frozen=True)
class BackupRun:
    id: str
    kind: str  # AUTOMATED or ON_DEMAND
    status: str
    time: dt.datetime | None  # when it was taken (start, else enqueued)
    ended: dt.datetime | None
    description: str = ""
    error: str = ""
    instance: str = ""

    @property
    def successful(self) -> bool:
        return self.status == SUCCESSFUL

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance": self.instance,
            "kind": self.kind,
            "status": self.status,
            "time": iso(self.time),
            "ended": iso(self.ended),
            "description": self.description or None,
            "error": self.error or None,
        }


@dataclass(frozen=True)
class RecoveryWindow:
    """The times the binary logs let the instance be cloned at; None when binary logging is off."""

    earliest: dt.datetime | None
    latest: dt.datetime | None
    problem: str = ""  # why there is no window

    def contains(self, when: dt.datetime) -> bool:
        return self.earliest is not None and self.latest is not None and self.earliest <= when <= self.latest

    def describe(self) -> str:
        if self.earliest is None or self.latest is None:
            return self.problem or "none"
        return f"{iso(self.earliest)} to {iso(self.latest)}"

    def as_dict(self) -> dict[str, Any]:
        return {"earliest": iso(self.earliest), "latest": iso(self.latest), "problem": self.problem or None}


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 time as Google writes it (`2026-12-07T18:30:00.123Z`), in UTC."""
    if not text:
        return None
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{when.microsecond // 1000:03d}" if when.microsecond else "") + "Z"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def age(when: dt.datetime, at: dt.datetime | None = None) -> str:
    """`3 h`, `2 d 4 h`, `12 min`."""
    seconds = max(0, int(((at or now()) - when).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    hours = seconds // 3600
    return f"{hours} h" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def run_of(item: dict) -> BackupRun:
    error = item.get("error") or {}
    return BackupRun(
        id=str(item.get("id", "")),
        kind=item.get("type", "ON_DEMAND"),
        status=item.get("status", ""),
        time=parse_time(item.get("startTime") or item.get("enqueuedTime")),
        ended=parse_time(item.get("endTime")),
        description=item.get("description", ""),
        error=error.get("message") or error.get("code") or "",
        instance=item.get("instance", ""),
    )


class Backups:
    """The backup runs of one Cloud SQL instance (the deployment's, unless another is named)."""

    def __init__(self, settings: Settings, clients: Clients | None = None, instance: str | None = None) -> None:
        self.settings = settings
        self.clients = clients or Clients(settings.project)
        self.instance = instance or settings.db_instance

    @property
    def api(self):
        return self.clients.sqladmin()

    def _read(self, build: Callable[[Any], Any], what: str) -> Any:
        try:
            return retry.call(lambda: execute(build(self.api)))
        except gexc.NotFound:
            raise
        except gexc.GoogleAPICallError as e:
            raise translate(e, what, self.settings.project) from e

    def instance_state(self) -> dict | None:
        project, instance = self.settings.project, self.instance
        try:
            return self._read(
                lambda api: api.instances().get(project=project, instance=instance), "reading " + instance
            )
        except gexc.NotFound:
            return None

    def require_instance(self) -> dict:
        current = self.instance_state()
        if current is None:
            raise MlflowGcpError(
                f"The Cloud SQL instance {self.instance} does not exist in {self.settings.project}: there is nothing "
                "to back up or restore.",
                "Run `mlflow-gcp up` first, or pass --db-instance with the instance's name.",
            )
        return current

    def list(self) -> list[BackupRun]:
        """Every backup run, newest first (all pages)."""
        project, instance = self.settings.project, self.instance
        found: list[BackupRun] = []
        token = None
        while True:
            page = self._read(
                lambda api, token=token: api.backupRuns().list(
                    project=project, instance=instance, maxResults=500, **({"pageToken": token} if token else {})
                ),
                f"listing the backups of {instance}",
            )
            found += [run_of(item) for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(
                    found, key=lambda r: r.time or dt.datetime.min.replace(tzinfo=dt.timezone.utc), reverse=True
                )

    def get(self, backup_id: str) -> BackupRun | None:
        project, instance = self.settings.project, self.instance
        try:
            item = self._read(
                lambda api: api.backupRuns().get(project=project, instance=instance, id=backup_id),
                f"reading the backup {backup_id} of {instance}",
            )
        except (gexc.NotFound, gexc.BadRequest):  # an id that is no int64 is a 400
            return None
        return run_of(item)

    def newest_successful(self, runs: list[BackupRun] | None = None) -> BackupRun | None:
        return next((r for r in (runs if runs is not None else self.list()) if r.successful), None)

    def window(self) -> RecoveryWindow:
        project, instance = self.settings.project, self.instance
        try:
            answer = retry.call(
                lambda: execute(
                    self.api.projects().instances().getLatestRecoveryTime(project=project, instance=instance)
                )
            )
        except gexc.BadRequest as e:  # binary logging off, or an instance not running
            return RecoveryWindow(None, None, getattr(e, "message", None) or str(e))
        except gexc.GoogleAPICallError as e:
            raise translate(e, f"reading the point-in-time window of {instance}", project) from e
        return RecoveryWindow(
            parse_time(answer.get("earliestRecoveryTime")), parse_time(answer.get("latestRecoveryTime"))
        )

    # -- taking one ----------------------------------------------------------------------------------------
    def take(self, why: str, log: Log = lambda message: None) -> BackupRun:
        """An on-demand backup with `why` in its description, waited for until it ends; a failed one is an error
        that says what Google said."""

        current = self.require_instance()
        if current.get("state") != "RUNNABLE":
            raise MlflowGcpError(
                f"The Cloud SQL instance {self.instance} is {current.get('state')}: Cloud SQL backs up only a running "
                "instance.",
                "Start it (`mlflow-gcp status` says how) and run again.",
            )
        token = secrets.token_hex(4)
        description = f"{DESCRIPTION_PREFIX}: {why} (run {token})"
        project, instance = self.settings.project, self.instance

        def mine() -> dict | None:
            found = next((r for r in self.list() if r.description == description), None)
            return {"backupContext": {"backupId": found.id}} if found else None

        try:
            operation = retry.call(
                lambda: execute(
                    self.api.backupRuns().insert(project=project, instance=instance, body={"description": description})
                ),
                predicate=retry.any_of(retry.is_transient, retry.is_sql_operation_in_progress),
                deadline=retry.SQL_IN_PROGRESS_DEADLINE,
                applied=mine,
            )
        except gexc.GoogleAPICallError as e:
            raise translate(e, f"starting a backup of {instance}", project) from e
        backup_id = str((operation.get("backupContext") or {}).get("backupId") or "")
        if not backup_id:  # an older answer without the context: the run is found by its description
            found = retry.call(mine) or {}
            backup_id = str(found.get("backupContext", {}).get("backupId", ""))
        if not backup_id:
            raise OperationFailedError(f"The backup of {instance} was started but cannot be found in its backup list.")
        log(f"backup {backup_id} of {instance} started: {why}")
        return self.wait(backup_id, log)

    def wait(self, backup_id: str, log: Log = lambda message: None) -> BackupRun:
        def poll() -> BackupRun:
            run = self.get(backup_id)
            if run is None:
                raise OperationFailedError(f"The backup {backup_id} of {self.instance} disappeared while it was taken.")
            return run

        run = wait(
            poll,
            is_done=lambda r: r.status in FINISHED,
            error_of=lambda r: None,
            what=f"The backup {backup_id} of {self.instance}",
            timeout=BACKUP_TIMEOUT,
        )
        if not run.successful:
            raise MlflowGcpError(
                f"The backup {backup_id} of {self.instance} ended {run.status}"
                + (f": {run.error}" if run.error else "")
                + ". Nothing else was changed.",
                "Run `mlflow-gcp backup` again; if it fails again, see the instance's operations "
                f"(`gcloud sql operations list --instance {self.instance}`).",
            )
        log(f"backup {backup_id} of {self.instance} is {run.status}")
        return run


def backup_health(runs: list[BackupRun], at: dt.datetime | None = None) -> tuple[BackupRun | None, str]:
    """The newest successful backup and a warning: none, or older than 36 hours."""
    newest = next((r for r in runs if r.successful), None)
    if newest is None:
        return None, "no successful backup"
    when = newest.ended or newest.time
    if when is not None and (at or now()) - when > STALE_AFTER:
        return newest, f"the newest successful backup is {age(when, at)} old (more than 36 h)"
    return newest, ""


@dataclass(frozen=True)
class BackupSummary:
    """What `status` shows of the backups: the newest successful one, its age, a warning, the PITR window."""

    instance: str
    newest: BackupRun | None
    warning: str
    window: RecoveryWindow
    problem: str = ""  # why the backups could not be read

    def as_dict(self) -> dict[str, Any]:
        newest = self.newest
        when = (newest.ended or newest.time) if newest else None
        return {
            "instance": self.instance,
            "newest_successful": newest.as_dict() if newest else None,
            "age_hours": round((now() - when).total_seconds() / 3600, 1) if when else None,
            "warning": self.warning or None,
            "point_in_time_window": self.window.as_dict(),
            "error": self.problem or None,
        }


def summarize(settings: Settings, clients: Clients | None = None) -> BackupSummary:
    """Reads only; an unreadable list is said, never raised (status goes on)."""
    backups = Backups(settings, clients)
    try:
        runs = backups.list()
        window = backups.window()
    except (MlflowGcpError, gexc.GoogleAPICallError) as error:
        message = getattr(error, "message", None) or str(error)
        return BackupSummary(backups.instance, None, "", RecoveryWindow(None, None, "unknown"), message)
    newest, warning = backup_health(runs)
    return BackupSummary(backups.instance, newest, warning, window)
