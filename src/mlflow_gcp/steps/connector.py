"""Step `connector`: the Serverless VPC Access connector Cloud Run reaches the database's private IP through.

The instance bounds change in place (a patch with an updateMask; the GAPIC library has no update method, so
the patch goes through the discovery client). A new machine type is a patch too, but Google replaces the
connector's VMs for it. The network and the range are fixed at creation: changing them deletes the connector
and creates it again under the same name (the service keeps pointing at it), once the user has accepted it.
With `--vpc-egress direct` the step makes the service's own subnet instead (`egress`).

The old connector: once the service runs on Direct VPC egress (its new revision is ready), the connector it
used is deleted. The Serverless VPC Access API has no labels on connectors
(https://cloud.google.com/vpc/docs/reference/vpcaccess/rest/v1/projects.locations.connectors), so "ours" is what
this tool's service (labelled managed-by: mlflow-gcp) was using when the run started and no other Cloud Run
service of the region uses; any other connector is kept and reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import PENDING, Effect, Impact, Resource, StepContext
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import execute
from mlflow_gcp.gcp.operations import settled, wait, wait_gapic
from mlflow_gcp.steps import egress

TIMEOUT = 20 * 60.0
TRANSITIONAL = ("CREATING", "UPDATING", "DELETING")
IMMUTABLE = ("network", "ipCidrRange")
RECREATE = Effect(
    Impact.REPLACE, "deletes and recreates the connector: the server cannot reach its database for a few minutes"
)
CONNECTOR_EFFECTS = {
    "network": RECREATE,
    "ipCidrRange": RECREATE,
    # The connector's VMs are replaced by ones of the new type (gcloud ... vpc-access connectors update
    # --machine-type); connections through the old ones are cut.
    "machineType": Effect(Impact.REPLACE, "replaces the connector's VMs: database connections are cut briefly"),
}
RETIRE = Effect(Impact.NONE, "deleted once the service's new revision, on Direct VPC egress, is ready")


def _network_name(value: str) -> str:
    """A connector's network as Google answers it (a name, or a link) → the name."""
    return value.rstrip("/").rsplit("/", 1)[-1]


class Connector(Resource):
    kind = "VPC connector"
    effects = CONNECTOR_EFFECTS

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx, ctx.settings.connector)
        self.parent = f"projects/{ctx.project}/locations/{ctx.region}"
        self.path = f"{self.parent}/connectors/{self.name}"
        self._client = ctx.clients.vpc_access()
        network = ctx.outputs.get("network.name")
        self.network = network or (PENDING if ctx.dry_run else ctx.settings.network)
        self._retry = ctx.retry_predicate("vpcaccess")

    # -- desired state ------------------------------------------------------------------------------------
    def desired(self) -> dict[str, Any]:
        s = self.ctx.settings
        # Instance bounds only: the API refuses throughput bounds sent with them.
        return {
            "network": self.network,
            "ipCidrRange": s.connector_range,
            "machineType": s.connector_machine_type,
            "minInstances": s.connector_min_instances,
            "maxInstances": s.connector_max_instances,
        }

    def _get(self) -> Any | None:
        try:
            return retry.call(lambda: self._client.get_connector(name=self.path), predicate=self._retry)
        except gexc.NotFound:
            return None

    def read(self) -> Any | None:
        current = settled(
            self._get,
            busy=lambda c: c.state.name in TRANSITIONAL,
            what=f"Waiting for the VPC connector {self.name}",
            timeout=TIMEOUT,
            wait_now=not self.ctx.dry_run,
            on_wait=lambda c: self.ctx.log(f"waiting for the VPC connector {self.name} ({c.state.name})"),
        )
        if current is not None and not self.ctx.dry_run and (error := self.problem(current)) is not None:
            raise error
        return current

    def problem(self, current: Any | None) -> MlflowGcpError | None:
        if current is None or current.state.name != "ERROR":
            return None
        return MlflowGcpError(
            f"The VPC connector {self.name} is in the ERROR state (its creation failed on Google's side): the "
            "server cannot reach its database through it.",
            f"Delete it (`gcloud compute networks vpc-access connectors delete {self.name} --region "
            f"{self.ctx.region}`) and run again, or pass --connector with another name.",
        )

    def _live(self, current: Any) -> dict[str, Any]:
        return {
            "network": _network_name(current.network),
            "ipCidrRange": current.ip_cidr_range,
            "machineType": current.machine_type or "e2-micro",
            "minInstances": current.min_instances,
            "maxInstances": current.max_instances,
        }

    def drift(self, current: Any) -> list[str]:
        live, desired = self._live(current), self.desired()
        return [f for f, v in desired.items() if v != PENDING and live[f] != v]

    # -- apply --------------------------------------------------------------------------------------------
    def create(self) -> None:
        from google.cloud import vpcaccess_v1

        d = self.desired()
        connector = vpcaccess_v1.Connector(
            network=d["network"],
            ip_cidr_range=d["ipCidrRange"],
            machine_type=d["machineType"],
            min_instances=d["minInstances"],
            max_instances=d["maxInstances"],
        )
        try:
            operation = retry.call(
                lambda: self._client.create_connector(parent=self.parent, connector_id=self.name, connector=connector),
                predicate=self._retry,
            )
        except gexc.BadRequest as e:
            # e.g. the range overlaps another connector, a subnet or a reserved range: Google says which
            raise MlflowGcpError(
                f"Google refused the VPC connector {self.name}: {e.message}",
                "Pick a free /28 with --connector-range (e.g. 10.8.0.16/28) or fix the setting it names.",
            ) from e
        self.ctx.log(f"creating the VPC connector {self.name} (about 2 minutes)")
        wait_gapic(operation, what=f"Creating the VPC connector {self.name}", timeout=TIMEOUT)

    def observed(self, current: Any) -> dict[str, Any]:
        live = self._live(current)
        return {
            "connector_range": live["ipCidrRange"],
            "connector_machine_type": live["machineType"],
            "connector_min_instances": live["minInstances"],
            "connector_max_instances": live["maxInstances"],
        }

    def update(self, current: Any, fields: list[str]) -> None:
        if any(f in IMMUTABLE for f in fields):
            # accepted as a replacement by the engine's approval: same name, so the service keeps its reference
            self.ctx.log(f"deleting the VPC connector {self.name} to create it with the new range or network")
            self.delete(current)
            self.create()
            return
        desired = self.desired()
        body = {f: desired[f] for f in fields}
        api = self.ctx.clients.discovery("vpcaccess", "v1")
        connectors = api.projects().locations().connectors()
        operation = retry.call(
            lambda: execute(connectors.patch(name=self.path, updateMask=",".join(fields), body=body)),
            predicate=self._retry,
        )
        operations = api.projects().locations().operations()
        wait(
            lambda: retry.call(lambda: execute(operations.get(name=operation["name"])), predicate=self._retry),
            is_done=lambda op: bool(op.get("done")),
            error_of=lambda op: (op.get("error") or {}).get("message") if op.get("error") else None,
            what=f"Updating the VPC connector {self.name} ({', '.join(fields)})",
            timeout=TIMEOUT,
            first=operation,
        )

    def outputs(self, current: Any) -> dict[str, str]:
        return {"connector.id": self.path}

    def details(self, current: Any) -> dict[str, str]:
        return {
            "state": current.state.name,
            "range": current.ip_cidr_range,
            "network": _network_name(current.network),
            "machine": current.machine_type,
            "instances": f"{current.min_instances}-{current.max_instances}",
        }

    def delete(self, current: Any) -> None:
        operation = retry.call(lambda: self._client.delete_connector(name=self.path), predicate=self._retry)
        wait_gapic(operation, what=f"Deleting the VPC connector {self.name}", timeout=TIMEOUT)


