"""Step `deploy`: the Cloud Run v2 service that runs the MLflow server.

The desired service is exactly `service_spec.build_service(...)`. A first deploy is two revisions: Cloud Run
gives a service its URLs only once it exists, and the server must know them (MLflow's host-header and CORS
protection allow exactly its own hosts), so the service is created, then updated with
MLFLOW_GCP_SERVICE_URLS. Later runs compare only the fields `build_service` sets; labels, annotations and
container fields set by others are kept.

Public access: `invokerIamDisabled` (MLflow checks the login itself). Where it is refused (organization
policy constraints/run.managed.requireInvokerIam, or an API that does not know the field), the service falls
back to an `allUsers` roles/run.invoker binding; a domain-restricted-sharing policy refusing `allUsers` is an
OrgPolicyError with a hint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.config import SECRET_MLFLOW
from mlflow_gcp.engine.base import Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import OperationFailedError, OrgPolicyError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.operations import wait, wait_gapic
from mlflow_gcp.resources import credential_record
from mlflow_gcp.resources.iam import IamBinding, Policy, has_member, proto_policy_io
from mlflow_gcp.resources.live_service import pinned_versions, service_ready, urls_told_to_server
from mlflow_gcp.service_spec import SECRET_ENV_VARS, ServiceInputs, build_service, own_urls
from mlflow_gcp.steps import egress
from mlflow_gcp.steps.connector import RetiredConnector
from mlflow_gcp.steps.mlflow_version import (
    KEEP_RUNNING_IMAGE,
    VERSION_ANNOTATION,
    annotation,
    image_version,
    in_maintenance,
)
from mlflow_gcp.steps.public_access import (
    DOMAIN_RESTRICTED_SHARING,
    INVOKER_IAM_FIELD,
    INVOKER_ROLE,
    PUBLIC_MEMBER,
    is_invoker_iam_disabled_refused,
    refuses_public_members,
)
from mlflow_gcp.steps.schema_record import SERVING_OUTPUT, SchemaRecord
from mlflow_gcp.steps.service_json import diff, from_json_dict, merged, to_json_dict
from mlflow_gcp.steps.upgrade import MigrationJobResource, MlflowUpgrade

DEPLOY_TIMEOUT = 900.0
# Fields of the service itself; every other owned field is in the revision template, and Cloud Run rolls out a
# new revision for it, the current one serving until the new one is ready
# (https://cloud.google.com/run/docs/managing/revisions).
SERVICE_LEVEL_FIELDS = ("labels", "ingress", INVOKER_IAM_FIELD, "ready", "record")
NEW_REVISION = Effect(Impact.REVISION, "new revision: the current one serves until it is ready")
ROLLOUT_LABEL = "mlflow-gcp-new-password"
# Set by `credentials rotate` around its rollouts: it keeps the record of the admin password itself.
ROTATION_ACTIVE = "rotation.active"


class CloudRunService(Resource):
    kind = "Cloud Run service"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.service)
        self.parent = f"projects/{ctx.project}/locations/{ctx.region}"
        self.path = f"{self.parent}/services/{self.name}"
        self.image = ctx.output("image.uri", "image")
        self.direct = egress.is_direct(ctx)
        if self.direct:
            network = ctx.output("egress.network", "connector")
            self.network_interface: tuple[str, str] | None = (network, ctx.output("egress.subnetwork", "connector"))
            self.connector = ""
        else:
            self.network_interface = None
            self.connector = ctx.output("connector.id", "connector")
        # The connector the live service used when this run first read it (a switch to direct retires it).
        self.connector_seen: str | None = None
        # Pinned versions: a new secret version (a rotation) rolls out a new revision; an old revision keeps the
        # versions it started with if a rollout fails.
        self.secret_versions = {
            secret: version
            for secret in SECRET_ENV_VARS.values()
            if (version := ctx.outputs.get(f"secret_version.{secret}")) is not None
        }
        # A new password its user does not have yet (secret_rollout.*): a new revision brings it in even when
        # the pinned number is unchanged (a secret deleted and made again starts at version 1 again).
        self.rollouts = {
            secret: mark
            for secret in SECRET_ENV_VARS.values()
            if (mark := ctx.outputs.get(f"secret_rollout.{secret}")) is not None
        }
        self._admin = (None, "")  # (versions of mlflow-credentials, version the ready service runs with)
        # The service account step made it; the service spec names it from the settings.
        ctx.output("service_account.email", "service-account")
        self._client = ctx.clients.run_services()
        self._call = functools.partial(ctx.call, "run")
        # A revision is refused while a secret grant made minutes ago has not applied yet: waited out (7 min).
        self._send = functools.partial(
            ctx.call, "run", predicate=retry.any_of(ctx.retry_predicate("run"), retry.is_secret_grant_not_yet_applied)
        )
        # True when public access goes through an allUsers invoker binding instead of invokerIamDisabled.
        self.use_invoker_binding = False
        # A rotation keeps the live image (its image.uri output): the version recorded on the service stays as it is.
        self.mlflow_version = None if ctx.outputs.get(KEEP_RUNNING_IMAGE) else image_version(ctx.settings)

    # -- desired state -------------------------------------------------------------------------------------
    @functools.cached_property
    def project_number(self) -> str:
        number = self.ctx.outputs.get("network.project_number")
        if number:
            return number
        from mlflow_gcp.gcp.errors import execute

        project = retry.call(
            lambda: execute(self.ctx.clients.resource_manager().projects().get(projectId=self.ctx.project)),
            predicate=self.ctx.retry_predicate("cloudresourcemanager"),
        )
        return str(project["projectNumber"])

    def service_urls(self, current: Any | None) -> tuple[str, ...]:
        """The deterministic URL and the extra hosts. A live list that already holds them all (a deployment whose
        server was told both of Cloud Run's URLs) is kept: changing it would roll out a revision for nothing."""
        wanted = own_urls(self.ctx.settings, self.project_number)
        live = urls_told_to_server(current) if current is not None else ()
        return live if live and set(wanted) <= set(live) else wanted

    def desired(self, current: Any | None) -> dict[str, Any]:
        urls = self.service_urls(current)
        versions = dict(self.secret_versions)
        if self.ctx.dry_run and current is not None:
            # A secret that could not be read (missing, disabled) is reported on its own line; its version here is
            # unknown, not a difference of the service.
            for secret, version in pinned_versions(current).items():
                versions.setdefault(secret, version)
        service = build_service(
            self.ctx.settings, ServiceInputs(self.image, self.connector, urls, versions, self.network_interface)
        )
        # One way into the VPC at a time: the other is cleared in the merged body.
        if self.direct:
            service["template"]["vpcAccess"]["connector"] = ""
        else:
            service["template"]["vpcAccess"]["networkInterfaces"] = []
        if self.use_invoker_binding:
            service.pop(INVOKER_IAM_FIELD, None)
        if self.mlflow_version:
            # What the server runs, read by the next `up` to know whether the image it deploys is an upgrade.
            service.setdefault("annotations", {})[VERSION_ANNOTATION] = self.mlflow_version
            service["template"].setdefault("annotations", {})[VERSION_ANNOTATION] = self.mlflow_version
        if self.rollouts:
            labels = service["template"].setdefault("labels", {})
            labels.update({ROLLOUT_LABEL: "-".join(mark for _, mark in sorted(self.rollouts.items()))})
        return service

    # -- Resource --------------------------------------------------------------------------------------------
    def read(self):
        try:
            service = self._call(lambda: self._client.get_service(name=self.path))
        except gexc.NotFound:
            return None
        if service.reconciling:
            self.ctx.log(f"waiting for the rollout of {self.label} in progress")
            service = wait(
                lambda: self._client.get_service(name=self.path),
                is_done=lambda s: not s.reconciling,
                error_of=lambda s: None,
                what=f"The rollout of {self.label}",
                timeout=DEPLOY_TIMEOUT,
                first=service,
            )
        if self.connector_seen is None:
            self.connector_seen = service.template.vpc_access.connector
        return service

    def drift(self, current) -> list[str]:
        owned = self.desired(current)
        want = to_json_dict(from_json_dict(owned), defaults=True)
        live = to_json_dict(current, defaults=True)
        fields = list(dict.fromkeys(diff(owned, want, live)))
        if INVOKER_IAM_FIELD in fields and self._public_through_binding():
            fields.remove(INVOKER_IAM_FIELD)
        if current.terminal_condition.state.name != "CONDITION_SUCCEEDED":
            fields.append("ready")
        if not fields and self._admin_record_stale(current):
            fields.append("record")
        return fields

    def effect(self, field: str, current) -> Effect:
        if field.split(".")[0] in SERVICE_LEVEL_FIELDS:
            return super().effect(field, current)
        return NEW_REVISION

    def observed(self, current) -> dict[str, Any]:
        values: dict[str, Any] = {
            "min_instances": current.template.scaling.min_instance_count,
            "max_instances": current.template.scaling.max_instance_count,
        }
        if current.template.containers:
            limits = current.template.containers[0].resources.limits
            values.update({k: limits[k] for k in ("cpu", "memory") if limits.get(k)})
        return values

    # -- the record of the admin password ----------------------------------------------------------------------
    def _admin_record_stale(self, service) -> bool:
        """The server aligns its admin user with the `mlflow-credentials` version it runs with, so once the
        service is ready on a version, that version is the applied one (credential_record). `up` only: a
        rotation keeps the record itself, and planning reads nothing more."""
        if self.ctx.dry_run or self.ctx.outputs.get(ROTATION_ACTIVE) or not service_ready(service):
            return False
        pinned = pinned_versions(service).get(SECRET_MLFLOW, "")
        if not pinned.isdigit():
            return False
        versions = credential_record.read_versions(
            self.ctx.clients.secrets(), self.ctx.project, SECRET_MLFLOW, self._secret_call
        )
        self._admin = (versions, pinned)
        return versions is not None and (versions.applied != pinned or versions.rotating is not None)

    def _secret_call(self, fn):
        return self.ctx.call("secretmanager", fn)

    def _record_admin(self, service) -> None:
        if not self._admin_record_stale(service):
            return
        versions, pinned = self._admin
        credential_record.write_record(
            self.ctx.clients.secrets(),
            self.ctx.project,
            SECRET_MLFLOW,
            self._secret_call,
            applied=pinned,
            rotating=None,
        )
        if versions.rotating == pinned and versions.applied not in (None, pinned):
            self.ctx.log(
                f"the MLflow admin user now has a NEW password (version {pinned} of {SECRET_MLFLOW}): members get "
                'the new login with `eval "$(mlflow-gcp credentials || echo false)"`'
            )

    def _public_through_binding(self) -> bool:
        """An earlier run fell back to an allUsers invoker binding: public access is in place."""
        get, _ = proto_policy_io(self._client, self.path)
        if has_member(self._call(get), INVOKER_ROLE, PUBLIC_MEMBER):
            self.use_invoker_binding = True
        return self.use_invoker_binding

    def create(self) -> None:
        self._deploy(
            "Creating",
            lambda body: self._client.create_service(
                request={"parent": self.parent, "service_id": self.name, "service": body}
            ),
            self.desired(None),
        )
        current = self.read()
        if current is None:
            return
        # Normally nothing: the server was told its URLs before the service existed.
        fields = self.drift(current)
        if fields:
            self.ctx.log(f"updating {self.label}: {', '.join(fields)}")
            self.update(current, fields)

    def update(self, current, fields: list[str]) -> None:
        if fields == ["record"]:
            self._record_admin(current)
            return
        self._deploy(
            "Updating",
            lambda body: self._client.update_service(request={"service": body}),
            merged(to_json_dict(current), self.desired(current)),
        )

    def _deploy(self, verb: str, send: Callable[[Any], Any], body: dict[str, Any]) -> None:
        what = f"{verb} {self.label}"
        # An update carries the etag it read: resent after a lost answer it would meet 409, so read back first.
        applied = self._already_rolled_out if verb == "Updating" else None
        try:
            operation = self._send(lambda: send(from_json_dict(body)), applied=applied)
        except gexc.GoogleAPICallError as e:
            if not is_invoker_iam_disabled_refused(e) or INVOKER_IAM_FIELD not in body:
                raise
            self.ctx.log(
                f"{self.label}: invokerIamDisabled is refused ({e.message}); "
                f"granting {INVOKER_ROLE} to {PUBLIC_MEMBER} instead"
            )
            self.use_invoker_binding = True
            body = {k: v for k, v in body.items() if k != INVOKER_IAM_FIELD}
            operation = self._send(lambda: send(from_json_dict(body)))
        # An operation, or the service itself when the read-back found the update already applied.
        is_operation = hasattr(operation, "result")
        service = wait_gapic(operation, what=what, timeout=DEPLOY_TIMEOUT) if is_operation else operation
        check_ready(service, what)
        self._record_admin(service)

    def roll_out(self, body: dict[str, Any], what: str, applied: Callable[[], Any]) -> Any:
        """Update the service to `body` (the upgrade's revisions) and wait until its revision serves; `applied`
        reads back whether an update whose answer was lost had been applied."""
        return update_service(self._client, body, what, applied, send=self._send)

    def _already_rolled_out(self):
        """The service when it already is as the settings ask (the update was applied), else None."""
        current = self.read()
        return current if current is not None and not self.drift(current) else None

    def outputs(self, current) -> dict[str, str]:
        serving = "" if in_maintenance(current) else annotation(current, VERSION_ANNOTATION)
        return {"service.url": current.uri, "service.urls": ",".join(current.urls), SERVING_OUTPUT: serving}

    def details(self, current) -> dict[str, str]:
        container = current.template.containers[0] if current.template.containers else None
        return {
            "url": current.uri,
            "image": container.image if container else "",
            "revision": current.latest_ready_revision.rsplit("/", 1)[-1],
            "ready": current.terminal_condition.state.name.removeprefix("CONDITION_").lower(),
            "public": "invoker binding" if self.use_invoker_binding else str(current.invoker_iam_disabled).lower(),
        }

    def delete(self, current) -> None:
        try:
            operation = self._call(lambda: self._client.delete_service(name=self.path))
        except gexc.NotFound:
            return
        wait_gapic(operation, what=f"Deleting {self.label}", timeout=DEPLOY_TIMEOUT)


def update_service(client, body: dict[str, Any], what: str, applied: Callable[[], Any], *, send=retry.call) -> Any:
    """Update the service to `body`, wait until its revision serves, and return it; `applied` reads back whether an
    update whose answer was lost had been applied (then the service it returns is taken as the answer)."""
    operation = send(lambda: client.update_service(request={"service": from_json_dict(body)}), applied=applied)
    if hasattr(operation, "result"):  # else the service itself, found already updated
        operation = wait_gapic(operation, what=what, timeout=DEPLOY_TIMEOUT)
    check_ready(operation, what)
    return operation


def check_ready(service, what: str) -> None:
    """The service's latest revision serves; else Google's message (e.g. the container failed to start)."""
    condition = service.terminal_condition
    if condition.state.name != "CONDITION_SUCCEEDED":
        message = condition.message or f"the service is {condition.state.name}"
        raise OperationFailedError(
            f"{what} failed: {message}",
            "See the revision's logs in the Cloud console (Cloud Run > the service > Logs) for why it did not start.",
        )


def public_invoker_binding(ctx: StepContext, service: CloudRunService) -> IamBinding:
    get, set_ = proto_policy_io(service._client, service.path)

    def checked_set(policy: Policy) -> None:
        try:
            set_(policy)
        except gexc.GoogleAPICallError as e:
            if refuses_public_members(e):
                raise OrgPolicyError(
                    f"The organization policy {DOMAIN_RESTRICTED_SHARING} (domain restricted sharing) refuses "
                    f"{PUBLIC_MEMBER} as invoker of {service.label}, and invokerIamDisabled is refused too, so the "
                    "server cannot be made public.",
                    "Ask your organization admin to exempt this project from iam.allowedPolicyMemberDomains or "
                    "from run.managed.requireInvokerIam, or reach the service through `gcloud run services proxy` "
                    "with roles/run.invoker for your users.",
                ) from e
            raise

    return IamBinding(ctx, service.label, INVOKER_ROLE, PUBLIC_MEMBER, get, checked_set)


def resources(ctx: StepContext) -> Iterator[Resource]:
    service = CloudRunService(ctx)
    # First: an image of another MLflow is an upgrade, done in stages before the service is compared.
    yield MlflowUpgrade(ctx, service)
    yield service
    # Once a revision serves: the MLflow version whose schema the instance now holds, on the instance.
    yield SchemaRecord(ctx)
    # Made by the first upgrade; listed here so that status shows it and `down` deletes it (before the service).
    yield MigrationJobResource(ctx)
    if service.use_invoker_binding:
        yield public_invoker_binding(ctx, service)
    if service.direct:
        # After the service: its new revision is ready (or the step failed) before the connector goes.
        retired = RetiredConnector(ctx, used_by_service=False)
        retired.used_by_service = (service.connector_seen or "").rsplit("/", 1)[-1] == retired.name
        yield retired
