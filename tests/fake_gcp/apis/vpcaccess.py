"""Serverless VPC Access v1: connectors and their google.longrunning operations (latency kinds
`vpcaccess.create`, `vpcaccess.update`, `vpcaccess.delete`).

As Google does: a connector is CREATING / UPDATING / DELETING until its operation completes; the range must be
a /28 that overlaps no other connector, subnetwork or reserved range of the network (400 otherwise); instance
bounds are required and cannot be sent together with throughput bounds; only instances and machine type can
be patched (with an updateMask). Test helpers: `fake.vpc_connectors` (by full name),
`fake.vpc_fail_next(kind, message)` (the next operation of that kind ends in error).
"""

from __future__ import annotations

import ipaddress
import re

from tests.fake_gcp.apis.compute import reserved_ranges, short_network
from tests.fake_gcp.server import ApiError, FakeGoogle, LongRunningStore, Request

CONNECTORS = "/v1/projects/{project}/locations/{location}/connectors"
CONNECTOR_TYPE = "type.googleapis.com/google.cloud.vpcaccess.v1.Connector"
METADATA_TYPE = "type.googleapis.com/google.cloud.vpcaccess.v1.OperationMetadata"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
MACHINE_TYPES = {"f1-micro": 100, "e2-micro": 100, "e2-standard-4": 1000}
UPDATABLE = {"minInstances", "maxInstances", "machineType", "minThroughput", "maxThroughput"}
_ID = re.compile(r"^[a-z][-a-z0-9]{0,23}[a-z0-9]$")
TIME = "2026-11-26T00:00:00Z"


