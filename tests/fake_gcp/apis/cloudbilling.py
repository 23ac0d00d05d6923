"""Cloud Billing v1: `projects.getBillingInfo`, for preflight.

Option: `fake.state["billing_enabled"]` (default True). A project the caller cannot see is 403, as Google answers
(the method needs `resourcemanager.projects.get`:
https://cloud.google.com/billing/docs/reference/rest/v1/projects/getBillingInfo).
"""

from __future__ import annotations

from tests.fake_gcp.server import PROJECT, PROJECT_NUMBER, ApiError, FakeGoogle, Request


def register(fake: FakeGoogle) -> None:
    @fake.route("cloudbilling", "GET", "/v1/projects/{project}/billingInfo")
    def get_billing_info(req: Request):
        project = req.params["project"]
        if project not in (PROJECT, PROJECT_NUMBER) or fake.state.get("project_state", "ACTIVE") is None:
            raise ApiError(
                403,
                "The caller does not have permission",
                reason="IAM_PERMISSION_DENIED",
                metadata={"permission": "resourcemanager.projects.get"},
            )
        enabled = fake.state.get("billing_enabled", True)
        return {
            "name": f"projects/{PROJECT}/billingInfo",
            "projectId": PROJECT,
            "billingAccountName": "billingAccounts/012345-6789AB-CDEF01" if enabled else "",
            "billingEnabled": enabled,
        }
