"""Organization policy constraints known to block a deployment, read as effective policies of the project
(Org Policy API v2 `projects.policies.getEffectivePolicy`), and what each one means for it.

Sources: https://cloud.google.com/resource-manager/docs/organization-policy/org-policy-constraints (the
constraints), https://cloud.google.com/resource-manager/docs/reference/orgpolicy/rest/v2/projects.policies/
getEffectivePolicy (the effective policy: the merge of the hierarchy's policies) and
https://cloud.google.com/run/docs/securing/ingress (run.allowedIngress values).

Rules with a condition (tags) cannot be judged from here: they are ignored, so a verdict errs toward "allowed".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlflow_gcp.config import Settings

Spec = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    severity: str  # "error" or "warning"
    message: str
    hint: str


def _rules(spec: Spec) -> list[dict[str, Any]]:
    return [r for r in (spec or {}).get("rules", []) if not r.get("condition")]


def enforced(spec: Spec) -> bool:
    """A boolean constraint is enforced by an unconditional rule with `enforce: true`."""
    return any(r.get("enforce") is True for r in _rules(spec))


def list_verdict(spec: Spec, values: set[str]) -> bool | None:
    """Whether a list constraint allows one of `values`: True, False, or None when it depends on value groups
    (`in:`/`under:` values) this tool cannot expand."""
    rules = _rules(spec)
    if not rules or any(r.get("allowAll") for r in rules):
        return True
    if any(r.get("denyAll") for r in rules):
        return False
    allowed = {v.removeprefix("is:") for r in rules for v in r.get("values", {}).get("allowedValues", [])}
    denied = {v.removeprefix("is:") for r in rules for v in r.get("values", {}).get("deniedValues", [])}
    if values & denied:
        return False
    if not allowed or values & allowed:
        return True
    return None if any(v.startswith(("in:", "under:")) for v in allowed) else False


def _hint(constraint: str, settings: Settings) -> str:
    return (
        f"Ask your organization's policy administrator for an exception for this project; `gcloud org-policies "
        f"describe {constraint} --effective --project {settings.project}` shows the policy."
    )


def _locations(spec: Spec, settings: Settings) -> Verdict | None:
    region = settings.region
    allowed = list_verdict(spec, {region, f"in:{region}-locations"})
    if allowed is False:
        return Verdict(
            "error",
            f"The organization policy gcp.resourceLocations does not allow the region {region}.",
            f"Choose an allowed region with --region. {_hint('gcp.resourceLocations', settings)}",
        )
    if allowed is None:
        return Verdict(
            "warning",
            f"The organization policy gcp.resourceLocations restricts locations to groups; check that {region} "
            "is in one of them.",
            _hint("gcp.resourceLocations", settings),
        )
    return None


def _ingress(spec: Spec, settings: Settings) -> Verdict | None:
    if list_verdict(spec, {"all"}) is False:
        return Verdict(
            "error",
            "The organization policy run.allowedIngress refuses ingress `all`: the MLflow server must be reachable "
            "by its clients over the internet (it checks the login itself).",
            _hint("run.allowedIngress", settings),
        )
    return None


def _egress(spec: Spec, settings: Settings) -> Verdict | None:
    if list_verdict(spec, {"private-ranges-only"}) is False:
        return Verdict(
            "error",
            "The organization policy run.allowedVPCEgress refuses `private-ranges-only`, the egress the server "
            "uses to reach Cloud SQL through the VPC connector.",
            _hint("run.allowedVPCEgress", settings),
        )
    return None


def _service_accounts(spec: Spec, settings: Settings) -> Verdict | None:
    if enforced(spec):
        return Verdict(
            "warning",
            f"The organization policy iam.disableServiceAccountCreation is enforced: the service account "
            f"{settings.service_account} cannot be created and must exist already.",
            _hint("iam.disableServiceAccountCreation", settings),
        )
    return None


def _peering(spec: Spec, settings: Settings) -> Verdict | None:
    verdict = list_verdict(spec, {"servicenetworking"})  # never listed as such: any restriction is worth a look
    if any(r.get("denyAll") for r in _rules(spec)):
        return Verdict(
            "error",
            "The organization policy compute.restrictVpcPeering refuses every peering: Cloud SQL's private IP "
            "needs one with servicenetworking.googleapis.com.",
            _hint("compute.restrictVpcPeering", settings),
        )
    if verdict is not True:
        return Verdict(
            "warning",
            "The organization policy compute.restrictVpcPeering restricts peerings: it may refuse the private "
            "services connection Cloud SQL's private IP needs.",
            _hint("compute.restrictVpcPeering", settings),
        )
    return None


BLOCKING: dict[str, Callable[[Spec, Settings], Verdict | None]] = {
    "gcp.resourceLocations": _locations,
    "run.allowedIngress": _ingress,
    "run.allowedVPCEgress": _egress,
    "iam.disableServiceAccountCreation": _service_accounts,
    "compute.restrictVpcPeering": _peering,
}


def read_effective(clients, project: str, constraint: str) -> Spec:
    """The effective policy's spec (empty when nothing is set: the constraint's default, which allows)."""
    from mlflow_gcp.gcp.errors import execute

    name = f"projects/{project}/policies/{constraint}"
    policy = execute(clients.org_policy().projects().policies().getEffectivePolicy(name=name))
    return policy.get("spec") or {}
