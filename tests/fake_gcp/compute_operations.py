"""Compute Engine v1 operations (`compute#operation`), global or regional: one builder, its store, and the routes
that read them (`get`, and `wait`, which answers as `get` does: the fake's operations end on its clock).

An operation is RUNNING until the fake's clock runs its latency kind, then DONE, with `finish()` applied or the
error it raised. `fail_next(kind, message)` plans an error for the next operation of that kind.
"""

from __future__ import annotations

from tests.fake_gcp.server import ApiError, FakeGoogle, Request, not_found

BASE = "https://www.googleapis.com/compute/v1"
TIME = "2026-11-26T00:00:00.000-08:00"


class ComputeOperations:
    """The operations of one scope: `global`, or `regions/{region}` (the region given to `start`)."""

    def __init__(self, fake: FakeGoogle, scope: str, id_base: int) -> None:
        self.fake = fake
        self.scope = scope
        self.id_base = id_base
        self.operations: dict[str, dict] = {}
        self.failures: dict[str, list[str]] = {}
        path = f"/compute/v1/projects/{{project}}/{scope}/operations/{{operation}}"
        fake.route("compute", "GET", path)(self.get)
        fake.route("compute", "POST", path + "/wait", mutating=False)(self.get)

    def start(self, project: str, kind: str, op_type: str, target: str, finish, *, region: str = "") -> dict:
        name = f"operation-{self.fake.next_id()}-{op_type}"
        where = self.scope.format(region=region)
        op = {
            "kind": "compute#operation",
            "id": str(self.id_base + int(self.fake.next_id())),
            "name": name,
            "operationType": op_type,
            "targetLink": target,
            "status": "RUNNING",
            "progress": 0,
            "insertTime": TIME,
            "startTime": TIME,
            "user": "someone@example.com",
            "selfLink": f"{BASE}/projects/{project}/{where}/operations/{name}",
        }
        if region:
            op["region"] = f"{BASE}/projects/{project}/regions/{region}"
        self.operations[name] = op
        planned_error = self.failures.get(kind, [])
        message = planned_error.pop(0) if planned_error else None

        def complete() -> None:
            if message is not None:
                op["error"] = {"errors": [{"code": "RESOURCE_OPERATION_FAILED", "message": message}]}
                op["httpErrorStatusCode"] = 400
                op["httpErrorMessage"] = "BAD REQUEST"
            else:
                try:
                    finish()
                except ApiError as e:
                    op["error"] = {"errors": [{"code": e.body["errors"][0]["reason"], "message": e.body["message"]}]}
                    op["httpErrorStatusCode"] = e.code
            op["status"] = "DONE"
            op["progress"] = 100
            op["endTime"] = TIME

        self.fake.after(kind, complete)
        self.fake.tick()
        return dict(op)

    def fail_next(self, kind: str, message: str) -> None:
        self.failures.setdefault(kind, []).append(message)

    def get(self, req: Request) -> dict:
        op = self.operations.get(req.params["operation"])
        if op is None:
            p = req.params
            where = self.scope.format(region=p.get("region", ""))
            raise not_found(f"The resource 'projects/{p['project']}/{where}/operations/{p['operation']}'")
        return dict(op)
