"""Compute Engine v1: global networks and global addresses (their operations: ../compute_operations.py).

Networks and addresses appear when their operation completes (latency kinds `compute.networks` and
`compute.addresses`); an address is RESERVING until then. The `default` network exists from the start, as on
a new project. Test helpers: `fake.compute_networks`, `fake.compute_addresses`, `fake.compute_fail_next(kind,
message)` (the next operation of that kind ends in error).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterator

from tests.fake_gcp.compute_operations import BASE, TIME, ComputeOperations
from tests.fake_gcp.server import PROJECT, ApiError, FakeGoogle, Request

NETWORKS = "/compute/v1/projects/{project}/global/networks"
ADDRESSES = "/compute/v1/projects/{project}/global/addresses"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def network_link(project: str, name: str) -> str:
    return f"{BASE}/projects/{project}/global/networks/{name}"


def short_network(value: str) -> str:
    """`https://…/projects/P/global/networks/N` or `projects/P/global/networks/N` or `global/networks/N` → N."""
    return value.rstrip("/").rsplit("/", 1)[-1]


def check_name(name: str) -> None:
    """Compute's refusal of a name it does not take for a resource."""
    if not _NAME.match(name):
        raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.", legacy_reason="invalid")


def resource_exists(resource: str) -> ApiError:
    """Compute's 409 for an insert of `resource` (its path, `projects/P/global/networks/N`), whose name is in use."""
    return ApiError(409, f"The resource '{resource}' already exists", legacy_reason="alreadyExists")


def resource_missing(resource: str) -> ApiError:
    """Compute's 404 for `resource` (its path, or the name a method was given)."""
    return ApiError(404, f"The resource '{resource}' was not found", legacy_reason="notFound")


def reserved_ranges(fake: FakeGoogle, network: str) -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """The ranges reserved on `network` (global addresses with a prefix, such as the private services range): the
    address's name and its block."""
    for address in fake.state.get("compute_addresses", {}).values():
        if short_network(address.get("network", "")) == network and address.get("prefixLength"):
            yield address["name"], ipaddress.ip_network(f"{address['address']}/{address['prefixLength']}", strict=False)


