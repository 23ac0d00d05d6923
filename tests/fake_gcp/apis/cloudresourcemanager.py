"""Cloud Resource Manager: `projects.get` (v1 and v3), enough to turn the project id into its number, which
Service Networking wants in network names and a bucket's `projectNumber` is compared with;
`projects.testIamPermissions` (v1 and v3) for preflight; the project's IAM policy (v1 getIamPolicy / setIamPolicy,
with etags; it starts with the caller as owner, `OWNER`, so a test sees that other bindings are kept).
Another project (or a missing one) is 403, as Google answers: it does not tell "missing" from "not yours".

Options (for preflight):
- `fake.state["project_state"]`: "ACTIVE" (default), "DELETE_REQUESTED" (deleted, restorable for 30 days), or
  None (the project does not exist or the caller cannot see it).
- `fake.state["denied_permissions"]`: permissions the caller lacks (default none): testIamPermissions answers the
  asked permissions minus these. It needs no permission itself
  (https://cloud.google.com/resource-manager/reference/rest/v1/projects/testIamPermissions).
"""

from __future__ import annotations

from tests.fake_gcp.server import PROJECT, PROJECT_NUMBER, ApiError, FakeGoogle, Request

OWNER = "user:owner@example.com"


def register(fake: FakeGoogle) -> None:
    def check(project: str) -> str:
        state = fake.state.get("project_state", "ACTIVE")
        if project not in (PROJECT, PROJECT_NUMBER) or state is None:
            raise ApiError(
                403,
                "The caller does not have permission",
                reason="IAM_PERMISSION_DENIED",
                metadata={"permission": "resourcemanager.projects.get"},
            )
        return state

    @fake.route("cloudresourcemanager", "GET", "/v1/projects/{project}")
    def get_v1(req: Request):
        state = check(req.params["project"])
        return {
            "projectNumber": PROJECT_NUMBER,
            "projectId": PROJECT,
            "lifecycleState": state,
            "name": "Demo project",
            "createTime": "2026-01-01T00:00:00.000Z",
        }

    @fake.route("cloudresourcemanager", "GET", "/v3/projects/{project}")
    def get_v3(req: Request):
        state = check(req.params["project"])
        return {
            "name": f"projects/{PROJECT_NUMBER}",
            "projectId": PROJECT,
            "state": state,
            "displayName": "Demo project",
            "createTime": "2026-01-01T00:00:00.000Z",
        }

    def test_permissions(req: Request):
        check(req.params["project"])
        denied = set(fake.state.get("denied_permissions", ()))
        granted = [p for p in (req.json or {}).get("permissions", []) if p not in denied]
        return {"permissions": granted} if granted else {}

    fake.route("cloudresourcemanager", "POST", "/v1/projects/{project}:testIamPermissions", mutating=False)(
        test_permissions
    )
    fake.route("cloudresourcemanager", "POST", "/v3/projects/{project}:testIamPermissions", mutating=False)(
        test_permissions
    )

    policy_key = f"projects/{PROJECT}"

    def project_policy() -> dict:
        with fake.lock:
            if policy_key not in fake.policies:  # a project starts with its creator as owner
                fake.set_policy(policy_key, {"bindings": [{"role": "roles/owner", "members": [OWNER]}]})
        return fake.get_policy(policy_key)

    @fake.route("cloudresourcemanager", "POST", "/v1/projects/{project}:getIamPolicy", mutating=False)
    def get_iam_policy(req: Request):
        check(req.params["project"])
        policy = project_policy()
        requested = int(((req.json.get("options") or {}).get("requestedPolicyVersion")) or 1)
        conditional = any(b.get("condition") for b in policy.get("bindings", []))
        return {**policy, "version": 3 if requested >= 3 and conditional else 1}

    @fake.route("cloudresourcemanager", "POST", "/v1/projects/{project}:setIamPolicy")
    def set_iam_policy(req: Request):
        check(req.params["project"])
        project_policy()
        policy = req.json.get("policy", {})
        fake.iam_check_visible(m for b in policy.get("bindings", []) for m in b.get("members", []))
        return fake.set_policy(policy_key, policy)
