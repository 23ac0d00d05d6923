"""Service Usage v1: batchGet, get, enable, batchEnable, operations.

Option `fake.activation_seconds` (default 0): for that long after an enable operation completes, calls to the
API still answer SERVICE_DISABLED (Google: "it can take a few minutes for the enablement to propagate",
https://cloud.google.com/service-usage/docs/enable-disable).
"""

from __future__ import annotations

import time

from tests.fake_gcp.server import PROJECT_NUMBER, ApiError, FakeGoogle, LongRunningStore, Request

RESPONSE_TYPE = "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse"
ENABLE_RESPONSE_TYPE = "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse"


def register(fake: FakeGoogle) -> None:
    operations = LongRunningStore(fake, "serviceusage", "operations")

    def service(name: str) -> dict:
        return {
            "name": f"projects/{PROJECT_NUMBER}/services/{name}",
            "config": {"name": name},
            "state": "ENABLED" if name in fake.enabled else "DISABLED",
            "parent": f"projects/{PROJECT_NUMBER}",
        }

    @fake.route("serviceusage", "GET", "/v1/projects/{project}/services:batchGet")
    def batch_get(req: Request):
        names = req.query_all.get("names", [])
        if len(names) > 30:
            raise ApiError(400, "At most 30 services can be requested at once.")
        return {"services": [service(n.rsplit("/", 1)[-1]) for n in names]}

    @fake.route("serviceusage", "GET", "/v1/projects/{project}/services/{service}")
    def get(req: Request):
        return service(req.params["service"])

    def enable_later(names: list[str], response_type: str):
        def finish():
            fake.enabled.update(names)
            fake.activating_since.update(dict.fromkeys(names, time.monotonic()))
            if response_type == RESPONSE_TYPE:
                return {"@type": response_type, "services": [service(n) for n in names]}
            return {"@type": response_type, "service": service(names[0])}

        return operations.start("serviceusage.enable", finish)

    @fake.route("serviceusage", "POST", "/v1/projects/{project}/services:batchEnable")
    def batch_enable(req: Request):
        ids = req.json.get("serviceIds", [])
        if not ids or len(ids) > 20:
            raise ApiError(400, "Between 1 and 20 services can be enabled at once.")
        return enable_later(ids, RESPONSE_TYPE)

    @fake.route("serviceusage", "POST", "/v1/projects/{project}/services/{service}:enable")
    def enable(req: Request):
        return enable_later([req.params["service"]], ENABLE_RESPONSE_TYPE)

    @fake.route("serviceusage", "GET", "/v1/{name=**}")
    def get_operation(req: Request):
        return operations.get(req.params["name"])
