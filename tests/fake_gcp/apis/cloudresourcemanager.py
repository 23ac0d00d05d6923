"""Cloud Resource Manager: `projects.get` (v1 and v3), enough to turn the project id into its number, which
Service Networking wants in network names. Another project (or a missing one) is 403, as Google answers."""

from __future__ import annotations

from tests.fake_gcp.server import PROJECT, PROJECT_NUMBER, ApiError, FakeGoogle, Request


def register(fake: FakeGoogle) -> None:
    def check(project: str) -> None:
        if project not in (PROJECT, PROJECT_NUMBER):
            raise ApiError(
                403,
                "The caller does not have permission",
                reason="IAM_PERMISSION_DENIED",
                metadata={"permission": "resourcemanager.projects.get"},
            )

    @fake.route("cloudresourcemanager", "GET", "/v1/projects/{project}")
    def get_v1(req: Request):
        check(req.params["project"])
        return {
            "projectNumber": PROJECT_NUMBER,
            "projectId": PROJECT,
            "lifecycleState": "ACTIVE",
            "name": "Demo project",
            "createTime": "2026-01-01T00:00:00.000Z",
        }

    @fake.route("cloudresourcemanager", "GET", "/v3/projects/{project}")
    def get_v3(req: Request):
        check(req.params["project"])
        return {
            "name": f"projects/{PROJECT_NUMBER}",
            "projectId": PROJECT,
            "state": "ACTIVE",
            "displayName": "Demo project",
            "createTime": "2026-01-01T00:00:00.000Z",
        }
