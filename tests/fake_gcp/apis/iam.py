"""IAM v1 (discovery API): service accounts (create, get, list, delete) and their IAM policies.

Eventual consistency as Google shows it: a service account just created is not yet visible to IAM policies.
A setIamPolicy naming it (on the account itself, or on a bucket, see storage.py) answers 400 "Service account
... does not exist." for the first `fake.iam_invisible_for` such writes (default 2; set 0 to turn it off).

Test helpers on the fake: `fake.service_account(email)` (the stored account or None),
`fake.iam_check_visible(members)` (raises the 400 above while a member is still invisible).
`fake.iam_policy_lag` (default 0): that many getIamPolicy/setIamPolicy calls on a new account answer 404
while `get` already works.
Creation answers synchronously; `fake.latency["iam.create_service_account"]` makes it take that long.

`projects.serviceAccounts.testIamPermissions` answers which of the asked permissions the caller holds on an account
(https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/testIamPermissions): those it holds on
the project (all but `fake.state["denied_permissions"]`, see cloudresourcemanager.py), plus
iam.serviceAccounts.actAs when the account's own policy grants the caller a role that holds it (a least-privilege
set-up: roles/iam.serviceAccountUser on the account, not on the project). An unknown account is 404.
"""

from __future__ import annotations

import re
import time

from tests.fake_gcp.apis.cloudresourcemanager import OWNER
from tests.fake_gcp.server import ApiError, FakeGoogle, Request

SA = "/v1/projects/{project}/serviceAccounts/{account}"
_ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
# Roles that can be granted on a service account resource.
GRANTABLE_ON_SERVICE_ACCOUNT = {
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountKeyAdmin",
    "roles/iam.serviceAccountOpenIdTokenCreator",
    "roles/iam.workloadIdentityUser",
    "roles/owner",
    "roles/editor",
    "roles/viewer",
}
ACT_AS = "iam.serviceAccounts.actAs"
# Roles that hold iam.serviceAccounts.actAs on a service account.
ACT_AS_ROLES = {"roles/iam.serviceAccountUser", "roles/owner", "roles/editor"}


