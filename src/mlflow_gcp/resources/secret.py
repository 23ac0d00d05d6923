"""A Secret Manager secret whose latest version holds a value. A password version, once written, is never
replaced by `up`: a value is generated only when the secret has no version at all."""

from __future__ import annotations

import secrets as token_source
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, OrgPolicyError
from mlflow_gcp.gcp.errors import is_failed_precondition, org_policy_constraint
from mlflow_gcp.labels import deployment_labels, lacks_labels, with_labels

MANAGED_LABEL = {"managed-by": "mlflow-gcp"}
USER_MANAGED = "user-managed"
RESOURCE_LOCATIONS = "constraints/gcp.resourceLocations"


def new_password() -> str:
    return token_source.token_urlsafe(24)


def version_payload(value: str) -> dict:
    """A version's payload with its CRC32C: Secret Manager refuses data that does not match it, so a payload
    damaged on the way is never stored."""
    import google_crc32c

    data = value.encode("utf-8")
    return {"data": data, "data_crc32c": google_crc32c.value(data)}


def add_version_once(client, path: str, value: str, call: Callable[..., Any] | None = None) -> str:
    """Add a version holding `value` to the secret `path` and return the version's name, exactly once.

    addVersion is not idempotent: resent after a lost answer it would add the same value again. So after an
    ambiguous failure the versions are read back (`added_version`), and one holding `value` is taken as the one
    we added. `call` is the retrying caller (retry.call by default)."""
    from mlflow_gcp.gcp import retry

    payload = version_payload(value)
    return (call or retry.call)(
        lambda: client.add_secret_version(parent=path, payload=payload).name,
        applied=lambda: added_version(client, path, payload),
    )


def added_version(client, path: str, payload: dict) -> str | None:
    """The name of an enabled version holding `payload` at or above the newest listed one, else None.

    Listing versions is eventually consistent: right after an add the list may not show it yet. Reading a version
    by its number is strongly consistent (https://cloud.google.com/secret-manager/docs/reference/consistency),
    and numbers go up by one from the newest: so from the newest the list shows, each next number is read until
    one does not exist."""
    newest = next(iter(client.list_secret_versions(request={"parent": path, "page_size": 1})), None)
    number = int(newest.name.rsplit("/", 1)[-1]) if newest is not None else 1
    while True:
        name = f"{path}/versions/{number}"
        try:
            if client.access_secret_version(name=name).payload.data == payload["data"]:
                return name
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as e:
            if not is_failed_precondition(e):  # disabled or destroyed: not the one just added
                raise
        number += 1


def set_version_state(client, name: str, state: str) -> None:
    """Disable or destroy the secret version `name`. Destroyed is final: destroying again after a lost answer
    would be refused (400 FAILED_PRECONDITION), so after an ambiguous failure the version's state is read back."""
    from mlflow_gcp.gcp import retry

    send = {"DISABLED": client.disable_secret_version, "DESTROYED": client.destroy_secret_version}[state]

    def in_state() -> bool | None:
        return True if client.get_secret_version(name=name).state.name == state else None

    retry.call(lambda: send(name=name), applied=in_state)


PASSWORD_SECRETS = ("mysql-credentials", "mlflow-credentials")


