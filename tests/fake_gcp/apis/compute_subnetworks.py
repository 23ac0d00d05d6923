"""Compute Engine v1: regional subnetworks, latency kind `compute.subnetworks` (operations: ../compute_operations.py).

As Google does (https://cloud.google.com/vpc/docs/subnets): an auto-mode network has one subnet per region,
named like the network, with the region's fixed range (https://cloud.google.com/vpc/docs/subnets#ip-ranges);
a custom-mode network has only the subnets made in it. A new subnet's range must not overlap another subnet of
the network, a reserved (VPC_PEERING) range or a connector's range (400 otherwise). A subnet with Cloud Run
instances on it cannot be deleted. Test helpers: `fake.compute_subnetworks` (by `region/name`),
`fake.compute_add_subnetwork(...)`.
"""

from __future__ import annotations

import ipaddress
import re

from tests.fake_gcp.apis.compute import check_name, network_link, reserved_ranges, resource_exists, short_network
from tests.fake_gcp.compute_operations import BASE, TIME, ComputeOperations
from tests.fake_gcp.server import PROJECT, ApiError, FakeGoogle, Request, not_found

SUBNETS = "/compute/v1/projects/{project}/regions/{region}/subnetworks"
# Auto-mode ranges of a few regions (https://cloud.google.com/vpc/docs/subnets#ip-ranges).
AUTO_RANGES = {
    "us-central1": "10.128.0.0/20",
    "europe-west1": "10.132.0.0/20",
    "us-east1": "10.142.0.0/20",
    "europe-west4": "10.164.0.0/20",
    "europe-west9": "10.200.0.0/20",
}


