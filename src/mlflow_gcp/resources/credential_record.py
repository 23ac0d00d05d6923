"""Which version of a password secret its user has, recorded on the secret itself.

`mysql-credentials` and `mlflow-credentials` can hold several versions (a rotation adds one), but only one of
them is the password the database has (the Cloud SQL user; for MLflow, the admin user the server aligned at
its start). `latest` says nothing about that, so the tool records it in two annotations it owns on the secret
(annotations are free-form metadata of a secret, changed with projects.secrets.patch; see
https://cloud.google.com/secret-manager/docs/creating-and-managing-annotations):

- `mlflow-gcp-applied-version`: the version the user was last set to;
- `mlflow-gcp-rotating-to`: a version being applied (set before the password changes, cleared after): while
  it is there, the user has either password, and the next run puts one of them in place for sure.

Why on the secret, not on the Cloud SQL instance: it is read with the versions (no extra API), it is the same
for both secrets (MLflow's admin user has no Google resource), and changing it is one quick call, where a
label on the instance is a Cloud SQL operation that waits behind backups and maintenance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.errors import MlflowGcpError

APPLIED = "mlflow-gcp-applied-version"
ROTATING = "mlflow-gcp-rotating-to"
ENABLED, DISABLED, DESTROYED = "ENABLED", "DISABLED", "DESTROYED"
_KEEP: Any = object()

Call = Callable[[Callable[[], Any]], Any]


@dataclass(frozen=True)
class PasswordVersions:
    """The versions of a password secret (number → state) and its record."""

    secret_id: str
    applied: str | None
    rotating: str | None
    states: dict[str, str] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # number -> creation time (microseconds)
    labels: tuple[tuple[str, str], ...] = ()  # the secret's labels, read with the record
    # With no record and several enabled versions: the version the live service pins (see read_versions).
    in_use: str | None = None

    def state(self, number: str | None) -> str | None:
        return self.states.get(number) if number else None

    def usable(self, number: str | None) -> bool:
        return self.state(number) == ENABLED

    @property
    def newest(self) -> str | None:
        return max(self.states, key=int, default=None)

    @property
    def newest_enabled(self) -> str | None:
        return max((n for n, s in self.states.items() if s == ENABLED), key=int, default=None)

    @property
    def next_number(self) -> str:
        """Version numbers are never reused: the next one added gets this number."""
        return str(int(self.newest or 0) + 1)

    @property
    def target(self) -> str | None:
        """The version the service must use: the recorded one; else the one a run was applying (its
        predecessor is gone); else, with no record at all (made by hand, or by an older version of the tool),
        the one the live service pins, or the newest enabled one. None when none of those can be read."""
        if self.applied is not None:
            if self.usable(self.applied):
                return self.applied
            return self.rotating if self.usable(self.rotating) else None
        if self.rotating is not None:
            return self.rotating if self.usable(self.rotating) else None
        return self.in_use if self.usable(self.in_use) else self.newest_enabled

    @property
    def pending(self) -> bool:
        """The record does not yet say that the user has the target's password."""
        return self.rotating is not None or self.applied != self.target

    @property
    def unapplied(self) -> list[str]:
        """Enabled versions newer than the target: added by a rotation that did not finish."""
        target = int(self.target or 0)
        return sorted((n for n, s in self.states.items() if s == ENABLED and int(n) > target), key=int)

    def restorable(self) -> str | None:
        """When nothing is usable: the version the user has that is only disabled (enabling it restores it)."""
        wanted = self.applied or self.rotating or self.newest
        return wanted if self.state(wanted) == DISABLED else None

    def describe_loss(self) -> str:
        wanted = self.applied or self.rotating or self.newest
        if wanted is None:
            return "it has no version"
        return f"version {wanted} is {(self.state(wanted) or 'deleted').lower()}"

    def rotation_note(self) -> str:
        """What status shows of a rotation in progress or left unfinished ('' when there is none)."""
        if self.rotating is not None and self.rotating != self.target:
            return f"rotation to version {self.rotating} unfinished"
        if self.unapplied:
            return f"version {', '.join(self.unapplied)} added but not applied (rotation unfinished)"
        return ""


