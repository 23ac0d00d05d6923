"""What a restore works with: the restore point, the new instance's name, what prepare() found (the plan), and
the result with what the previous instance costs meanwhile (see mlflow_gcp.operate.restore)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.resources.sql_backups import RecoveryWindow, iso

RESTORE_POINT_LABEL = "mlflow-gcp-restore-point"
RESTORED_FROM_LABEL = "mlflow-gcp-restored-from"
NAME_SUFFIX = re.compile(r"-restore-(b\d+|t\d{8}-\d{6})$")
MAX_NAME = 84


class RestoreError(MlflowGcpError):
    """A restore stopped; the message says where the server is, the hint how to go on."""


@dataclass(frozen=True)
class RestorePoint:
    backup_id: str = ""
    time: dt.datetime | None = None

    @property
    def tag(self) -> str:
        """What the new instance's name ends with and its label holds: `b<ID>` or `t<YYYYMMDD-HHMMSS>`."""
        if self.backup_id:
            return f"b{self.backup_id}"
        assert self.time is not None
        return "t" + self.time.astimezone(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")

    def describe(self) -> str:
        return f"backup {self.backup_id}" if self.backup_id else f"the state at {iso(self.time)}"


def new_instance_name(current: str, point: RestorePoint) -> str:
    """`mlflow-tracking-database-restore-b1765130000123`: the base name without an earlier restore's suffix."""
    base = NAME_SUFFIX.sub("", current)
    suffix = f"-restore-{point.tag}"
    return base[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def private_ip(instance: dict | None) -> str:
    return next((a["ipAddress"] for a in (instance or {}).get("ipAddresses", []) if a.get("type") == "PRIVATE"), "")


@dataclass
class RestoreResult:
    point: RestorePoint
    new_instance: str
    previous_instance: str
    url: str
    already_done: bool = False
    previous_tier: str = ""
    previous_edition: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored": self.point.describe(),
            "instance": self.new_instance,
            "previous_instance": self.previous_instance,
            "previous_instance_tier": self.previous_tier or None,
            "url": self.url,
            "already_done": self.already_done,
            "delete_previous": delete_commands(self.previous_instance) if self.previous_instance else None,
        }


def delete_commands(instance: str) -> str:
    return f"gcloud sql instances patch {instance} --no-deletion-protection && gcloud sql instances delete {instance}"


@dataclass
class Plan:
    """What prepare() found: the instances, the server's, and what is left to do."""

    previous: str
    new: str
    previous_state: dict
    target: dict | None
    server_host: str
    restored: bool  # the new instance holds the restore point (its label says so)
    moved: bool  # the recorded settings already name the new instance
    window: RecoveryWindow | None = None

    def steps(self, point: RestorePoint) -> list[str]:
        """What is left, in words, for --dry-run."""
        todo = []
        if self.target is None:
            how = (
                "a copy of the settings `up` gives" if point.backup_id else f"a point-in-time clone of {self.previous}"
            )
            todo.append(f"create the Cloud SQL instance {self.new} ({how}; 10 to 20 minutes)")
        if not self.restored:
            if point.backup_id:
                todo.append(f"restore backup {point.backup_id} of {self.previous} into {self.new}")
            todo.append(f"label {self.new} with what it holds")
        if not self.moved:
            todo += [
                f"set the MySQL user's password on {self.new} to the one in use (mysql-credentials)",
                f"add a version of mlflow-env naming {self.new}, roll out a new revision, record {self.new} as the "
                "deployment's instance",
            ]
        todo.append("check a logged-in call to the server")
        return todo