def register(fake: FakeGoogle) -> None:
    connectors: dict[str, dict] = fake.state.setdefault("vpc_connectors", {})
    operations = LongRunningStore(fake, "vpcaccess", "")
    failures: dict[str, list[str]] = {}

    def parent(req: Request) -> str:
        return f"projects/{req.params['project']}/locations/{req.params['location']}"

    def existing(req: Request) -> dict:
        name = f"{parent(req)}/connectors/{req.params['connector']}"
        if name not in connectors:
            raise ApiError(404, f'Resource "{name}" was not found', status="NOT_FOUND")
        return connectors[name]

    def start(req: Request, kind: str, method: str, target: str, finish) -> dict:
        planned = failures.get(kind, [])
        message = planned.pop(0) if planned else None

        def run():
            if message is not None:
                raise ApiError(400, message)
            return finish()

        metadata = {
            "@type": METADATA_TYPE,
            "method": f"google.cloud.vpcaccess.v1.VpcAccessService.{method}",
            "createTime": TIME,
            "target": target,
        }
        name = f"{parent(req)}/operations/{fake.next_id()}-{method.lower()}"
        return operations.start(kind, run, metadata=metadata, name=name)

    def check_bounds(connector: dict) -> None:
        has_instances = "minInstances" in connector or "maxInstances" in connector
        has_throughput = "minThroughput" in connector or "maxThroughput" in connector
        if has_instances and has_throughput:
            raise ApiError(400, "Only one of min_instances/max_instances or min_throughput/max_throughput may be set.")
        if not has_instances and not has_throughput:
            raise ApiError(400, "Connector scaling bounds are required: set min_instances and max_instances.")
        machine = connector.get("machineType", "e2-micro")
        if machine not in MACHINE_TYPES:
            raise ApiError(400, f"Invalid machine type {machine}: supported are {', '.join(MACHINE_TYPES)}.")
        if has_instances:
            low, high = int(connector.get("minInstances", 0)), int(connector.get("maxInstances", 0))
            if not 2 <= low < high <= 10:
                raise ApiError(400, "min_instances must be at least 2 and less than max_instances, at most 10.")

    def derived(connector: dict) -> dict:
        per = MACHINE_TYPES[connector.get("machineType", "e2-micro")]
        out = dict(connector)
        out.setdefault("machineType", "e2-micro")
        if "minInstances" in out:
            out["minThroughput"] = int(out["minInstances"]) * per
            out["maxThroughput"] = int(out["maxInstances"]) * per
        else:
            out["minInstances"] = max(2, int(out["minThroughput"]) // per)
            out["maxInstances"] = max(out["minInstances"] + 1, int(out["maxThroughput"]) // per)
        return out

    def overlaps(network: str, cidr: ipaddress.IPv4Network, own: str) -> str | None:
        for name, other in connectors.items():
            if name != own and other.get("ipCidrRange") and cidr.overlaps(ipaddress.ip_network(other["ipCidrRange"])):
                return f"connector {name}"
        for reserved, block in reserved_ranges(fake, network):
            if cidr.overlaps(block):
                return f"reserved range {reserved} ({block})"
        for sub in fake.state.get("compute_subnetworks", {}).values():
            if short_network(sub.get("network", "")) == network and cidr.overlaps(
                ipaddress.ip_network(sub["ipCidrRange"])
            ):
                return f"subnetwork {sub['name']}"
        return None

    @fake.route("vpcaccess", "GET", CONNECTORS + "/{connector}")
    def get(req: Request):
        return existing(req)

    @fake.route("vpcaccess", "GET", CONNECTORS)
    def list_(req: Request):
        items = [c for n, c in connectors.items() if n.startswith(parent(req) + "/")]
        return {"connectors": items} if items else {}

    @fake.route("vpcaccess", "POST", CONNECTORS)
    def create(req: Request):
        connector_id = req.query.get("connectorId", "")
        if not _ID.match(connector_id):
            raise ApiError(400, f"Invalid connector id '{connector_id}': at most 25 lowercase letters, digits, '-'.")
        name = f"{parent(req)}/connectors/{connector_id}"
        if name in connectors:
            raise ApiError(409, f'Resource "{name}" already exists', status="ALREADY_EXISTS")
        body = {k: v for k, v in req.json.items() if k not in ("name", "state", "connectedProjects")}
        network = body.get("network", "")
        if body.get("subnet"):
            raise ApiError(400, "Subnet connectors are not supported by this fake.")
        if not network:
            raise ApiError(400, "Network must be specified when ip_cidr_range is set.")
        if short_network(network) not in fake.state.get("compute_networks", {}):
            raise ApiError(400, f"Network {network} does not exist in project {req.params['project']}.")
        try:
            cidr = ipaddress.ip_network(body.get("ipCidrRange", ""), strict=True)
        except ValueError as e:
            raise ApiError(400, f"Invalid IP CIDR range was provided: {body.get('ipCidrRange')!r}.") from e
        if cidr.prefixlen != 28:
            raise ApiError(400, f"Invalid IP CIDR range was provided: {cidr} must be a /28 range.")
        clash = overlaps(short_network(network), cidr, name)
        if clash:
            raise ApiError(
                400,
                f"The IP range {cidr} overlaps with {clash} in network {network}. Use an unused /28 range.",
            )
        check_bounds(body)
        connector = derived({"name": name, **body, "state": "CREATING"})
        connectors[name] = connector

        def finish():
            connector["state"] = "READY"
            connector["connectedProjects"] = [req.params["project"]]
            return {"@type": CONNECTOR_TYPE, **connector}

        def fail_cleanup():
            if connector["state"] == "CREATING":
                connector["state"] = "ERROR"

        op = start(req, "vpcaccess.create", "CreateConnector", name, finish)
        fake.after("vpcaccess.create", fail_cleanup)
        fake.tick()
        return op

    @fake.route("vpcaccess", "PATCH", CONNECTORS + "/{connector}")
    def patch(req: Request):
        connector = existing(req)
        mask = [m for m in req.query.get("updateMask", "").split(",") if m]
        if not mask:
            raise ApiError(400, "update_mask is required.")
        snake = {"min_instances": "minInstances", "max_instances": "maxInstances", "machine_type": "machineType"}
        fields = [snake.get(m, m) for m in mask]
        bad = [m for m in fields if m not in UPDATABLE]
        if bad:
            raise ApiError(400, f"Field(s) {', '.join(bad)} cannot be updated.")
        if connector["state"] != "READY":
            raise ApiError(400, f"Connector is in state {connector['state']}.", status="FAILED_PRECONDITION")
        body = req.json
        merged = {k: v for k, v in connector.items() if k not in ("minThroughput", "maxThroughput")}
        merged.update({f: body[f] for f in fields if f in body})
        check_bounds(merged)
        connector["state"] = "UPDATING"

        def finish():
            connector.update(derived(merged))
            connector["state"] = "READY"
            return {"@type": CONNECTOR_TYPE, **connector}

        return start(req, "vpcaccess.update", "UpdateConnector", connector["name"], finish)

    @fake.route("vpcaccess", "DELETE", CONNECTORS + "/{connector}")
    def delete(req: Request):
        connector = existing(req)
        connector["state"] = "DELETING"

        def finish():
            connectors.pop(connector["name"], None)
            return {"@type": EMPTY_TYPE}

        return start(req, "vpcaccess.delete", "DeleteConnector", connector["name"], finish)

    @fake.route("vpcaccess", "GET", "/v1/projects/{project}/locations/{location}/operations/{operation}")
    def get_operation(req: Request):
        return operations.get(f"{parent(req)}/operations/{req.params['operation']}")

    def fail_next(kind: str, message: str) -> None:
        failures.setdefault(kind, []).append(message)

    fake.vpc_connectors = connectors
    fake.vpc_fail_next = fail_next
