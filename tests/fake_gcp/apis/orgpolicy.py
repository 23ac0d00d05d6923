"""Org Policy v2: `projects.policies.getEffectivePolicy`, for preflight.

Option: `fake.state["org_policies"]`, constraint name (e.g. "run.allowedIngress") → the effective policy's `spec`
(`{"rules": [{"values": {"allowedValues": ["internal"]}}]}`, `{"rules": [{"enforce": true}]}`). A constraint
with no policy answers an empty spec: its default applies. Reading needs `orgpolicy.policy.get`
(roles/orgpolicy.policyViewer), which many callers lack: `fake.fail(403, api="orgpolicy", ...)` models that.
Source: https://cloud.google.com/resource-manager/docs/reference/orgpolicy/rest/v2/projects.policies/getEffectivePolicy
"""

from __future__ import annotations

from tests.fake_gcp.server import FakeGoogle, Request


def register(fake: FakeGoogle) -> None:
    @fake.route("orgpolicy", "GET", "/v2/projects/{project}/policies/{constraint}:getEffectivePolicy")
    def get_effective_policy(req: Request):
        constraint = req.params["constraint"]
        spec = fake.state.get("org_policies", {}).get(constraint, {})
        return {"name": f"projects/{req.params['project']}/policies/{constraint}", "spec": spec}
