"""Step `secrets`: what the server reads from Secret Manager, and its accessor grants.

- `mlflow-env`: the server's settings as an env file (database host, names, bucket...; never a password). It
  follows the settings: a change adds a new version.
- `mlflow-credentials` (`login:password`) and `mlflow-flask-secret-key`: made once, never replaced by `up`.
- `mysql-credentials`: made by the database step; checked here (it exists, has a version of the form
  `user:password`), never written.
The secrets themselves and the service account's `roles/secretmanager.secretAccessor` on each (nothing wider)
are made earlier by the `secret-access` step, which does not wait for the database: grants take minutes to
apply.
"""

from __future__ import annotations

import secrets as token_source
from collections.abc import Callable, Iterator

from google.api_core import exceptions as gexc

from mlflow_gcp import service_spec
from mlflow_gcp.config import ENCRYPTED_ONLY, SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.engine.base import PENDING, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError, PrerequisiteMissingError
from mlflow_gcp.resources.iam import Policy, proto_policy_io
from mlflow_gcp.resources.password_secret import PasswordSecret
from mlflow_gcp.resources.secret import Secret, SecretState, new_password, split_credentials

ACCESSOR = "roles/secretmanager.secretAccessor"


class CredentialsSecret(PasswordSecret):
    """`login:password` for the MLflow admin. A malformed value is a clear error that names the secret and
    never shows the value; a login other than the settings' is a clear error too (the password is never
    replaced behind the user's back)."""

    def __init__(self, ctx: StepContext, secret_id: str, login: str) -> None:
        super().__init__(ctx, secret_id, lambda: f"{login}:{new_password()}", user=f"the MLflow admin user {login}")
        self.login = login

    def drift(self, current: SecretState) -> list[str]:
        if current.value is not None:
            login, _ = split_credentials(self.secret_id, current.value)
            if login != self.login:
                raise MlflowGcpError(
                    f"The secret {self.secret_id} is for the MLflow login {login}, but the settings ask for "
                    f"{self.login}.",
                    f"Pass --mlflow-username {login}, or add a version `{self.login}:PASSWORD` to the secret "
                    f"yourself (`gcloud secrets versions add {self.secret_id} --data-file=-`).",
                )
        return super().drift(current)


class EnvSecret(Secret):
    """The settings file. Its content is resolved before anything is written (a missing database output fails
    before the secret is created), and it never carries a placeholder for a value not known yet."""

    def _value(self) -> str:
        value = self.make_value()
        if PENDING in value:
            raise PrerequisiteMissingError(
                f"The secret {self.secret_id} needs the database's private IP, which is not known yet.",
                "Run `mlflow-gcp step database` first, or `mlflow-gcp up` to run every step.",
            )
        return value

    def create(self) -> None:
        self._value()
        super().create()

    def _add_version(self) -> None:
        self._value()
        super()._add_version()


class DatabaseCredentials(PasswordSecret):
    """`mysql-credentials`, made by the database step (which also reports an unfinished rotation): only
    checked here, with the same choice of version."""

    shown_by_owner = True  # `status` shows it once, on the database step's line

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, SECRET_MYSQL, self._refuse, user=f"the MySQL user {ctx.settings.db_user}")
        self._warned = True

    @property
    def label(self) -> str:
        return f"secret {self.secret_id} (made by the database step)"

    def _refuse(self) -> str:
        raise PrerequisiteMissingError(
            f"The secret {self.secret_id} has no version; the database step makes it with the root password.",
            "Run `mlflow-gcp step database` first (it adds the password the instance uses), or add a version of "
            f"the form user:password (`gcloud secrets versions add {self.secret_id} --data-file=-`).",
        )

    def drift(self, current: SecretState) -> list[str]:
        if current.value is None:
            return ["version"]
        split_credentials(self.secret_id, current.value)
        return []

    def create(self) -> None:
        self._refuse()

    def update(self, current: SecretState, fields: list[str]) -> None:
        self._refuse()

    def delete(self, current: SecretState) -> None:
        """The database step owns it and deletes it."""


def secret_policy_io(ctx: StepContext, path: str) -> tuple[Callable[[], Policy], Callable[[Policy], None]]:
    """The secret's IAM policy; while the secret does not exist (planning), an empty one."""
    get, set_ = proto_policy_io(ctx.clients.secrets(), path)

    def get_or_empty() -> Policy:
        try:
            return ctx.call("secretmanager", get)
        except gexc.GoogleAPICallError as e:
            if (ctx.dry_run and isinstance(e, gexc.NotFound)) or ctx.absent_in_plan(e):
                return {}
            raise

    def set_activating(policy: Policy) -> None:
        ctx.call("secretmanager", lambda: set_(policy))

    return get_or_empty, set_activating


def resources(ctx: StepContext) -> Iterator[Resource]:
    settings = ctx.settings

    def env_file() -> str:
        db_host = ctx.output("database.private_ip", "database")
        # The server uses TLS when the instance will accept nothing else (the encryption step switches the
        # instance only once a server with the CA runs).
        ca = (ctx.outputs.get("database.ca_cert_b64") or "") if settings.db_ssl_mode == ENCRYPTED_ONLY else ""
        return service_spec.render_env_file(service_spec.server_settings(settings, db_host, ca))

    secrets: list[Secret] = [
        EnvSecret(ctx, SECRET_ENV, env_file, follow=True),
        DatabaseCredentials(ctx),
        CredentialsSecret(ctx, SECRET_MLFLOW, settings.mlflow_username),
        Secret(ctx, SECRET_FLASK_KEY, lambda: token_source.token_hex(32)),
    ]
    yield from secrets