def register(fake: FakeGoogle) -> None:
    networks: dict[str, dict] = fake.state.setdefault("compute_networks", {})
    addresses: dict[str, dict] = fake.state.setdefault("compute_addresses", {})
    operations = ComputeOperations(fake, "global", 7000000000)
    next_block = iter(range(100, 250))

    def make_network(name: str, project: str = PROJECT, *, auto: bool = True, description: str = "") -> dict:
        network = {
            "kind": "compute#network",
            "id": str(5000000000 + int(fake.next_id())),
            "creationTimestamp": TIME,
            "name": name,
            "description": description,
            "selfLink": network_link(project, name),
            "autoCreateSubnetworks": auto,
            "routingConfig": {"routingMode": "REGIONAL"},
            "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL",
            "peerings": [],
        }
        if description == "":
            network.pop("description")
        return network

    networks["default"] = make_network("default")

    def operation(project: str, kind: str, op_type: str, target: str, finish) -> dict:
        return operations.start(project, kind, op_type, target, finish)

    # -- networks -----------------------------------------------------------------------------------------
    # Option: the `default` network appears only after this many reads answered 404, as when Compute has just
    # been enabled (https://github.com/GoogleCloudPlatform/magic-modules/issues/18826). 0: it is there at once.
    fake.compute_default_network_lag = 0

    @fake.route("compute", "GET", NETWORKS + "/{network}")
    def get_network(req: Request):
        network = networks.get(req.params["network"])
        with fake.lock:
            if req.params["network"] == "default" and fake.compute_default_network_lag > 0:
                fake.compute_default_network_lag -= 1
                network = None
        if network is None:
            raise resource_missing(f"projects/{req.params['project']}/global/networks/{req.params['network']}")
        return network

    @fake.route("compute", "GET", NETWORKS)
    def list_networks(req: Request):
        return {"kind": "compute#networkList", "items": list(networks.values())}

    @fake.route("compute", "POST", NETWORKS)
    def insert_network(req: Request):
        body = req.json
        name = body.get("name", "")
        project = req.params["project"]
        check_name(name)
        if name in networks:
            raise resource_exists(f"projects/{project}/global/networks/{name}")
        if "IPv4Range" in body:
            raise ApiError(400, "Legacy networks are not supported.", legacy_reason="invalid")
        auto = bool(body.get("autoCreateSubnetworks", False))

        def finish():
            network = make_network(name, project, auto=auto, description=body.get("description", ""))
            if body.get("routingConfig"):
                network["routingConfig"] = body["routingConfig"]
            networks[name] = network

        return operation(project, "compute.networks", "insert", network_link(project, name), finish)

    @fake.route("compute", "DELETE", NETWORKS + "/{network}")
    def delete_network(req: Request):
        name, project = req.params["network"], req.params["project"]
        network = get_network(req)
        users = [a["name"] for a in addresses.values() if short_network(a.get("network", "")) == name]
        if network.get("peerings") or users:
            raise ApiError(
                400,
                f"The network resource 'projects/{project}/global/networks/{name}' is already being used by "
                f"'{(users or [p['name'] for p in network['peerings']])[0]}'",
                legacy_reason="resourceInUseByAnotherResource",
            )
        return operation(project, "compute.networks", "delete", network_link(project, name), lambda: networks.pop(name))

    # -- global addresses ---------------------------------------------------------------------------------
    def address_link(project: str, name: str) -> str:
        return f"{BASE}/projects/{project}/global/addresses/{name}"

    @fake.route("compute", "GET", ADDRESSES + "/{address}")
    def get_address(req: Request):
        address = addresses.get(req.params["address"])
        if address is None:
            raise resource_missing(f"projects/{req.params['project']}/global/addresses/{req.params['address']}")
        return address

    @fake.route("compute", "GET", ADDRESSES)
    def list_addresses(req: Request):
        return {"kind": "compute#addressList", "items": list(addresses.values())}

    @fake.route("compute", "POST", ADDRESSES)
    def insert_address(req: Request):
        body = req.json
        name = body.get("name", "")
        project = req.params["project"]
        check_name(name)
        if name in addresses:
            raise resource_exists(f"projects/{project}/global/addresses/{name}")
        purpose = body.get("purpose", "")
        if purpose == "VPC_PEERING":
            if body.get("addressType") != "INTERNAL":
                raise ApiError(400, "Invalid value for field 'resource.addressType': must be INTERNAL for VPC_PEERING.")
            if not body.get("prefixLength"):
                raise ApiError(400, "Invalid value for field 'resource.prefixLength': required for VPC_PEERING.")
            network = short_network(body.get("network", ""))
            if network not in networks:
                raise resource_missing(f"projects/{project}/global/networks/{network}")
        prefix = int(body.get("prefixLength", 32))
        start = body.get("address") or f"10.{next(next_block)}.0.0"
        try:
            ipaddress.ip_network(f"{start}/{prefix}", strict=True)
        except ValueError as e:
            raise ApiError(400, f"Invalid value for field 'resource.address': '{start}'. {e}") from e
        address = {
            "kind": "compute#address",
            "id": str(8000000000 + int(fake.next_id())),
            "creationTimestamp": TIME,
            "name": name,
            "description": body.get("description", ""),
            "address": start,
            "prefixLength": prefix,
            "status": "RESERVING",
            "selfLink": address_link(project, name),
            "networkTier": "PREMIUM",
            "labelFingerprint": "42WmSpB8rSM=",
            "ipVersion": "IPV4",
            "addressType": body.get("addressType", "EXTERNAL"),
            "purpose": purpose,
        }
        if body.get("network"):
            address["network"] = network_link(project, short_network(body["network"]))
        if body.get("labels"):
            address["labels"] = body["labels"]
        addresses[name] = address

        def finish():
            address["status"] = "RESERVED"

        def failed_cleanup():
            if address["status"] == "RESERVING":
                addresses.pop(name, None)

        op = operation(project, "compute.addresses", "insert", address_link(project, name), finish)
        fake.after("compute.addresses", failed_cleanup)
        return op

    @fake.route("compute", "POST", ADDRESSES + "/{resource}/setLabels")
    def set_address_labels(req: Request):
        # globalAddresses.setLabels replaces the labels; a stale labelFingerprint is refused with 412
        # (https://cloud.google.com/compute/docs/reference/rest/v1/globalAddresses/setLabels).
        address = addresses.get(req.params["resource"])
        if address is None:
            raise resource_missing(req.params["resource"])
        body = req.json
        if body.get("labelFingerprint") != address["labelFingerprint"]:
            raise ApiError(
                412,
                "Labels fingerprint either invalid or resource labels have changed",
                legacy_reason="conditionNotMet",
            )

        def finish():
            address["labels"] = dict(body.get("labels", {}))
            address["labelFingerprint"] = base64.b64encode(fake.next_id().encode()).decode()

        return operation(req.params["project"], "compute.addresses", "setLabels", address["selfLink"], finish)

    @fake.route("compute", "DELETE", ADDRESSES + "/{address}")
    def delete_address(req: Request):
        address = get_address(req)
        name, project = address["name"], req.params["project"]
        for connection in fake.state.get("sn_connections", {}).values():
            if name in connection["reservedPeeringRanges"]:
                raise ApiError(
                    400,
                    f"The address resource 'projects/{project}/global/addresses/{name}' is already being used by "
                    f"'{connection['peering']}'",
                    legacy_reason="resourceInUseByAnotherResource",
                )
        return operation(project, "compute.addresses", "delete", address["selfLink"], lambda: addresses.pop(name))

    fake.compute_networks = networks
    fake.compute_addresses = addresses
    fake.compute_fail_next = operations.fail_next
    fake.compute_new_network = make_network
