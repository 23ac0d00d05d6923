"""IAM bindings on one resource: add the missing member only, write only when it changed, keep the etag,
retry when someone else wrote the policy in between."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import Resource, StepContext
from mlflow_gcp.gcp import retry

Policy = dict[str, Any]

ETAG_ATTEMPTS = 5


def has_member(policy: Policy, role: str, member: str) -> bool:
    return any(
        b.get("role") == role and member in b.get("members", []) and not b.get("condition")
        for b in policy.get("bindings", [])
    )


def with_member(policy: Policy, role: str, member: str) -> Policy:
    bindings = [dict(b) for b in policy.get("bindings", [])]
    for binding in bindings:
        if binding.get("role") == role and not binding.get("condition"):
            binding["members"] = [*binding.get("members", []), member]
            break
    else:
        bindings.append({"role": role, "members": [member]})
    return {**policy, "bindings": bindings}


def without_member(policy: Policy, role: str, member: str) -> Policy:
    bindings = []
    for binding in policy.get("bindings", []):
        members = [m for m in binding.get("members", []) if not (binding.get("role") == role and m == member)]
        if members:
            bindings.append({**binding, "members": members})
    return {**policy, "bindings": bindings}


def proto_policy_io(client, resource_name: str) -> tuple[Callable[[], Policy], Callable[[Policy], None]]:
    """Policy getter and setter for GAPIC clients that speak google.iam.v1 (Secret Manager, Cloud Run,
    Artifact Registry), as plain dicts in the REST JSON shape (the etag base64 as Google sends it)."""
    from google.iam.v1 import policy_pb2
    from google.protobuf import json_format

    def get() -> Policy:
        return json_format.MessageToDict(client.get_iam_policy(request={"resource": resource_name}))

    def set_(policy: Policy) -> None:
        message = json_format.ParseDict(policy, policy_pb2.Policy(), ignore_unknown_fields=True)
        client.set_iam_policy(request={"resource": resource_name, "policy": message})

    return get, set_


def update_policy(
    get: Callable[[], Policy], set_: Callable[[Policy], None], change: Callable[[Policy], Policy]
) -> None:
    """Read-modify-write with the etag; a concurrent writer makes the write fail (409/412) and we redo it."""
    for attempt in range(ETAG_ATTEMPTS):
        policy = retry.call(get)
        changed = change(policy)
        if changed == policy:
            return
        try:
            retry.call(
                lambda changed=changed: set_(changed),
                predicate=retry.any_of(retry.is_transient, retry.is_iam_member_not_yet_visible),
            )
            return
        except (gexc.Conflict, gexc.Aborted, gexc.PreconditionFailed):
            if attempt == ETAG_ATTEMPTS - 1:
                raise


class IamBinding(Resource):
    """`member` holds `role` on one resource."""

    kind = "grant"

    def __init__(
        self,
        ctx: StepContext,
        target: str,
        role: str,
        member: str,
        get: Callable[[], Policy],
        set_: Callable[[Policy], None],
    ) -> None:
        # Short enough for a table row: "grant secretAccessor to run-mlflow on secret mlflow-env".
        who = member.split(":", 1)[-1].split("@", 1)[0]
        super().__init__(ctx, f"{role.rsplit('/', 1)[-1]} to {who} on {target}")
        self.role, self.member, self._get, self._set = role, member, get, set_
        self.target = target  # the label of the resource the grant is on

    def read(self) -> Policy | None:
        policy = retry.call(self._get)
        return policy if has_member(policy, self.role, self.member) else None

    def create(self) -> None:
        update_policy(
            self._get,
            self._set,
            lambda p: p if has_member(p, self.role, self.member) else with_member(p, self.role, self.member),
        )

    def delete(self, current: Policy) -> None:
        update_policy(self._get, self._set, lambda p: without_member(p, self.role, self.member))