def secret_path(project: str, secret_id: str) -> str:
    return f"projects/{project}/secrets/{secret_id}"


def read_versions(
    client: Any, project: str, secret_id: str, call: Call, in_use: Callable[[], str | None] | None = None
) -> PasswordVersions | None:
    """The record and the versions' states; None when the secret does not exist.

    `in_use` reads the version the live service pins. It is asked only when there is no record and several
    versions are enabled: a deployment made by hand, or by an older version of the tool after a rotation that
    failed, where the newest version may be one the user never got."""
    from google.api_core import exceptions as gexc

    path = secret_path(project, secret_id)
    try:
        secret = call(lambda: client.get_secret(name=path))
    except gexc.NotFound:
        return None
    annotations = dict(secret.annotations)
    versions = call(lambda: list(client.list_secret_versions(parent=path)))
    # Listing is eventually consistent: right after an add (a rotation) it can leave the new version out, which
    # would read as the user's password being deleted. A version read by its number is up to date
    # (https://cloud.google.com/secret-manager/docs/reference/consistency): the ones the record names are read so.
    listed = {v.name.rsplit("/", 1)[-1] for v in versions}
    for number in sorted({annotations.get(APPLIED), annotations.get(ROTATING)} - listed - {None}):
        if number.isdigit():
            try:
                versions.append(call(lambda number=number: client.get_secret_version(name=f"{path}/versions/{number}")))
            except gexc.NotFound:
                pass
    states = {v.name.rsplit("/", 1)[-1]: v.state.name for v in versions}
    # To the microsecond: a secret deleted and made again starts at version 1 again, at another time.
    created = {
        v.name.rsplit("/", 1)[-1]: int(v.create_time.timestamp() * 1_000_000) if v.create_time else 0 for v in versions
    }
    labels = tuple(sorted(secret.labels.items()))
    applied, rotating = annotations.get(APPLIED), annotations.get(ROTATING)
    pinned = None
    if in_use is not None and applied is None and rotating is None and list(states.values()).count(ENABLED) > 1:
        pinned = in_use()
    return PasswordVersions(secret_id, applied, rotating, states, created, labels, pinned)


def write_record(
    client: Any, project: str, secret_id: str, call: Call, *, applied: Any = _KEEP, rotating: Any = _KEEP
) -> None:
    """Set (a version number) or clear (None) the applied and rotating annotations, keeping the others."""
    from google.api_core import exceptions as gexc
    from google.protobuf import field_mask_pb2

    from mlflow_gcp.gcp import retry

    path = secret_path(project, secret_id)

    def once() -> None:
        secret = call(lambda: client.get_secret(name=path))
        annotations = dict(secret.annotations)
        for key, value in ((APPLIED, applied), (ROTATING, rotating)):
            if value is _KEEP:
                continue
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = str(value)
        if annotations == dict(secret.annotations):
            return
        body = {"name": path, "annotations": annotations, "etag": secret.etag}
        call(lambda: client.update_secret(secret=body, update_mask=field_mask_pb2.FieldMask(paths=["annotations"])))

    # Another writer between the read and the write: the etag no longer matches (409 ABORTED); read again.
    retry.call(once, predicate=lambda e: isinstance(e, (gexc.Conflict, gexc.Aborted)), deadline=30.0)


def access(client: Any, project: str, secret_id: str, number: str, call: Call) -> str:
    response = call(lambda: client.access_secret_version(name=f"{secret_path(project, secret_id)}/versions/{number}"))
    from mlflow_gcp.resources.secret import decode_payload

    return decode_payload(secret_id, number, response.payload.data)


def lost_error(versions: PasswordVersions, user: str) -> MlflowGcpError:
    """A password version that can be restored (it is only disabled): say how, change nothing."""
    number = versions.restorable()
    return MlflowGcpError(
        f"Version {number} of the secret {versions.secret_id}, the password {user} has, is disabled, so it cannot "
        "be read. Nothing was changed.",
        f"Enable it again (`gcloud secrets versions enable {number} --secret {versions.secret_id}`) and rerun. "
        f"If it must not be used any more, destroy it (`gcloud secrets versions destroy {number} --secret "
        f"{versions.secret_id}`) and run `mlflow-gcp up`: it makes a new password and applies it.",
    )
