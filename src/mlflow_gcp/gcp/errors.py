"""Turn Google API errors into the tool's errors, each with a hint that says what to do."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.errors import (
    ApiDisabledError,
    BillingError,
    GoogleApiError,
    MlflowGcpError,
    OrgPolicyError,
    PermissionDeniedError,
    QuotaError,
)


def from_discovery_error(error) -> gexc.GoogleAPICallError:
    """A googleapiclient HttpError as the matching google.api_core exception, ErrorInfo included."""
    status = int(getattr(error.resp, "status", 500))
    body: dict[str, Any] = {}
    try:
        body = json.loads(error.content.decode("utf-8", "replace")).get("error", {})
    except (ValueError, AttributeError):
        pass
    if not isinstance(body, dict):
        body = {}
    details = body.get("details", []) or []
    error_info = next((d for d in details if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")), None)
    info = None
    if error_info:
        from google.rpc import error_details_pb2

        info = error_details_pb2.ErrorInfo(
            reason=error_info.get("reason", ""),
            domain=error_info.get("domain", ""),
            metadata=error_info.get("metadata", {}) or {},
        )
    message = body.get("message") or str(error)
    exc = gexc.from_http_status(status, message, errors=body.get("errors", []), details=details, error_info=info)
    exc.google_status = str(body.get("status") or "")
    return exc


def execute(request):
    """Run a discovery request, raising google.api_core exceptions instead of HttpError."""
    from googleapiclient.errors import HttpError

    try:
        return request.execute(num_retries=0)
    except HttpError as e:
        raise from_discovery_error(e) from e


def google_message(exc: gexc.GoogleAPICallError) -> str:
    """Google's own message, without the method and URL that REST transports put in front of it."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "json"):
        try:
            message = response.json().get("error", {}).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return str(message)
    return exc.message or str(exc)


def error_info(exc: gexc.GoogleAPICallError) -> tuple[str, dict[str, str]]:
    """`google.rpc.ErrorInfo` reason and metadata, read from the error's details: google-api-core before 2.44
    keeps a REST answer's ErrorInfo as a dict that its own `reason` and `metadata` properties cannot read
    (AttributeError), and the tool supports older versions."""
    for detail in exc.details or ():
        if isinstance(detail, dict):
            if str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
                return str(detail.get("reason") or ""), {
                    str(k): str(v) for k, v in (detail.get("metadata") or {}).items()
                }
        elif type(detail).__name__ == "ErrorInfo":
            return str(detail.reason), dict(detail.metadata)
    return "", {}


def google_status(exc: gexc.GoogleAPICallError) -> str:
    """The canonical status name of the error body (`ALREADY_EXISTS`, `ABORTED`...), or "" when absent."""
    if getattr(exc, "google_status", None) is not None:  # set by from_discovery_error
        return exc.google_status
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "json"):
        try:
            return str(response.json().get("error", {}).get("status") or "")
        except (ValueError, AttributeError):
            return ""
    return ""


def is_failed_precondition(exc: BaseException) -> bool:
    if isinstance(exc, gexc.FailedPrecondition):
        return True
    return isinstance(exc, gexc.BadRequest) and google_status(exc) == "FAILED_PRECONDITION"


def legacy_reason(exc: gexc.GoogleAPICallError) -> str:
    """The v1-style `errors[0].reason` (Cloud SQL, Storage and Compute still answer with it)."""
    for err in exc.errors or ():
        if isinstance(err, dict) and err.get("reason"):
            return str(err["reason"])
    return ""


def org_policy_constraint(exc: gexc.GoogleAPICallError) -> str | None:
    for detail in exc.details or ():
        if isinstance(detail, dict):
            for violation in detail.get("violations", []) or []:
                kind = str(violation.get("type", ""))
                if kind.startswith("constraints/"):
                    return kind
        else:
            for violation in getattr(detail, "violations", ()) or ():
                if str(getattr(violation, "type", "")).startswith("constraints/"):
                    return violation.type
    return None


def other_consumer(
    exc: gexc.GoogleAPICallError, project: str, project_number: Callable[[], str | None] | None = None
) -> str | None:
    """The project Google checked and billed the call to (`ErrorInfo.metadata.consumer`, e.g. `projects/123`)
    when it is not the target project: the quota project of user credentials. None when it is the target, or
    when that cannot be told (a number, and the target's number unknown)."""
    consumer = str(error_info(exc)[1].get("consumer", ""))
    name = consumer.removeprefix("projects/")
    if not consumer.startswith("projects/") or not name or name == project:
        return None
    if name.isdigit():
        number = project_number() if project_number else None
        if not number or number == name:
            return None
    return name


def translate(
    exc: gexc.GoogleAPICallError,
    what: str,
    project: str = "",
    project_number: Callable[[], str | None] | None = None,
) -> MlflowGcpError:
    """One clear error for a failed call. `what` says what was being done, e.g. 'creating bucket b'. When Google
    checked another project than the target (the quota project of the credentials), the error says so."""
    error = _translate(exc, what, project)
    consumer = other_consumer(exc, project, project_number)
    if consumer:
        error.message = (
            f"{error.message} Google checked this call against project {consumer}, not {project}: the quota "
            "project of your Application Default Credentials."
        )
        error.hint = (
            f"Run `gcloud auth application-default set-quota-project {project}` (or log in again with "
            "`gcloud auth application-default login`), then retry. "
            + (error.hint or "")
        ).strip()
        error.args = (error.message,)
    return error


def _translate(exc: gexc.GoogleAPICallError, what: str, project: str = "") -> MlflowGcpError:
    reason, metadata = error_info(exc)
    reason = reason or legacy_reason(exc)
    code = exc.code or 0
    text = google_message(exc)
    if reason == "SERVICE_DISABLED" or reason == "accessNotConfigured":
        service = metadata.get("service") or "a required"
        return ApiDisabledError(
            f"While {what}: the {service} API is not enabled on project {project or metadata.get('consumer', '')}.",
            "Run `mlflow-gcp step apis` (or `gcloud services enable "
            f"{metadata.get('service', 'SERVICE')}`), wait a minute for it to activate, then retry.",
        )
    if reason in ("BILLING_DISABLED", "billingNotEnabled", "accountDisabled") or "billing" in reason.lower():
        return BillingError(
            f"While {what}: billing is not enabled on project {project}.",
            "Link a billing account in the Cloud console (Billing > Link a billing account), then retry.",
        )
    constraint = org_policy_constraint(exc)
    if constraint:
        return OrgPolicyError(
            f"While {what}: the organization policy {constraint} refuses it ({text}).",
            "Ask your organization admin for an exception on this project, or change the setting it refuses.",
        )
    if isinstance(exc, gexc.TooManyRequests) or reason in (
        "RATE_LIMIT_EXCEEDED",
        "quotaExceeded",
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
    ):
        return QuotaError(
            f"While {what}: a quota is exhausted ({text}).",
            "See IAM & Admin > Quotas in the Cloud console and request an increase, or wait and retry.",
        )
    if isinstance(exc, (gexc.Forbidden, gexc.PermissionDenied, gexc.Unauthorized, gexc.Unauthenticated)):
        permission = metadata.get("permission")
        needed = f"the permission {permission}" if permission else "a permission"
        return PermissionDeniedError(
            f"While {what}: the caller lacks {needed} on project {project} ({text}).",
            "Ask a project owner to grant you the roles listed under Prerequisites in the README "
            "(roles/owner covers them all), or run as an account that has them.",
        )
    return GoogleApiError(f"While {what}: Google answered {code} {text}".rstrip() + ".")
