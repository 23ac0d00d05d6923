"""Service Networking v1: private services connections (`services/servicenetworking.googleapis.com/connections`)
and their google.longrunning operations (`operations/pssn.…`, latency kind `servicenetworking.connect`).

As Google does: a connection names the consumer network with the project number; every reserved range must be
a RESERVED global address with purpose VPC_PEERING on that network; CreateConnection cannot change the ranges
of an existing connection (use the patch); removing a range or the connection while Cloud SQL instances use
it is refused unless forced. The peering `servicenetworking-googleapis-com` appears on the compute network.
Test helpers: `fake.sn_connections` (by network name), `fake.sn_connect(network, ranges)` (a connection
someone else made).
"""

from __future__ import annotations

from collections.abc import Callable

from tests.fake_gcp.apis.compute import short_network
from tests.fake_gcp.server import PROJECT, PROJECT_NUMBER, ApiError, FakeGoogle, LongRunningStore, Request

PEERING = "servicenetworking-googleapis-com"
CONNECTION_TYPE = "type.googleapis.com/google.cloud.servicenetworking.v1.Connection"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"


def register(fake: FakeGoogle) -> None:
    connections: dict[str, dict] = fake.state.setdefault("sn_connections", {})
    # Option: Cloud SQL stays registered as a producer on the connection for days after its last instance is
    # deleted, and deleting the connection is refused meanwhile (hashicorp/terraform-provider-google#16275).
    fake.sn_producer_lingers = False
    operations = LongRunningStore(fake, "servicenetworking", "operations")

    def network_of(value: str) -> str:
        parts = value.strip("/").split("/")
        if len(parts) != 5 or parts[0] != "projects" or parts[2:4] != ["global", "networks"]:
            raise ApiError(400, f"Invalid network name '{value}': expected projects/{{project}}/global/networks/N.")
        if parts[1] not in (PROJECT, PROJECT_NUMBER):
            raise ApiError(403, f"Permission denied on project {parts[1]}.", reason="IAM_PERMISSION_DENIED")
        name = parts[4]
        if name not in fake.state.get("compute_networks", {}):
            raise ApiError(404, f"Network '{value}' not found.", status="NOT_FOUND")
        return name

    def check_ranges(network: str, ranges: list[str]) -> None:
        if not ranges:
            raise ApiError(400, "At least one reserved peering range is required.")
        addresses = fake.state.get("compute_addresses", {})
        for name in ranges:
            address = addresses.get(name)
            if (
                address is None
                or address.get("purpose") != "VPC_PEERING"
                or short_network(address.get("network", "")) != network
                or address.get("status") != "RESERVED"
            ):
                raise ApiError(
                    400,
                    f"Allocated IP range '{name}' not found in network.",
                    status="FAILED_PRECONDITION",
                    reason="RANGES_NOT_RESERVED",
                    domain="servicenetworking.googleapis.com",
                )

    def sql_users(network: str) -> list[str]:
        return [
            name
            for name, instance in fake.state.get("sql_instances", {}).items()
            if short_network(instance["settings"].get("ipConfiguration", {}).get("privateNetwork", "")) == network
        ]

    def set_peering(network: str, present: bool) -> None:
        compute_network = fake.state["compute_networks"].get(network)
        if compute_network is None:
            return
        peerings = [p for p in compute_network.get("peerings", []) if p["name"] != PEERING]
        if present:
            peerings.append(
                {
                    "name": PEERING,
                    "network": "https://www.googleapis.com/compute/v1/projects/sn-tenant-1234/global/networks/"
                    "servicenetworking",
                    "state": "ACTIVE",
                    "stateDetails": "[2026-11-26T00:00:00.000-08:00]: Connected.",
                    "autoCreateRoutes": True,
                    "exportCustomRoutes": False,
                    "importCustomRoutes": False,
                    "exchangeSubnetRoutes": True,
                }
            )
        compute_network["peerings"] = peerings

    def connect(network: str, ranges: list[str]) -> dict:
        connection = {
            "network": f"projects/{PROJECT_NUMBER}/global/networks/{network}",
            "reservedPeeringRanges": list(ranges),
            "peering": PEERING,
            "service": "services/servicenetworking.googleapis.com",
        }
        connections[network] = connection
        set_peering(network, True)
        return connection

    def start(finish: Callable[[], dict]) -> dict:
        """A change of a connection, run as Google runs it: a long-running operation (latency
        `servicenetworking.connect`)."""
        return operations.start("servicenetworking.connect", finish, name=f"operations/pssn.p24-{fake.next_id()}")

    def connecting(network: str, ranges: list[str]) -> dict:
        """The operation that connects `network` with `ranges` (a new connection, or new ranges)."""
        return start(lambda: {"@type": CONNECTION_TYPE, **connect(network, ranges)})

    def check_service(req: Request) -> None:
        if req.params["service"] != "servicenetworking.googleapis.com":
            raise ApiError(404, f"Service '{req.params['service']}' not found.")

    @fake.route("servicenetworking", "GET", "/v1/services/{service}/connections")
    def list_connections(req: Request):
        check_service(req)
        network = req.query.get("network")
        if not network:
            raise ApiError(400, "Network is required.")
        name = network_of(network)
        return {"connections": [dict(connections[name])]} if name in connections else {}

    @fake.route("servicenetworking", "POST", "/v1/services/{service}/connections")
    def create(req: Request):
        check_service(req)
        body = req.json
        name = network_of(body.get("network", ""))
        ranges = list(body.get("reservedPeeringRanges", []))
        check_ranges(name, ranges)
        existing = connections.get(name)
        if existing and sorted(existing["reservedPeeringRanges"]) != sorted(ranges):
            raise ApiError(
                400,
                "Cannot modify allocated ranges in CreateConnection. Please use UpdateConnection.",
                status="FAILED_PRECONDITION",
            )

        return connecting(name, ranges)

    @fake.route("servicenetworking", "PATCH", "/v1/services/{service}/connections/{connection}")
    def patch(req: Request):
        check_service(req)
        body = req.json
        name = network_of(body.get("network", ""))
        ranges = list(body.get("reservedPeeringRanges", []))
        if req.query.get("updateMask", "reservedPeeringRanges") not in (
            "reservedPeeringRanges",
            "reserved_peering_ranges",
        ):
            raise ApiError(400, f"Unsupported update mask '{req.query.get('updateMask')}'.")
        check_ranges(name, ranges)
        existing = connections.get(name)
        if existing is None:
            raise ApiError(404, "Connection not found.", status="NOT_FOUND")
        force = req.query.get("force", "false").lower() == "true"
        removed = set(existing["reservedPeeringRanges"]) - set(ranges)
        if removed and not force and sql_users(name):
            raise ApiError(
                400,
                f"Cannot remove allocated ranges {sorted(removed)}: they are used by producer services. "
                "Set force to true to remove them anyway.",
                status="FAILED_PRECONDITION",
            )

        return connecting(name, ranges)

    @fake.route("servicenetworking", "POST", "/v1/services/{service}/connections/{connection}")
    def delete_connection(req: Request):
        check_service(req)
        name = network_of(req.json.get("consumerNetwork", ""))
        if name not in connections or req.params["connection"] != PEERING:
            raise ApiError(404, "Connection not found.", status="NOT_FOUND")
        if sql_users(name) or fake.sn_producer_lingers:
            raise ApiError(
                400,
                "Failed to delete connection; Producer services (e.g. CloudSQL, Cloud Memstore, etc.) are still "
                "using this connection.",
                status="FAILED_PRECONDITION",
            )

        def finish():
            connections.pop(name, None)
            set_peering(name, False)
            return {"@type": EMPTY_TYPE}

        return start(finish)

    @fake.route("servicenetworking", "GET", "/v1/operations/{name=**}")
    def get_operation(req: Request):
        return operations.get(f"operations/{req.params['name']}")

    fake.sn_connections = connections
    fake.sn_connect = connect
