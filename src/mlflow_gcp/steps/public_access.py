"""Making the server public: Cloud Run's `invokerIamDisabled`, and telling when Google refuses it (an
organization policy requiring invoker IAM checks, an API that does not know the field) or refuses the
`allUsers` invoker binding used instead (domain restricted sharing)."""

from __future__ import annotations

from google.api_core import exceptions as gexc

INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"
INVOKER_IAM_FIELD = "invokerIamDisabled"
REQUIRE_INVOKER_IAM = "constraints/run.managed.requireInvokerIam"
DOMAIN_RESTRICTED_SHARING = "constraints/iam.allowedPolicyMemberDomains"


def _violation_types(exc: gexc.GoogleAPICallError) -> list[str]:
    types = []
    for detail in exc.details or ():
        violations = detail.get("violations", []) if isinstance(detail, dict) else getattr(detail, "violations", ())
        for violation in violations or ():
            kind = violation.get("type") if isinstance(violation, dict) else getattr(violation, "type", "")
            types.append(str(kind or ""))
    return types


def _field_violations(exc: gexc.GoogleAPICallError) -> list[str]:
    out = []
    for detail in exc.details or ():
        items = (
            detail.get("fieldViolations", []) if isinstance(detail, dict) else getattr(detail, "field_violations", ())
        )
        for item in items or ():
            if isinstance(item, dict):
                out.append(f"{item.get('field', '')} {item.get('description', '')}")
            else:
                out.append(f"{getattr(item, 'field', '')} {getattr(item, 'description', '')}")
    return out


def is_invoker_iam_disabled_refused(exc: BaseException) -> bool:
    """Cloud Run refuses `invokerIamDisabled`: an organization policy requires invoker IAM checks (a
    PreconditionFailure violation), or the API does not know the field (a BadRequest field violation)."""
    if not isinstance(exc, (gexc.BadRequest, gexc.FailedPrecondition, gexc.PreconditionFailed)):
        return False
    if REQUIRE_INVOKER_IAM in _violation_types(exc):
        return True
    return any(INVOKER_IAM_FIELD in v or "invoker_iam_disabled" in v for v in _field_violations(exc))


def refuses_public_members(exc: BaseException) -> bool:
    return isinstance(exc, gexc.GoogleAPICallError) and DOMAIN_RESTRICTED_SHARING in _violation_types(exc)
