"""A password secret (`mysql-credentials`, `mlflow-credentials`): the version in use is the one its user has.

The service pins the recorded version (see credential_record), never blindly `latest`. A version added by a
rotation that did not finish is left alone and reported; a password that is lost (destroyed, deleted, no
version) is replaced by a new one whose version is marked "rotating" until its user has it (the database
step sets the MySQL user's password, the deploy step rolls out the MLflow server, which aligns its admin);
a disabled one stops the run with how to enable it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlflow_gcp.engine.base import StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.resources import credential_record as record
from mlflow_gcp.resources.credential_record import PasswordVersions
from mlflow_gcp.resources.live_service import pinned_number, read_service
from mlflow_gcp.resources.secret import Secret, SecretState, add_version_once


@dataclass(frozen=True)
class PasswordState(SecretState):
    versions: PasswordVersions | None = None


class PasswordSecret(Secret):
    def __init__(self, ctx: StepContext, secret_id: str, make_value: Callable[[], str], *, user: str) -> None:
        super().__init__(ctx, secret_id, make_value)
        self.user = user  # who has the password, for messages: "the MySQL user root"
        self.versions: PasswordVersions | None = None
        self._warned = False
        self.existed = False  # read found versions: a password made now replaces a lost one

    def _reload(self) -> PasswordVersions | None:
        self.versions = record.read_versions(
            self._client, self.ctx.project, self.secret_id, self._call, in_use=self._pinned_by_service
        )
        return self.versions

    def _pinned_by_service(self) -> str | None:
        return pinned_number(read_service(self.ctx.settings, self.ctx.clients), self.secret_id)

    def read(self) -> PasswordState | None:
        versions = self._reload()
        if versions is None:
            return None
        self.existed = bool(versions.states)
        target = versions.target
        if target is None:
            if versions.restorable() and not self.ctx.dry_run:
                raise record.lost_error(versions, self.user)
            return PasswordState(self.path, None, None, versions.labels, versions=versions)
        value = record.access(self._client, self.ctx.project, self.secret_id, target, self._call)
        self.ctx.secret_values[self.secret_id] = value
        if not self.ctx.dry_run and versions.unapplied and not self._warned:
            self._warned = True
            self.ctx.log(self.unfinished_warning(versions))
        return PasswordState(self.path, value, target, versions.labels, versions=versions)

    def unfinished_warning(self, versions: PasswordVersions) -> str:
        newer = ", ".join(versions.unapplied)
        return (
            f"{self.secret_id}: version {newer} was added by a rotation that did not finish; {self.user} has the "
            f"password of version {versions.target}, so the service keeps version {versions.target}. Run "
            f"`mlflow-gcp credentials rotate` to finish the rotation, or destroy version {newer} to undo it "
            f"(`gcloud secrets versions destroy {newer} --secret {self.secret_id}`)."
        )

    def drift(self, current: PasswordState) -> list[str]:
        versions = current.versions
        labels = [f for f in super().drift(current) if f == "labels"]
        if current.value is None:
            if self.ctx.dry_run and versions is not None:
                return [versions.describe_loss(), *labels]
            return ["version", *labels]
        if self.ctx.dry_run and versions is not None and versions.rotation_note():
            return [versions.rotation_note(), *labels]
        return labels

    def outputs(self, current: PasswordState) -> dict[str, str]:
        """The version to pin; and, when it is a new password its user does not have yet, a rollout mark
        (the deploy step then starts a new revision even if the number is unchanged, e.g. a re-made secret)."""
        out = super().outputs(current)
        versions = current.versions
        if versions is not None and current.version and versions.rotating == current.version:
            out[f"secret_rollout.{self.secret_id}"] = f"v{current.version}-{versions.created.get(current.version, 0)}"
        return out

    def details(self, current: PasswordState) -> dict[str, str]:
        versions = current.versions
        if current.version is None:
            return {"version": versions.describe_loss() if versions else "none"}
        out = {"version": current.version}
        if versions is not None and versions.rotation_note():
            out["rotation"] = versions.rotation_note()
        return out

    # -- writes: a new password is marked "rotating" before it exists, so no run can take it for applied ----
    def create(self) -> None:
        self._create_secret()
        versions = self._reload()
        if versions is None or versions.target is None:
            self._add_version()

    def update(self, current: SecretState, fields: list[str]) -> None:
        super().update(current, [f for f in fields if f == "labels"])
        if any(f != "labels" for f in fields):
            self._add_version()

    def _add_version(self) -> None:
        versions = self.versions or self._reload()
        lost = versions.describe_loss() if versions is not None else "it was deleted"
        expected = versions.next_number if versions is not None else "1"
        record.write_record(self._client, self.ctx.project, self.secret_id, self._call, rotating=expected)
        value = self.make_value()
        number = add_version_once(self._client, self.path, value, call=self._call).rsplit("/", 1)[-1]
        if number != expected:
            record.write_record(self._client, self.ctx.project, self.secret_id, self._call, rotating=number)
        self.ctx.secret_values[self.secret_id] = value
        why = f"the password {self.user} had cannot be read ({lost}); " if self.existed else ""
        self.ctx.log(
            f"{self.secret_id}: {why}made a NEW password (version {number}), applied to {self.user} in this run"
        )

    def mark_applied(self, number: str) -> None:
        """The user has the password of `number` now: record it, and clear a rotation marker."""
        record.write_record(self._client, self.ctx.project, self.secret_id, self._call, applied=number, rotating=None)
        self._reload()


def require_target(secret: PasswordSecret) -> tuple[str, str]:
    """(version, value) the service must use, as read by the secret's last read()."""
    versions = secret.versions
    value = secret.ctx.secret_values.get(secret.secret_id)
    if versions is None or versions.target is None or value is None:
        raise MlflowGcpError(f"The secret {secret.secret_id} has no readable password.")
    return versions.target, value