def register(fake: FakeGoogle) -> None:
    subnets: dict[str, dict] = fake.state.setdefault("compute_subnetworks", {})
    networks: dict[str, dict] = fake.state.setdefault("compute_networks", {})
    operations = ComputeOperations(fake, "regions/{region}", 7100000000)

    def make(project: str, region: str, name: str, network: str, cidr: str, description: str = "") -> dict:
        subnet = {
            "kind": "compute#subnetwork",
            "id": str(6000000000 + int(fake.next_id())),
            "creationTimestamp": TIME,
            "name": name,
            "network": network_link(project, network),
            "ipCidrRange": cidr,
            "gatewayAddress": str(next(ipaddress.ip_network(cidr).hosts())),
            "region": f"{BASE}/projects/{project}/regions/{region}",
            "selfLink": f"{BASE}/projects/{project}/regions/{region}/subnetworks/{name}",
            "privateIpGoogleAccess": False,
            "purpose": "PRIVATE",
            "stackType": "IPV4_ONLY",
            "fingerprint": "abc=",
        }
        if description:
            subnet["description"] = description
        return subnet

    def auto_subnets(project: str, region: str) -> None:
        """Auto-mode networks have their regional subnet: made on first look, as if always there."""
        for name, network in list(networks.items()):
            key = f"{region}/{name}"
            if network.get("autoCreateSubnetworks") and key not in subnets and region in AUTO_RANGES:
                subnets[key] = make(project, region, name, name, AUTO_RANGES[region])

    def add(name: str, cidr: str, *, network: str = "default", region: str = "europe-west1", project: str = PROJECT):
        subnets[f"{region}/{name}"] = make(project, region, name, network, cidr)
        return subnets[f"{region}/{name}"]

    def conflict(network: str, cidr: ipaddress.IPv4Network, region: str) -> str | None:
        for sub in subnets.values():
            if short_network(sub["network"]) == network and cidr.overlaps(ipaddress.ip_network(sub["ipCidrRange"])):
                where = sub["region"].rsplit("/", 1)[-1]
                return f"conflicts with existing subnetwork '{sub['name']}' in region '{where}'"
        for name, block in reserved_ranges(fake, network):
            if cidr.overlaps(block):
                return f"conflicts with the reserved range '{name}' ({block})"
        for connector in fake.state.get("vpc_connectors", {}).values():
            same = short_network(connector.get("network", "")) == network and connector.get("ipCidrRange")
            if same and cidr.overlaps(ipaddress.ip_network(connector["ipCidrRange"])):
                return f"conflicts with the range of the VPC connector {connector['name']}"
        return None

    def operation(project: str, region: str, op_type: str, target: str, finish) -> dict:
        return operations.start(project, "compute.subnetworks", op_type, target, finish, region=region)

    def missing(req: Request) -> ApiError:
        p = req.params
        return not_found(f"The resource 'projects/{p['project']}/regions/{p['region']}/subnetworks/{p['subnetwork']}'")

    @fake.route("compute", "GET", SUBNETS + "/{subnetwork}")
    def get(req: Request):
        auto_subnets(req.params["project"], req.params["region"])
        subnet = subnets.get(f"{req.params['region']}/{req.params['subnetwork']}")
        if subnet is None:
            raise missing(req)
        return subnet

    @fake.route("compute", "GET", SUBNETS)
    def list_(req: Request):
        region = req.params["region"]
        auto_subnets(req.params["project"], region)
        items = [s for k, s in subnets.items() if k.startswith(region + "/")]
        wanted = req.query.get("filter", "")
        match = re.match(r'^network\s*=\s*"?([^"]+)"?$', wanted.strip())
        if match:
            items = [s for s in items if short_network(s["network"]) == short_network(match.group(1))]
        return {"kind": "compute#subnetworkList", "items": items} if items else {"kind": "compute#subnetworkList"}

    @fake.route("compute", "POST", SUBNETS)
    def insert(req: Request):
        body, project, region = req.json, req.params["project"], req.params["region"]
        name = body.get("name", "")
        check_name(name)
        network = short_network(body.get("network", ""))
        if network not in networks:
            raise ApiError(
                400,
                f"Invalid value for field 'resource.network': '{body.get('network', '')}'. The referenced network "
                "resource cannot be found.",
                legacy_reason="invalid",
            )
        try:
            cidr = ipaddress.ip_network(body.get("ipCidrRange", ""), strict=True)
        except ValueError:
            raise ApiError(
                400,
                f"Invalid value for field 'resource.ipCidrRange': '{body.get('ipCidrRange')}'.",
                legacy_reason="invalid",
            ) from None
        auto_subnets(project, region)
        if f"{region}/{name}" in subnets:
            raise resource_exists(f"projects/{project}/regions/{region}/subnetworks/{name}")
        why = conflict(network, cidr, region)
        if why:
            raise ApiError(400, f"Invalid IPCidrRange: {cidr} {why}.", legacy_reason="invalid")
        target = f"{BASE}/projects/{project}/regions/{region}/subnetworks/{name}"

        def finish():
            subnets[f"{region}/{name}"] = make(project, region, name, network, str(cidr), body.get("description", ""))
            # Google keeps what the insert asked for (the field defaults to false).
            subnets[f"{region}/{name}"]["privateIpGoogleAccess"] = bool(body.get("privateIpGoogleAccess", False))

        return operation(project, region, "insert", target, finish)

    @fake.route("compute", "DELETE", SUBNETS + "/{subnetwork}")
    def delete(req: Request):
        subnet = get(req)
        project, region = req.params["project"], req.params["region"]
        users = [
            s["name"]
            for s in fake.state.get("run_services", {}).values()
            if any(
                i.get("subnetwork", "").rsplit("/", 1)[-1] == subnet["name"]
                for i in (s.get("template", {}).get("vpcAccess") or {}).get("networkInterfaces", [])
            )
        ]
        if users:
            raise ApiError(
                400,
                f"The subnetwork resource '{subnet['selfLink'].split('/v1/')[-1]}' is already being used by "
                f"'{users[0]}'",
                legacy_reason="resourceInUseByAnotherResource",
            )
        key = f"{region}/{subnet['name']}"
        return operation(project, region, "delete", subnet["selfLink"], lambda: subnets.pop(key))

    fake.compute_subnetworks = subnets
    fake.compute_add_subnetwork = add
