"""Direct VPC egress (`--vpc-egress direct`): the subnet Cloud Run instances take their IPs from (the connector a
switch from `connector` leaves behind is `connector.RetiredConnector`).

The subnet: on an auto-mode network (the `default` one) the region's subnet, named like the network, which
Google made with the network; on a custom-mode network `--egress-subnet`, made by the tool with
`--egress-subnet-range` once that range is checked against the live subnets of the network, the private
services range and the connector range. The Cloud Run service agent holds roles/run.serviceAgent by default,
which has what Direct VPC egress needs on a subnet of the same project (compute.subnetworks.use, ...), and the
server's own service account needs nothing more (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import PENDING, Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.steps.network import MANAGED_DESCRIPTION, network_path, short_link, wait_compute

DIRECT = "direct"
SUBNET_EFFECTS = {
    "ipCidrRange": Effect(Impact.IMPOSSIBLE, "a subnet's range cannot be changed"),
    "network": Effect(Impact.IMPOSSIBLE, "a subnet cannot move to another network"),
}


def is_direct(ctx: StepContext) -> bool:
    return getattr(ctx.settings, "vpc_egress", "connector") == DIRECT


class EgressSubnet(Resource):
    kind = "egress subnet"
    effects = SUBNET_EFFECTS

    def __init__(self, ctx: StepContext) -> None:
        self.network = ctx.outputs.get("network.name") or ctx.settings.network
        self._compute = ctx.clients.compute()
        super().__init__(ctx, ctx.settings.egress_subnet)
        self.auto_mode: bool | None = None  # known once the network is read

    @property
    def label(self) -> str:
        # The subnet's name is known once the network is read (an auto-mode network's is the network's).
        return f"egress subnet on {self.network}"

    def _network(self) -> dict | None:
        try:
            return self.ctx.call(
                "compute", lambda: execute(self._compute.networks().get(project=self.ctx.project, network=self.network))
            )
        except gexc.NotFound:
            return None

    def _get(self, name: str) -> dict | None:
        subnets = self._compute.subnetworks()
        try:
            return self.ctx.call(
                "compute",
                lambda: execute(subnets.get(project=self.ctx.project, region=self.ctx.region, subnetwork=name)),
            )
        except gexc.NotFound:
            return None

    def read(self) -> dict | None:
        network = self._network()
        if network is None:
            return None  # the network step makes it (custom-mode): no subnet yet
        self.auto_mode = bool(network.get("autoCreateSubnetworks"))
        if self.auto_mode:
            self.name = self.network  # Google's regional subnet of an auto-mode network
        return self._get(self.name)

    def drift(self, current: dict) -> list[str]:
        fields = []
        if short_link(current.get("network", "")).rsplit("/", 1)[-1] != self.network:
            fields.append("network")
        if not self.auto_mode and current.get("ipCidrRange") != self.ctx.settings.egress_subnet_range:
            fields.append("ipCidrRange")
        return fields

    def cannot_change(self, current: dict, fields: list[str]) -> MlflowGcpError:
        return MlflowGcpError(
            f"The subnet {self.name} exists in {self.ctx.region} with range {current.get('ipCidrRange')} on network "
            f"{short_link(current.get('network', '')).rsplit('/', 1)[-1]}, not {self.ctx.settings.egress_subnet_range}"
            f" on {self.network}; a subnet cannot change either in place.",
            f"Pass --egress-subnet-range {current.get('ipCidrRange')} to use it as it is, or --egress-subnet NAME "
            "for another subnet.",
        )

    def _taken_ranges(self) -> list[tuple[str, ipaddress.IPv4Network]]:
        """Ranges of the network a new subnet must not overlap: its subnets (every region), the private services
        range, the connector's range."""
        taken = []
        subnets = self._compute.subnetworks()
        for region in {self.ctx.region}:
            listed = self.ctx.call(
                "compute",
                lambda r=region: execute(
                    subnets.list(project=self.ctx.project, region=r, filter=f'network="{self._network_link()}"')
                ),
            )
            for sub in listed.get("items", []):
                if short_link(sub.get("network", "")).rsplit("/", 1)[-1] == self.network:
                    taken.append((f"the subnet {sub['name']}", ipaddress.ip_network(sub["ipCidrRange"])))
        peering = self.ctx.outputs.get("network.peering_range")
        if peering and peering != PENDING and "None" not in peering:
            taken.append(("the private services range", ipaddress.ip_network(peering, strict=False)))
        taken.append(("the connector range", ipaddress.ip_network(self.ctx.settings.connector_range)))
        return taken

    def _network_link(self) -> str:
        return f"https://www.googleapis.com/compute/v1/{network_path(self.ctx.project, self.network)}"

    def create(self) -> None:
        if self.auto_mode:
            raise MlflowGcpError(
                f"The auto-mode network {self.network} has no subnet in {self.ctx.region}.",
                "Recreate the network's subnets, or use --network NAME with a custom-mode network the tool makes "
                "a subnet in.",
            )
        wanted = ipaddress.ip_network(self.ctx.settings.egress_subnet_range)
        for what, block in self._taken_ranges():
            if wanted.overlaps(block):
                raise MlflowGcpError(
                    f"The egress subnet range {wanted} overlaps {what} ({block}) on the network {self.network}.",
                    "Pick a free private range of /26 or larger with --egress-subnet-range.",
                )
        body = {
            "name": self.name,
            "network": network_path(self.ctx.project, self.network),
            "ipCidrRange": str(wanted),
            "description": f"Direct VPC egress of Cloud Run. {MANAGED_DESCRIPTION}",
            "privateIpGoogleAccess": True,
        }
        subnets = self._compute.subnetworks()
        try:
            operation = self.ctx.call(
                "compute", lambda: execute(subnets.insert(project=self.ctx.project, region=self.ctx.region, body=body))
            )
        except gexc.Conflict:
            return
        except gexc.BadRequest as e:
            raise MlflowGcpError(
                f"Google refused the subnet {self.name}: {e.message}",
                "Pick a free private range of /26 or larger with --egress-subnet-range.",
            ) from e
        wait_compute(self.ctx, operation, f"Creating the subnet {self.name}", regional=True)

    def outputs(self, current: dict) -> dict[str, str]:
        return {"egress.network": self.network, "egress.subnetwork": current["name"]}

    def details(self, current: dict) -> dict[str, str]:
        return {
            "subnet": current.get("name", ""),
            "range": current.get("ipCidrRange", ""),
            "network": self.network,
            "made by": "Google (auto-mode network)"
            if self.auto_mode
            else ("this tool" if MANAGED_DESCRIPTION in current.get("description", "") else "someone else"),
        }

    def delete(self, current: dict) -> None:
        if self.auto_mode or MANAGED_DESCRIPTION not in current.get("description", ""):
            self.ctx.log(f"keeping the subnet {current['name']}: this tool did not create it")
            return
        subnets = self._compute.subnetworks()
        operation = self.ctx.call(
            "compute",
            lambda: execute(
                subnets.delete(project=self.ctx.project, region=self.ctx.region, subnetwork=current["name"])
            ),
        )
        wait_compute(self.ctx, operation, f"Deleting the subnet {current['name']}", regional=True)


def resources(ctx: StepContext) -> Iterator[Resource]:
    yield EgressSubnet(ctx)
