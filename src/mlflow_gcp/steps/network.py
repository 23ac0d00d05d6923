"""Step `network`: the VPC network and private services access for Cloud SQL.

Three resources: the network (`default`, or a custom-mode network created when `--network` names one that does
not exist), a global address range with purpose VPC_PEERING on it, and the `servicenetworking.googleapis.com`
connection that peers Google's service producer network with it through that range. A connection made by
someone else keeps its ranges: ours is added to them, never swapped in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import PENDING, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.gcp.operations import settled, wait
from mlflow_gcp.labels import deployment_labels, lacks_labels, with_labels

MANAGED_DESCRIPTION = "Managed by mlflow-gcp"
MANAGED_LABELS = {"managed-by": "mlflow-gcp"}
SERVICE = "services/servicenetworking.googleapis.com"
PEERING = "servicenetworking-googleapis-com"
COMPUTE_TIMEOUT = 600.0
CONNECTION_TIMEOUT = 900.0
COMPUTE = "compute.googleapis.com"
# Google creates the `default` network a while after the Compute Engine API is enabled.
DEFAULT_NETWORK = retry.Propagation(
    lambda exc: isinstance(exc, gexc.NotFound),
    180.0,
    "the default network, which Google creates after the Compute Engine API is enabled",
    "https://github.com/GoogleCloudPlatform/magic-modules/issues/18826",
)


def network_path(project: str, network: str) -> str:
    return f"projects/{project}/global/networks/{network}"


def network_link(ctx: StepContext) -> str:
    """`projects/P/global/networks/N` once the network step has run (or could have); in plan mode the
    placeholder while the network does not exist yet."""
    value = ctx.outputs.get("network.self_link")
    if value:
        return value
    return PENDING if ctx.dry_run else network_path(ctx.project, ctx.settings.network)


def short_link(link: str) -> str:
    """A compute link without its host and version: `https://…/compute/v1/projects/P/…` → `projects/P/…`."""
    index = link.find("projects/")
    return link[index:] if index >= 0 else link


def wait_compute(
    ctx: StepContext, operation: dict, what: str, timeout: float = COMPUTE_TIMEOUT, *, regional: bool = False
) -> None:
    """Poll a compute#operation (global, or in the settings' region) until DONE and raise Google's message if it
    ended in error."""
    api = ctx.clients.compute()
    if regional:
        operations, where = api.regionOperations(), {"region": ctx.region}
    else:
        operations, where = api.globalOperations(), {}

    def error_of(op: dict) -> str | None:
        errors = [e.get("message") or e.get("code", "") for e in op.get("error", {}).get("errors", [])]
        if errors:
            return "; ".join(errors)
        if op.get("httpErrorStatusCode"):
            return op.get("httpErrorMessage") or f"HTTP {op['httpErrorStatusCode']}"
        return None

    wait(
        lambda: execute(operations.get(project=ctx.project, operation=operation["name"], **where)),
        is_done=lambda op: op.get("status") == "DONE",
        error_of=error_of,
        what=what,
        timeout=timeout,
        first=operation,
    )


class Network(Resource):
    kind = "VPC network"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.network)
        self._client = ctx.clients.compute().networks()
        self._retry = ctx.retry_predicate("compute")

    def read(self) -> dict | None:
        # Only when this run enabled Compute: otherwise a missing default network was deleted on purpose.
        compute_just_enabled = self.name == "default" and COMPUTE in self.ctx.enabled_now and not self.ctx.dry_run
        try:
            return retry.call(
                lambda: execute(self._client.get(project=self.ctx.project, network=self.name)),
                predicate=self._retry,
                also=(DEFAULT_NETWORK,) if compute_just_enabled else (),
            )
        except gexc.NotFound:
            return None

    def create(self) -> None:
        if self.name == "default":
            raise MlflowGcpError(
                f"The default VPC network does not exist in project {self.ctx.project}.",
                "Pass --network NAME to use (or have the tool create) another network, or recreate the default "
                "network: `gcloud compute networks create default --subnet-mode=auto`.",
            )
        network = {
            "name": self.name,
            "autoCreateSubnetworks": False,
            "description": MANAGED_DESCRIPTION,
            "routingConfig": {"routingMode": "REGIONAL"},
        }
        operation = retry.call(
            lambda: execute(self._client.insert(project=self.ctx.project, body=network)),
            predicate=self._retry,
        )
        wait_compute(self.ctx, operation, f"Creating the VPC network {self.name}")

    def outputs(self, current: Any) -> dict[str, str]:
        return {"network.self_link": network_path(self.ctx.project, self.name), "network.name": self.name}

    def details(self, current: dict) -> dict[str, str]:
        mode = "auto" if current.get("autoCreateSubnetworks") else "custom"
        peerings = ", ".join(p["name"] for p in current.get("peerings", [])) or "none"
        return {"subnet mode": mode, "peerings": peerings}

    def delete(self, current: dict) -> None:
        if self.name == "default" or current.get("description") != MANAGED_DESCRIPTION:
            self.ctx.log(f"keeping the VPC network {self.name}: this tool did not create it")
            return
        operation = retry.call(
            lambda: execute(self._client.delete(project=self.ctx.project, network=self.name)), predicate=self._retry
        )
        wait_compute(self.ctx, operation, f"Deleting the VPC network {self.name}")


class PeeringRange(Resource):
    """The global internal range Google's service producer network (Cloud SQL) takes its IPs from."""

    kind = "address range"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.peering_range)
        self._client = ctx.clients.compute().globalAddresses()
        self._retry = ctx.retry_predicate("compute")
        self.network = network_link(ctx)

    def _get(self) -> dict | None:
        try:
            return retry.call(
                lambda: execute(self._client.get(project=self.ctx.project, address=self.name)),
                predicate=self._retry,
            )
        except gexc.NotFound:
            return None

    def read(self) -> Any | None:
        return settled(
            self._get,
            busy=lambda a: a.get("status") == "RESERVING",
            what=f"Reserving the address range {self.name}",
            timeout=COMPUTE_TIMEOUT,
            wait_now=not self.ctx.dry_run,
        )

    def drift(self, current: dict) -> list[str]:
        fields = []
        if current.get("purpose") != "VPC_PEERING":
            fields.append("purpose")
        if current.get("addressType") != "INTERNAL":
            fields.append("addressType")
        if current.get("prefixLength") != self.ctx.settings.peering_prefix_length:
            fields.append("prefixLength")
        if self.network != PENDING and short_link(current.get("network", "")) != self.network:
            fields.append("network")
        # Its label is how `down` knows this tool made it: put back when removed from a range we made (its
        # description says so), never added to a range made by someone else.
        labels = current.get("labels", {}) or {}
        if MANAGED_DESCRIPTION in current.get("description", "") and lacks_labels(labels, self.ctx.settings):
            fields.append("labels")
        return fields

    def create(self) -> None:
        address = {
            "name": self.name,
            "purpose": "VPC_PEERING",
            "addressType": "INTERNAL",
            "prefixLength": self.ctx.settings.peering_prefix_length,
            "network": self.network,
            "description": f"Private services access range for Cloud SQL. {MANAGED_DESCRIPTION}.",
            "labels": deployment_labels(self.ctx.settings),
        }
        operation = retry.call(
            lambda: execute(self._client.insert(project=self.ctx.project, body=address)),
            predicate=self._retry,
        )
        wait_compute(self.ctx, operation, f"Reserving the address range {self.name}")

    def update(self, current: dict, fields: list[str]) -> None:
        if "labels" in fields:
            body = {
                "labels": with_labels(current.get("labels"), self.ctx.settings),
                "labelFingerprint": current.get("labelFingerprint", ""),
            }
            operation = retry.call(
                lambda: execute(self._client.setLabels(project=self.ctx.project, resource=self.name, body=body)),
                predicate=self._retry,
            )
            wait_compute(self.ctx, operation, f"Labelling the address range {self.name}")
            fields = [f for f in fields if f != "labels"]
            if not fields:
                return
        wanted = {
            "purpose": "VPC_PEERING",
            "addressType": "INTERNAL",
            "prefixLength": f"/{self.ctx.settings.peering_prefix_length}",
            "network": self.network,
        }
        live = {
            "purpose": current.get("purpose") or "(none)",
            "addressType": current.get("addressType"),
            "prefixLength": f"/{current.get('prefixLength')}",
            "network": short_link(current.get("network", "")) or "(none)",
        }
        differences = ", ".join(f"{f} is {live[f]}, not {wanted[f]}" for f in fields)
        raise MlflowGcpError(
            f"The global address {self.name} already exists and does not fit private services access "
            f"({differences}); an address cannot be changed in place.",
            f"Pass --peering-range with another name, or delete it if nothing uses it "
            f"(`gcloud compute addresses delete {self.name} --global`) and run again.",
        )

    def outputs(self, current: dict) -> dict[str, str]:
        return {"network.peering_range": f"{current.get('address')}/{current.get('prefixLength')}"}

    def details(self, current: dict) -> dict[str, str]:
        return {"range": f"{current.get('address')}/{current.get('prefixLength')}", "status": current.get("status", "")}

    def delete(self, current: dict) -> None:
        if current.get("labels", {}).get("managed-by") != MANAGED_LABELS["managed-by"]:
            self.ctx.log(f"keeping the address range {self.name}: this tool did not create it")
            return
        operation = retry.call(
            lambda: execute(self._client.delete(project=self.ctx.project, address=self.name)), predicate=self._retry
        )
        wait_compute(self.ctx, operation, f"Deleting the address range {self.name}")