def register(fake: FakeGoogle) -> None:
    accounts: dict[str, dict] = fake.state.setdefault("service_accounts", {})  # by email
    invisible: dict[str, int] = fake.state.setdefault("service_accounts_invisible", {})
    fake.iam_invisible_for = 2
    # Reads of a service account just created that still answer 404 (0 by default).
    fake.iam_get_lag = 0
    unreadable: dict[str, int] = {}
    # getIamPolicy/setIamPolicy calls on a service account just created that still answer 404 while `get`
    # works (0 by default; https://github.com/GoogleCloudPlatform/magic-modules/pull/10813).
    fake.iam_policy_lag = 0
    policy_unready: dict[str, int] = {}

    def check_policy_ready(account: dict) -> None:
        with fake.lock:
            if policy_unready.get(account["email"], 0) > 0:
                policy_unready[account["email"]] -= 1
                raise ApiError(404, f"Service account {account['name']} does not exist.", status="NOT_FOUND")

    def unknown() -> ApiError:
        return ApiError(404, "Unknown service account", status="NOT_FOUND")

    def lookup(req: Request) -> dict:
        """`projects/{project|-}/serviceAccounts/{email|uniqueId}`."""
        wanted = req.params["account"]
        account = accounts.get(wanted) or next((a for a in accounts.values() if a["uniqueId"] == wanted), None)
        if account is None or req.params["project"] not in ("-", account["projectId"]):
            raise unknown()
        with fake.lock:
            if unreadable.get(account["email"], 0) > 0:
                unreadable[account["email"]] -= 1
                raise unknown()
        return account

    def check_visible(members) -> None:
        with fake.lock:
            for member in members:
                email = member.split(":", 1)[1] if member.startswith("serviceAccount:") else None
                if email and invisible.get(email, 0) > 0:
                    invisible[email] -= 1
                    raise ApiError(400, f"Service account {email} does not exist.", status="INVALID_ARGUMENT")

    @fake.route("iam", "POST", "/v1/projects/{project}/serviceAccounts")
    def create(req: Request):
        body = req.json
        project = req.params["project"]
        account_id = body.get("accountId", "")
        if not (6 <= len(account_id) <= 30 and _ACCOUNT_ID.match(account_id)):
            raise ApiError(
                400,
                "Invalid account ID. It must be 6-30 characters long and match the regular expression "
                "[a-z]([-a-z0-9]*[a-z0-9]).",
                status="INVALID_ARGUMENT",
            )
        seconds = fake.latency.get("iam.create_service_account", 0.0)
        if seconds:
            time.sleep(seconds)
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        with fake.lock:
            if email in accounts:
                raise ApiError(
                    409,
                    f"Service account {account_id} already exists within project projects/{project}.",
                    status="ALREADY_EXISTS",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                            "resourceName": f"projects/{project}/serviceAccounts/{email}",
                        }
                    ],
                )
            unique_id = f"1{int(fake.next_id()):020d}"
            given = body.get("serviceAccount") or {}
            account = {
                "name": f"projects/{project}/serviceAccounts/{email}",
                "projectId": project,
                "uniqueId": unique_id,
                "email": email,
                "etag": "MDEwMjE5MjA=",
                "oauth2ClientId": unique_id,
            }
            for key in ("displayName", "description"):
                if given.get(key):
                    account[key] = given[key]
            accounts[email] = account
            invisible[email] = fake.iam_invisible_for
            unreadable[email] = fake.iam_get_lag
            policy_unready[email] = fake.iam_policy_lag
        return account

    @fake.route("iam", "GET", SA)
    def get(req: Request):
        return lookup(req)

    @fake.route("iam", "GET", "/v1/projects/{project}/serviceAccounts")
    def list_accounts(req: Request):
        found = [a for a in accounts.values() if a["projectId"] == req.params["project"]]
        return {"accounts": found} if found else {}

    @fake.route("iam", "PATCH", SA)
    def patch(req: Request):
        account = lookup(req)
        body = req.json.get("serviceAccount", {})
        for key in req.json.get("updateMask", "").split(","):
            if key in ("displayName", "description"):
                account[key] = body.get(key, "")
        return account

    def set_disabled(disabled: bool):
        def handler(req: Request):
            account = lookup(req)
            if disabled:
                account["disabled"] = True
            else:
                account.pop("disabled", None)
            return {}

        return handler

    fake.route("iam", "POST", SA + ":enable")(set_disabled(False))
    fake.route("iam", "POST", SA + ":disable")(set_disabled(True))

    @fake.route("iam", "DELETE", SA)
    def delete(req: Request):
        account = lookup(req)
        with fake.lock:
            del accounts[account["email"]]
            invisible.pop(account["email"], None)
            fake.policies.pop(account["name"], None)
        return {}

    @fake.route("iam", "POST", SA + ":getIamPolicy", mutating=False)
    def get_iam_policy(req: Request):
        account = lookup(req)
        check_policy_ready(account)
        policy = fake.get_policy(account["name"])
        # Version 3 only when asked for and a binding has a condition; otherwise version 1, as Google does.
        requested = int(req.query.get("options.requestedPolicyVersion") or 1)
        conditional = any(b.get("condition") for b in policy.get("bindings", []))
        return {**policy, "version": 3 if requested >= 3 and conditional else 1}

    @fake.route("iam", "POST", SA + ":setIamPolicy")
    def set_iam_policy(req: Request):
        account = lookup(req)
        check_policy_ready(account)
        policy = req.json.get("policy", {})
        for binding in policy.get("bindings", []):
            if binding.get("role") not in GRANTABLE_ON_SERVICE_ACCOUNT:
                raise ApiError(
                    400,
                    f"Role {binding.get('role')} is not supported for this resource.",
                    status="INVALID_ARGUMENT",
                )
        check_visible(m for b in policy.get("bindings", []) for m in b.get("members", []))
        return fake.set_policy(account["name"], policy)

    @fake.route("iam", "POST", SA + ":testIamPermissions", mutating=False)
    def test_iam_permissions(req: Request):
        account = lookup(req)
        denied = set(fake.state.get("denied_permissions", ()))
        on_account = any(OWNER in fake.members(account["name"], role) for role in ACT_AS_ROLES)
        asked = (req.json or {}).get("permissions", [])
        granted = [p for p in asked if p not in denied or (p == ACT_AS and on_account)]
        return {"permissions": granted} if granted else {}

    def service_account(email: str) -> dict | None:
        return accounts.get(email)

    fake.service_account = service_account
    fake.iam_check_visible = check_visible