def decode_payload(secret_id: str, version: str, data: bytes) -> str:
    """A version's payload as text. Anything but UTF-8 (Notepad's "Unicode" is UTF-16, with a byte-order mark or
    not) is a clear error naming the secret and the version; a UTF-8 byte-order mark is dropped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:  # UTF-16 of ASCII text is valid UTF-8, with a NUL every other byte
        return text
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) > 1 and b"\x00" in data[:4])
    what = "it looks like UTF-16, as Notepad saves \"Unicode\"" if utf16 else "it holds bytes that are not text"
    number = version.rsplit("/", 1)[-1]
    if secret_id in PASSWORD_SECRETS:
        hint = (
            f"If version {number} was added by hand, destroy it (`gcloud secrets versions destroy {number} "
            f"--secret {secret_id}`) and rerun; if the server used that version, `mlflow-gcp up` then makes a new "
            "password and applies it. A password of your choice goes in as UTF-8 text `login:password` (`printf "
            f"'%s' 'LOGIN:PASSWORD' | gcloud secrets versions add {secret_id} --data-file=-`)."
        )
    else:
        hint = (
            f"Add its content again as a new version from a file saved as UTF-8 (`gcloud secrets versions add "
            f"{secret_id} --data-file=FILE`; in Notepad: Save As, Encoding UTF-8), then rerun."
        )
    raise MlflowGcpError(
        f"Version {number} of the secret {secret_id} is not UTF-8 text ({what}), so it cannot be read. Nothing was "
        "changed.",
        hint,
    )


def split_credentials(secret_id: str, value: str) -> tuple[str, str]:
    """`login:password` → (login, password); a malformed value is a clear error, never shown."""
    login, sep, password = value.strip().partition(":")
    if not sep or not login or not password:
        raise MlflowGcpError(
            f"The secret {secret_id} does not have the form login:password.",
            f"Add a version in that form (`gcloud secrets versions add {secret_id} --data-file=-`), then retry.",
        )
    return login, password


@dataclass(frozen=True)
class SecretState:
    name: str
    value: str | None  # None: the secret exists but has no version
    version: str | None = None  # number of the latest version
    labels: tuple[tuple[str, str], ...] = ()


class Secret(Resource):
    """A secret whose value is made once (passwords) or kept in line with the settings (`follow=True`)."""

    kind = "secret"
    # `down` keeps secrets unless --delete-data: they hold the passwords of the data.
    holds_data = True

    def __init__(self, ctx: StepContext, secret_id: str, make_value: Callable[[], str], *, follow: bool = False):
        super().__init__(ctx, secret_id)
        self.secret_id = secret_id
        self.make_value = make_value
        self.follow = follow
        self.path = f"projects/{ctx.project}/secrets/{secret_id}"
        self._client = ctx.clients.secrets()

    def _call(self, fn, **kwargs):
        return self.ctx.call("secretmanager", fn, **kwargs)

    def _access(self, version: str) -> tuple[str, str]:
        response = self._call(lambda: self._client.access_secret_version(name=f"{self.path}/versions/{version}"))
        return decode_payload(self.secret_id, response.name, response.payload.data), response.name.rsplit("/", 1)[-1]

    @property
    def _version_key(self) -> str:
        return f"secret_version.{self.secret_id}"

    def _labels(self) -> tuple[tuple[str, str], ...] | None:
        """The secret's labels; None when the secret does not exist."""
        try:
            secret = self._call(lambda: self._client.get_secret(name=self.path))
        except gexc.NotFound:
            return None
        return tuple(sorted(secret.labels.items()))

    def read(self) -> SecretState | None:
        # `versions/latest` is eventually consistent, a version read by its number is not
        # (https://cloud.google.com/secret-manager/docs/reference/consistency): a version this run added or
        # read is read by its number when `latest` answers an older one, or none.
        labels = self._labels()
        if labels is None:
            return None
        known = self.ctx.outputs.get(self._version_key)
        try:
            value, version = self._access("latest")
            if known and int(version) < int(known):
                value, version = self._access(known)
        except gexc.NotFound:
            if not known:
                return SecretState(self.path, None, labels=labels)
            value, version = self._access(known)
        except gexc.GoogleAPICallError as e:
            from mlflow_gcp.gcp.errors import is_failed_precondition

            if not is_failed_precondition(e):
                raise
            raise MlflowGcpError(
                f"The latest version of the secret {self.secret_id} is disabled or destroyed.",
                f"Enable it again (`gcloud secrets versions enable VERSION --secret {self.secret_id}`) or add a "
                "new version yourself; the tool never replaces a password on its own.",
            ) from e
        self.ctx.secret_values[self.secret_id] = value
        return SecretState(self.path, value, version, labels)

    def drift(self, current: SecretState) -> list[str]:
        labels = dict(current.labels)
        fields = ["labels"] if lacks_labels(labels, self.ctx.settings) else []
        if current.value is None:
            return ["version", *fields]
        if self.follow and current.value != self.make_value():
            return ["value", *fields]
        return fields

    def _create_secret(self) -> None:
        """The secret without a version. Replication follows the setting `secret_replication`. "Already exists"
        (a lost answer, an interrupted run, another step) is the engine's: it reads the secret, and a secret with
        no version gets one through update()."""
        regional = self.ctx.settings.secret_replication == USER_MANAGED
        replication = {"user_managed": {"replicas": [{"location": self.ctx.region}]}} if regional else {"automatic": {}}
        try:
            self._call(
                lambda: self._client.create_secret(
                    parent=f"projects/{self.ctx.project}",
                    secret_id=self.secret_id,
                    secret={"replication": replication, "labels": deployment_labels(self.ctx.settings)},
                )
            )
        except gexc.GoogleAPICallError as e:
            if not regional and org_policy_constraint(e) == RESOURCE_LOCATIONS:
                raise OrgPolicyError(
                    f"The organization policy {RESOURCE_LOCATIONS} refuses the secret {self.secret_id} with "
                    "automatic replication, which stores it in locations Google chooses (`global`).",
                    f"Keep the secrets in {self.ctx.region} with user-managed replication: pass "
                    f"--secret-replication {USER_MANAGED}, or set MLFLOW_GCP_SECRET_REPLICATION={USER_MANAGED} "
                    "(in the environment or .env), then run the same command again.",
                ) from e
            raise

    def create(self) -> None:
        self._create_secret()
        self._add_version()

    def update(self, current: SecretState, fields: list[str]) -> None:
        if "labels" in fields:  # the live labels kept, ours put back; never a new version for this
            labels = with_labels(dict(current.labels), self.ctx.settings)
            self._call(
                lambda: self._client.update_secret(
                    secret={"name": self.path, "labels": labels}, update_mask={"paths": ["labels"]}
                )
            )
        if any(f != "labels" for f in fields):
            self._add_version()

    def _add_version(self) -> None:
        value = self.make_value()
        name = add_version_once(self._client, self.path, value, self._call)
        # The number Google gave this version: what the outputs and the service's pins use, not `latest`.
        self.ctx.outputs.set(self._version_key, name.rsplit("/", 1)[-1])
        self.ctx.secret_values[self.secret_id] = value

    def outputs(self, current: SecretState) -> dict[str, str]:
        """The version number, so the service pins it: a new version then rolls out a new revision, and a
        revision whose rollout failed keeps using the version it was started with."""
        return {f"secret_version.{self.secret_id}": current.version} if current.version else {}

    def details(self, current: SecretState) -> dict[str, str]:
        return {"version": current.version or "none"}

    def delete(self, current: SecretState) -> None:
        try:
            self._call(lambda: self._client.delete_secret(name=self.path))
        except gexc.NotFound:
            pass