class PrivateConnection(Resource):
    """The private services connection of the network, holding our range among its reserved ranges."""

    kind = "private services connection"

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, f"on {ctx.settings.network}")
        self.range = ctx.settings.peering_range
        self.network = network_link(ctx)
        self._retry = ctx.retry_predicate("servicenetworking")

    @property
    def label(self) -> str:
        return f"private services connection on {self.ctx.settings.network}"

    def _api(self):
        return self.ctx.clients.service_networking()

    @functools.cached_property
    def consumer_network(self) -> str:
        """The network as Service Networking names it: `projects/NUMBER/global/networks/N`. Like gcloud and
        Terraform, turn the project id into its number first (Resource Manager)."""
        number = self.ctx.outputs.get("network.project_number")
        if not number:
            crm_retry = self.ctx.retry_predicate("cloudresourcemanager")
            project = retry.call(
                lambda: execute(self.ctx.clients.resource_manager().projects().get(projectId=self.ctx.project)),
                predicate=crm_retry,
            )
            number = str(project["projectNumber"])
        return network_path(number, self.ctx.settings.network)

    def _call(self, build: Callable[[Any], Any]) -> Any:
        return retry.call(lambda: execute(build(self._api())), predicate=self._retry)

    def read(self) -> dict | None:
        if self.network == PENDING:
            return None  # the network does not exist yet, so neither does its connection
        try:
            response = self._call(
                lambda api: api.services().connections().list(parent=SERVICE, network=self.consumer_network)
            )
        except gexc.NotFound:
            return None  # no such network (yet)
        connections = response.get("connections", [])
        return next((c for c in connections if c.get("peering") == PEERING), connections[0] if connections else None)

    def drift(self, current: dict) -> list[str]:
        return [] if self.range in current.get("reservedPeeringRanges", []) else ["reservedPeeringRanges"]

    def _wait(self, operation: dict, what: str) -> None:
        wait(
            lambda: self._call(lambda api: api.operations().get(name=operation["name"])),
            is_done=lambda op: bool(op.get("done")),
            error_of=lambda op: (
                (op.get("error") or {}).get("message") or (str(op["error"]) if op.get("error") else None)
            ),
            what=what,
            timeout=CONNECTION_TIMEOUT,
            first=operation,
        )

    def create(self) -> None:
        body = {"network": self.consumer_network, "reservedPeeringRanges": [self.range]}
        operation = self._call(lambda api: api.services().connections().create(parent=SERVICE, body=body))
        self._wait(operation, f"Connecting {self.ctx.settings.network} to Google's service producer network")

    def _patch(self, ranges: list[str], what: str) -> None:
        body = {"network": self.consumer_network, "reservedPeeringRanges": ranges}
        operation = self._call(
            lambda api: (
                api.services()
                .connections()
                .patch(name=f"{SERVICE}/connections/-", updateMask="reservedPeeringRanges", force=False, body=body)
            )
        )
        self._wait(operation, what)

    def update(self, current: dict, fields: list[str]) -> None:
        ranges = list(current.get("reservedPeeringRanges", []))
        # Someone else's ranges stay: removing one would cut off the services that use it.
        self._patch([*ranges, self.range], f"Adding the range {self.range} to the private services connection")

    def details(self, current: dict) -> dict[str, str]:
        return {"ranges": ", ".join(current.get("reservedPeeringRanges", [])), "peering": current.get("peering", "")}

    def delete(self, current: dict) -> None:
        ranges = list(current.get("reservedPeeringRanges", []))
        if self.range not in ranges:
            self.ctx.log(f"keeping the private services connection on {self.ctx.settings.network}: not ours")
            return
        if ranges != [self.range]:
            others = [r for r in ranges if r != self.range]
            self._patch(others, f"Removing the range {self.range} from the private services connection")
            return
        body = {"consumerNetwork": self.consumer_network}
        operation = self._call(
            lambda api: (
                api.services()
                .connections()
                .deleteConnection(name=f"{SERVICE}/connections/{current.get('peering') or PEERING}", body=body)
            )
        )
        self._wait(operation, f"Deleting the private services connection on {self.ctx.settings.network}")


def resources(ctx: StepContext) -> Iterator[Resource]:
    yield Network(ctx)
    yield PeeringRange(ctx)
    yield PrivateConnection(ctx)