class RetiredConnector(Resource):
    """The connector a deployment used before `--vpc-egress direct`: absent is the desired state."""

    kind = "unused VPC connector"
    absent_is_desired = True

    def __init__(self, ctx: StepContext, used_by_service: bool) -> None:
        super().__init__(ctx, ctx.settings.connector)
        self.path = f"projects/{ctx.project}/locations/{ctx.region}/connectors/{self.name}"
        self.used_by_service = used_by_service
        self.other_users: list[str] = []

    def read(self) -> Any | None:
        current = Connector(self.ctx)._get()
        if current is not None:
            self.other_users = self._other_users()
        return current

    def _other_users(self) -> list[str]:
        client = self.ctx.clients.run_services()
        parent = f"projects/{self.ctx.project}/locations/{self.ctx.region}"
        services = self.ctx.call("run", lambda: list(client.list_services(parent=parent)))
        return [
            s.name.rsplit("/", 1)[-1]
            for s in services
            if s.name.rsplit("/", 1)[-1] != self.ctx.settings.service
            and s.template.vpc_access.connector.rsplit("/", 1)[-1] == self.name
        ]

    @property
    def ours(self) -> bool:
        return self.used_by_service and not self.other_users

    def drift(self, current: Any) -> list[str]:
        return ["unused"] if self.ours else []

    def effect(self, field: str, current: Any) -> Effect:
        return RETIRE

    def create(self) -> None:  # pragma: no cover - absent is what is wanted
        pass

    def update(self, current: Any, fields: list[str]) -> None:
        self.ctx.log(f"deleting the VPC connector {self.name}: the service runs on Direct VPC egress now")
        self.delete(current)

    def details(self, current: Any) -> dict[str, str]:
        if self.ours:
            why = "deleted once the service's Direct VPC egress revision is ready"
        elif self.other_users:
            why = f"kept: used by {', '.join(self.other_users)}"
        else:
            why = "kept: this tool's service was not using it; delete it yourself if nothing needs it"
        return {"state": "unused by this service", "range": current.ip_cidr_range, "action": why}

    def delete(self, current: Any) -> None:
        if not self.ours:
            self.ctx.log(f"keeping the VPC connector {self.name}: {self.details(current)['action']}")
            return
        Connector(self.ctx).delete(current)


def resources(ctx: StepContext) -> Iterator[Resource]:
    if egress.is_direct(ctx):
        yield from egress.resources(ctx)  # no connector: the service's own subnet
    else:
        yield Connector(ctx)
