"""Step `service-account`: the identity the MLflow server runs as, with no project-wide role.

`run-mlflow@PROJECT.iam.gserviceaccount.com` gets `roles/iam.serviceAccountTokenCreator` on itself only: the
server signs GCS URLs through signBlob (Cloud Run has no private key). Every other grant is made on the
resource itself by the step that owns it (bucket, secrets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.resources.iam import IamBinding, Policy

T = TypeVar("T")

DISPLAY_NAME = "MLflow server (mlflow-gcp)"
DESCRIPTION = "Runs the MLflow tracking server on Cloud Run. Managed by mlflow-gcp."
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
IAM = "iam.googleapis.com"
# A service account just created can answer 404 for a while: to reads for a few seconds, and to
# getIamPolicy/setIamPolicy on it for longer (Terraform waits for several consecutive good reads:
# https://github.com/GoogleCloudPlatform/magic-modules/pull/10813).
VISIBLE_SECONDS = 180.0
SOURCE = "https://github.com/GoogleCloudPlatform/magic-modules/pull/10813"


def not_yet_usable(email: str) -> retry.Propagation:
    """A 404 from a service account this run has just created: IAM has not caught up yet."""
    return retry.Propagation(
        lambda exc: isinstance(exc, gexc.NotFound),
        VISIBLE_SECONDS,
        f"the new service account {email.split('@', 1)[0]} to be usable",
        SOURCE,
    )


class ServiceAccount(Resource):
    """A service account of the project: by default the one the server runs as (outputs `service_account.*`);
    the image step makes the build's own account with another id, names and output prefix."""

    kind = "service account"
    # A new account is not readable everywhere at once.
    appear_timeout = VISIBLE_SECONDS

    def __init__(
        self,
        ctx: StepContext,
        account_id: str | None = None,
        *,
        display_name: str = DISPLAY_NAME,
        description: str = DESCRIPTION,
        output_prefix: str = "service_account",
    ) -> None:
        self.account_id = account_id or ctx.settings.service_account
        self.email = f"{self.account_id}@{ctx.project}.iam.gserviceaccount.com"
        super().__init__(ctx, self.email)
        self.display_name, self.description, self.output_prefix = display_name, description, output_prefix
        self.path = f"projects/{ctx.project}/serviceAccounts/{self.email}"

    def _accounts(self):
        # Discovery clients are per thread: ask the factory each time.
        return self.ctx.clients.iam().projects().serviceAccounts()

    def _call(self, fn: Callable[[], T], **kwargs: Any) -> T:
        return self.ctx.call(IAM, fn, **kwargs)

    def read(self) -> dict[str, Any] | None:
        try:
            return self._call(lambda: execute(self._accounts().get(name=self.path)))
        except gexc.NotFound:
            return None

    def drift(self, current: dict[str, Any]) -> list[str]:
        fields = []
        if current.get("displayName") != self.display_name:
            fields.append("displayName")
        if current.get("disabled"):
            fields.append("disabled")
        return fields

    def create(self) -> None:
        body = {
            "accountId": self.account_id,
            "serviceAccount": {"displayName": self.display_name, "description": self.description},
        }
        # Marked as new before the create is sent: after a lost answer the engine meets "already exists" for an
        # account just as new. (An account that was there before never answers 404, so this costs it nothing.)
        self.ctx.created_now.add(self.email)
        # "Already exists" (an interrupted run, a retried create that had succeeded) is the engine's.
        self._call(lambda: execute(self._accounts().create(name=f"projects/{self.ctx.project}", body=body)))
        # IAM is eventually consistent: wait until the account can be read back.
        self._call(
            lambda: execute(self._accounts().get(name=self.path)), also=(not_yet_usable(self.email),)
        )

    def update(self, current: dict[str, Any], fields: list[str]) -> None:
        if "disabled" in fields:
            self._call(lambda: execute(self._accounts().enable(name=self.path, body={})))
        if "displayName" in fields:
            body = {"serviceAccount": {"displayName": self.display_name}, "updateMask": "displayName"}
            self._call(lambda: execute(self._accounts().patch(name=self.path, body=body)))

    def outputs(self, current: dict[str, Any]) -> dict[str, str]:
        return {
            f"{self.output_prefix}.email": current["email"],
            f"{self.output_prefix}.member": f"serviceAccount:{current['email']}",
        }

    def details(self, current: dict[str, Any]) -> dict[str, str]:
        return {
            "email": current.get("email", ""),
            "display name": current.get("displayName", ""),
            "state": "disabled" if current.get("disabled") else "enabled",
        }

    def delete(self, current: dict[str, Any]) -> None:
        try:
            self._call(lambda: execute(self._accounts().delete(name=self.path)))
        except gexc.NotFound:
            pass  # already gone


def self_policy_io(ctx: StepContext, path: str, email: str):
    """Getter and setter of the service account's own IAM policy (POST :getIamPolicy / :setIamPolicy). While
    the account does not exist (planning), the getter gives an empty policy, so the binding reads as absent.
    Right after this run created the account, both may answer 404 for a while: that is waited out."""

    def accounts():
        return ctx.clients.iam().projects().serviceAccounts()

    def fresh() -> tuple[retry.Propagation, ...]:
        return (not_yet_usable(email),) if email in ctx.created_now else ()

    def get() -> Policy:
        try:
            return ctx.call(
                IAM,
                lambda: execute(accounts().getIamPolicy(resource=path, options_requestedPolicyVersion=3)),
                also=fresh(),
            )
        except gexc.GoogleAPICallError as e:
            if (ctx.dry_run and isinstance(e, gexc.NotFound)) or ctx.absent_in_plan(e):
                return {}
            raise

    def set_(policy: Policy) -> None:
        ctx.call(
            IAM, lambda: execute(accounts().setIamPolicy(resource=path, body={"policy": policy})), also=fresh()
        )

    return get, set_


def resources(ctx: StepContext) -> Iterator[Resource]:
    account = ServiceAccount(ctx)
    yield account
    get, set_ = self_policy_io(ctx, account.path, account.email)
    member = f"serviceAccount:{account.email}"
    yield IamBinding(ctx, f"service account {account.email}", TOKEN_CREATOR, member, get, set_)
