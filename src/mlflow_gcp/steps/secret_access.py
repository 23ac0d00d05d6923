"""Step `secret-access`: the four secrets and the service account's accessor grant on each, made early.

Grants take minutes to apply (https://cloud.google.com/iam/docs/access-change-propagation), and Cloud Run
refuses a revision whose service account cannot read a secret it references yet. None of this needs the
database, so it runs as soon as the service account exists, and the grants propagate while Cloud SQL is being
created. The secrets are made without a version when their value is another step's: `mysql-credentials` gets
its password from the database step, `mlflow-env` its content from the secrets step once the database's IP is
known, and the passwords from the secrets step.
"""

from __future__ import annotations

from collections.abc import Iterator

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.engine.base import PENDING, Resource, StepContext
from mlflow_gcp.resources.iam import IamBinding
from mlflow_gcp.resources.secret import Secret, SecretState
from mlflow_gcp.steps.secrets import ACCESSOR, secret_policy_io

SECRET_IDS = (SECRET_ENV, SECRET_MYSQL, SECRET_MLFLOW, SECRET_FLASK_KEY)


class SecretShell(Secret):
    """The secret itself, whatever its versions: the step that owns its value adds them (and `status` shows it
    on that step's line)."""

    shown_by_owner = True

    def __init__(self, ctx: StepContext, secret_id: str) -> None:
        super().__init__(ctx, secret_id, self._not_here)

    def read(self) -> SecretState | None:
        """Whether the secret exists; its versions are the owner's to read (a disabled password version is
        reported there, with what to do, not as an unreadable secret here)."""
        from google.api_core import exceptions as gexc

        try:
            self._call(lambda: self._client.get_secret(name=self.path))
        except gexc.NotFound:
            return None
        return SecretState(self.path, None)

    @staticmethod
    def _not_here() -> str:
        raise AssertionError("a secret shell never writes a version")

    def drift(self, current: SecretState) -> list[str]:
        return []

    def create(self) -> None:
        self._create_secret()

    def outputs(self, current: SecretState) -> dict[str, str]:
        return {}  # the version in use is the owning step's to say


def resources(ctx: StepContext) -> Iterator[Resource]:
    shells = [SecretShell(ctx, secret_id) for secret_id in SECRET_IDS]
    yield from shells
    member = ctx.output("service_account.member", "service-account")
    if member == PENDING:  # planning before the account exists: its name is known all the same
        member = f"serviceAccount:{ctx.settings.service_account_email}"
    for shell in shells:
        get, set_ = secret_policy_io(ctx, shell.path)
        yield IamBinding(ctx, f"secret {shell.secret_id}", ACCESSOR, member, get, set_)
