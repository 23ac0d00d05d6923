"""Preflight: everything that would make `up`, `step` or `down` fail, found before anything is created.

Credentials first (nothing else can be asked without them), then at once: the project (Resource Manager), its
billing (Cloud Billing), the caller's permissions (`projects.testIamPermissions` on the exact list the steps
need) and the organization policies known to block a deployment (Org Policy effective policies). Every problem
is collected, so that one message lists them all. A check that cannot be made (its API disabled on the caller's
quota project, a permission to read it missing) is a warning, never a reason to stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlflow_gcp.config import Settings
from mlflow_gcp.gcp.clients import Clients, endpoint_base
from mlflow_gcp.preflight.permissions import ACT_AS, SA_USER, act_as_accounts, missing_by_role, permissions_for

ERROR, WARNING = "error", "warning"
LOGIN_AGAIN = "Run `gcloud auth application-default login` to log in again."


@dataclass(frozen=True)
class Finding:
    check: str  # "credentials", "project", "billing", "permissions", "org policy"
    severity: str  # ERROR stops the command, WARNING is shown
    message: str
    hint: str = ""
    disabled_api: str = ""  # set when the check could not be made because this API is not enabled


@dataclass
class PreflightReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


# -- credentials --------------------------------------------------------------------------------------------
def check_credentials(clients: Clients) -> list[Finding]:
    """Application Default Credentials exist and Google accepts them (a refresh: the first call needs it anyway).
    Under the endpoint rule the credentials are anonymous: nothing to check."""
    from mlflow_gcp.errors import CredentialsError

    try:
        credentials = clients.credentials
    except CredentialsError as e:
        return [Finding("credentials", ERROR, e.message, e.hint or "")]
    if endpoint_base():
        return []
    import google.auth.exceptions
    from google.auth.transport.requests import Request

    try:
        credentials.refresh(Request())
    except google.auth.exceptions.RefreshError as e:
        user = type(credentials).__module__ == "google.oauth2.credentials"
        if user:
            return [Finding("credentials", ERROR, "Your Google Cloud login has expired or was revoked.", LOGIN_AGAIN)]
        return [
            Finding(
                "credentials",
                ERROR,
                f"Google refused the credentials ({_first_line(e)}).",
                "Check GOOGLE_APPLICATION_CREDENTIALS (the key may have been deleted or disabled), or "
                + LOGIN_AGAIN[0].lower()
                + LOGIN_AGAIN[1:],
            )
        ]
    except google.auth.exceptions.TransportError as e:
        return [
            Finding(
                "credentials",
                ERROR,
                f"Google could not be reached to check the credentials ({_first_line(e)}).",
                "Check the network connection (proxy, VPN, DNS) and run the command again.",
            )
        ]
    return []


def _first_line(error: BaseException) -> str:
    text = str(error.args[0] if error.args else error)
    return text.splitlines()[0][:200] if text else type(error).__name__


# -- project, billing, permissions, org policies ------------------------------------------------------------
def _call(request):
    from mlflow_gcp.gcp.errors import execute

    return execute(request)


def _unreadable(check: str, what: str, error: BaseException) -> Finding:
    """A check that could not be made: a warning, never a reason to stop."""
    from mlflow_gcp.gcp.errors import google_message
    from mlflow_gcp.gcp.retry import is_service_activating

    if is_service_activating(error):
        service = (getattr(error, "metadata", None) or {}).get("service") or "its API"
        return Finding(check, WARNING, f"{what}: not checked, {_not_enabled(service)}", disabled_api=service)
    reason = google_message(error) if hasattr(error, "code") else str(error)
    return Finding(check, WARNING, f"{what}: could not be checked ({reason}).")


def check_project(clients: Clients, settings: Settings) -> list[Finding]:
    """The project exists, the caller can see it, and it is not being deleted. Resource Manager answers 403 for
    a project that does not exist as for one the caller cannot see, so that they cannot be told apart."""
    from google.api_core import exceptions as gexc

    project = settings.project
    try:
        found = _call(clients.resource_manager().projects().get(projectId=project))
    except (gexc.Forbidden, gexc.NotFound) as e:
        if getattr(e, "reason", None) == "SERVICE_DISABLED":
            return [_unreadable("project", "Project", e)]
        return [
            Finding(
                "project",
                ERROR,
                f"The project {project} does not exist, or your account cannot see it.",
                "Check the project id (`gcloud projects list` shows the ones you can see), or ask a project "
                "owner for access (roles/browser at least).",
            )
        ]
    except gexc.GoogleAPICallError as e:
        return [_unreadable("project", "Project", e)]
    state = found.get("lifecycleState", "ACTIVE")
    if state != "ACTIVE":
        return [
            Finding(
                "project",
                ERROR,
                f"The project {project} is being deleted ({state}).",
                f"Restore it with `gcloud projects undelete {project}` (possible for 30 days), or use another project.",
            )
        ]
    return []


def check_billing(clients: Clients, settings: Settings) -> list[Finding]:
    from google.api_core import exceptions as gexc

    project = settings.project
    try:
        info = _call(clients.billing().projects().getBillingInfo(name=f"projects/{project}"))
    except gexc.GoogleAPICallError as e:
        return [_unreadable("billing", "Billing", e)]
    if not info.get("billingEnabled"):
        return [
            Finding(
                "billing",
                ERROR,
                f"Billing is not enabled on the project {project}: Cloud SQL, Cloud Run and the VPC connector need it.",
                f"Link a billing account: https://console.cloud.google.com/billing/linkedaccount?project={project} "
                f"or `gcloud billing projects link {project} --billing-account ACCOUNT_ID`.",
            )
        ]
    return []


def check_permissions(
    clients: Clients, settings: Settings, wanted: Sequence[str], act_as: Sequence[str] = ()
) -> list[Finding]:
    """`projects.testIamPermissions` answers which of the asked permissions the caller holds (at most 100 per
    call); the missing ones are listed under the predefined role that grants them. actAs missing on the project
    is asked of the accounts `act_as` themselves (a grant on each account is enough)."""
    from google.api_core import exceptions as gexc

    wanted = list(wanted)
    granted: set[str] = set()
    try:
        for start in range(0, len(wanted), 100):
            body = {"permissions": wanted[start : start + 100]}
            answer = _call(
                clients.resource_manager().projects().testIamPermissions(resource=settings.project, body=body)
            )
            granted |= set(answer.get("permissions", []))
    except gexc.GoogleAPICallError as e:
        return [_unreadable("permissions", "Permissions", e)]
    lacking_act_as: list[str] = []
    if ACT_AS in wanted and ACT_AS not in granted and act_as:
        lacking_act_as = _accounts_without_act_as(clients, act_as)
        if not lacking_act_as:
            granted.add(ACT_AS)
    missing = missing_by_role(wanted, granted)
    if not missing:
        return []
    lines = "".join(f"\n{role}: {', '.join(perms)}" for role, perms in missing.items())
    if ACT_AS in missing.get(SA_USER, ()) and lacking_act_as:
        lines += f" (on the project, or on each of {', '.join(lacking_act_as)})"
    return [
        Finding(
            "permissions",
            ERROR,
            f"Your account lacks permissions on {settings.project}, by the role that grants them:{lines}",
            "Ask a project owner to grant you these roles (`gcloud projects add-iam-policy-binding "
            f"{settings.project} --member user:YOU --role ROLE`), or roles/owner, which covers them all.",
        )
    ]


def _accounts_without_act_as(clients: Clients, accounts: Sequence[str]) -> list[str]:
    """The accounts the caller may not act as by a grant on the account itself (`serviceAccounts.
    testIamPermissions`). An account that does not exist yet is among them: the tool creates it, and only a
    grant on the project (or above) applies to it then."""
    from google.api_core import exceptions as gexc

    lacking = []
    for email in accounts:
        name = f"projects/{clients.project}/serviceAccounts/{email}"
        body = {"permissions": [ACT_AS]}
        try:
            answer = _call(clients.iam().projects().serviceAccounts().testIamPermissions(resource=name, body=body))
        except gexc.GoogleAPICallError:
            answer = {}  # missing, or unreadable: the project-level answer stands
        if ACT_AS not in answer.get("permissions", []):
            lacking.append(email)
    return lacking


def check_org_policies(clients: Clients, settings: Settings) -> list[Finding]:
    from mlflow_gcp.preflight.org_policies import BLOCKING, read_effective

    def read(constraint: str):
        try:
            return read_effective(clients, settings.project, constraint), None
        except Exception as e:  # a policy that cannot be read is a warning, whatever the cause
            return None, e

    with ThreadPoolExecutor(len(BLOCKING), thread_name_prefix="preflight-orgpolicy") as pool:
        answers = dict(zip(BLOCKING, pool.map(read, BLOCKING), strict=True))
    findings: list[Finding] = []
    unreadable: list[str] = []
    for constraint, verdict in BLOCKING.items():
        spec, error = answers[constraint]
        if error is not None:
            unreadable.append(f"{constraint} ({_short(error)})")
            continue
        problem = verdict(spec, settings)
        if problem:
            findings.append(Finding("org policy", problem.severity, problem.message, problem.hint))
    if unreadable:
        findings.append(
            Finding(
                "org policy",
                WARNING,
                "Organization policies could not be read, so any that would block the deployment are unknown: "
                + ", ".join(unreadable)
                + ".",
                "roles/orgpolicy.policyViewer lets you read them.",
            )
        )
    return findings


def _short(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return f"HTTP {int(code)}" if isinstance(code, int) or hasattr(code, "value") else type(error).__name__


# -- all of it ----------------------------------------------------------------------------------------------
def run_preflight(
    settings: Settings,
    clients: Clients,
    *,
    steps: Iterable[str],
    checks: Sequence[str] = ("project", "billing", "permissions", "org policy"),
    permissions: Sequence[str] | None = None,
) -> PreflightReport:
    """`permissions`: the list to test, instead of what `steps` need (`down` asks for its own)."""
    steps = tuple(steps)
    report = PreflightReport(check_credentials(clients))
    if report.errors:
        return report  # nothing else can be asked
    wanted = list(permissions) if permissions is not None else permissions_for(steps, settings)
    jobs: dict[str, Callable[[], list[Finding]]] = {
        "project": lambda: check_project(clients, settings),
        "billing": lambda: check_billing(clients, settings),
        "permissions": lambda: check_permissions(clients, settings, wanted, act_as_accounts(steps, settings)),
        "org policy": lambda: check_org_policies(clients, settings),
    }
    with ThreadPoolExecutor(len(checks) or 1, thread_name_prefix="preflight") as pool:
        futures = [pool.submit(jobs[name]) for name in checks]
        for future in futures:
            report.findings += future.result()
    if any(f.check == "project" and f.severity == ERROR for f in report.findings):
        report.findings = [f for f in report.findings if f.check == "project"]  # the others only repeat it
    report.findings = _one_per_disabled_api(report.findings)
    return report


def _not_enabled(service: str) -> str:
    from mlflow_gcp.steps.apis import REQUIRED_APIS

    if service in REQUIRED_APIS:
        return f"{service} is not enabled (the apis step enables it)."
    return f"{service} is not enabled (`gcloud services enable {service}` enables it)."


def _one_per_disabled_api(findings: list[Finding]) -> list[Finding]:
    """ "Project and permissions: not checked, X is not enabled" rather than a line for each."""
    merged: list[Finding] = []
    by_api: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.disabled_api:
            by_api.setdefault(finding.disabled_api, []).append(finding)
        else:
            merged.append(finding)
    for api, group in by_api.items():
        checks = [f.check for f in group]
        what = " and ".join(checks).capitalize()
        message = f"{what}: not checked, {_not_enabled(api)}"
        merged.append(Finding(", ".join(checks), WARNING, message, disabled_api=api))
    return merged
