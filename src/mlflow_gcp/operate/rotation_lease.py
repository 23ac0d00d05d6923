"""A lease so that two `credentials rotate` cannot run at once on one deployment.

Two rotations at once would each change the MySQL password and roll out revisions over the other's, and both
fail and roll back. The lease is an annotation on the secret `mlflow-credentials` (every deployment has it),
written with the secret's etag: Secret Manager refuses a write with a stale etag (409 ABORTED,
https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets/patch), so of two rotations
reading a free lease only one writes it. It names its holder (user@host, pid) and expires: a lease past its
expiry, or one whose holder process on this same machine is gone (a rotation killed with SIGKILL), is taken over.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.errors import MlflowGcpError

LEASE = "mlflow-gcp-rotation-lease"
DURATION = dt.timedelta(hours=1)  # longer than a rotation's bounded waits (two rollouts, the login check)

Log = Callable[[str], None]


class RotationLocked(MlflowGcpError):
    """Another rotation holds the lease."""


@dataclass(frozen=True)
class Holder:
    who: str
    host: str
    pid: int
    since: str
    until: str
    token: str

    @classmethod
    def parse(cls, value: str) -> Holder | None:
        try:
            data = json.loads(value)
            return cls(
                str(data["who"]), str(data["host"]), int(data["pid"]), data["since"], data["until"], str(data["token"])
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as stale

    def expired(self, now: dt.datetime) -> bool:
        try:
            return dt.datetime.fromisoformat(self.until) <= now
        except ValueError:
            return True

    def gone(self) -> bool:
        """Its process ended without releasing it (only knowable on the same machine)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def describe(self) -> str:
        return f"{self.who} on {self.host} (pid {self.pid}) since {self.since}, until {self.until} at the latest"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (a container): the host and pid still name the holder
        return "someone"


class Lease:
    def __init__(self, client: Any, secret_path: str, call: Callable, command: str, log: Log) -> None:
        self.client, self.path, self.call, self.command, self.log = client, secret_path, call, command, log
        now = _now()
        self.mine = Holder(
            _user(),
            socket.gethostname(),
            os.getpid(),
            now.isoformat(),
            (now + DURATION).isoformat(),
            secrets.token_hex(8),
        )
        self.held = False

    def _write(self, secret: Any, value: str | None) -> bool:
        """Set or remove the annotation if the secret is unchanged since `secret` was read; False if it was."""
        from google.api_core import exceptions as gexc
        from google.protobuf import field_mask_pb2

        annotations = dict(secret.annotations)
        if value is None:
            annotations.pop(LEASE, None)
        else:
            annotations[LEASE] = value
        body = {"name": self.path, "annotations": annotations, "etag": secret.etag}
        mask = field_mask_pb2.FieldMask(paths=["annotations"])
        try:
            self.call(lambda: self.client.update_secret(secret=body, update_mask=mask))
        except (gexc.Conflict, gexc.Aborted, gexc.FailedPrecondition):
            return False  # another writer came first (or our own write, whose answer was lost): read again
        return True

    def take(self) -> None:
        """Take the lease, or raise RotationLocked. No secret (nothing deployed): nothing to lock, and the
        rotation stops at its first read with its own message."""
        from google.api_core import exceptions as gexc

        value = json.dumps(self.mine.__dict__, separators=(",", ":"))
        for _ in range(20):
            try:
                secret = self.call(lambda: self.client.get_secret(name=self.path))
            except gexc.NotFound:
                return
            current = secret.annotations.get(LEASE)
            holder = Holder.parse(current) if current else None
            if holder is not None and holder.token == self.mine.token:
                self.held = True
                return
            if holder is not None and not holder.expired(_now()) and not holder.gone():
                raise RotationLocked(
                    f"Another rotation of this deployment is running: {holder.describe()}. Nothing was changed.",
                    f"Wait for it to end, then run `{self.command}` again if still needed. If you are sure it "
                    f"is not running any more, remove its lease (`gcloud secrets update {self.path.rsplit('/', 1)[-1]}"
                    f" --remove-annotations={LEASE}`) and rerun.",
                )
            if current:
                self.log(f"taking over a stale rotation lease ({holder.describe() if holder else 'unreadable'})")
            if self._write(secret, value):
                self.held = True
                return
        raise MlflowGcpError(
            f"The rotation lease on {self.path} kept changing while it was being taken. Nothing was changed.",
            f"Run `{self.command}` again.",
        )

    def release(self) -> None:
        """Remove the lease if it is still ours; a failure only leaves it to expire."""
        if not self.held:
            return
        try:
            for _ in range(20):
                secret = self.call(lambda: self.client.get_secret(name=self.path))
                holder = Holder.parse(secret.annotations.get(LEASE, ""))
                if holder is None or holder.token != self.mine.token or self._write(secret, None):
                    self.held = False
                    return
        except Exception as error:  # the lease expires by itself: say so, do not fail a finished rotation
            self.log(
                f"the rotation lease could not be released ({type(error).__name__}); it expires at {self.mine.until}"
            )
