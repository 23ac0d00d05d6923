"""Every resource of the deployment, read through the steps themselves in plan mode: nothing is changed.

`status` shows it, `down` deletes from it and `credentials` takes the service URL from it. A step that cannot
be read (an API disabled, a permission missing) is recorded with its error; the steps after it are still read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow_gcp.config import Settings
from mlflow_gcp.engine.base import Event, Mode, Resource, ResourceState, StepContext
from mlflow_gcp.engine.loop import Inspected, inspect_step
from mlflow_gcp.errors import MlflowGcpError
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import STEPS, StepDef


@dataclass
class StepInventory:
    step: str
    items: list[Inspected] = field(default_factory=list)
    error: MlflowGcpError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(i.state.exists and not i.state.drift for i in self.items)


@dataclass
class Inventory:
    ctx: StepContext
    steps: list[StepInventory]

    def items(self) -> list[tuple[str, Inspected]]:
        return [(s.step, item) for s in self.steps for item in s.items]

    def states(self) -> list[tuple[str, ResourceState]]:
        return [(step, item.state) for step, item in self.items()]

    def find(self, step: str, kind: type[Resource]) -> Inspected | None:
        return next((i for s, i in self.items() if s == step and isinstance(i.resource, kind)), None)

    @property
    def outputs(self) -> dict[str, str]:
        return self.ctx.outputs.as_dict()

    def observed_settings(self) -> dict[str, Any]:
        """The settings the live resources embody (a Cloud SQL tier, a Cloud Run max instances...)."""
        values: dict[str, Any] = {}
        for _, item in self.items():
            if item.current is not None:
                values.update(item.resource.observed(item.current))
        return values

    @property
    def complete(self) -> bool:
        return all(s.ok for s in self.steps)


def plan_context(settings: Settings, clients: Clients | None = None, on_event: Callable[[Event], None] | None = None):
    return StepContext(
        settings=settings,
        clients=clients or Clients(settings.project),
        mode=Mode.PLAN,
        on_event=on_event or (lambda event: None),
    )


def read_inventory(
    settings: Settings,
    *,
    clients: Clients | None = None,
    steps: Sequence[StepDef] = STEPS,
    on_event: Callable[[Event], None] | None = None,
) -> Inventory:
    """Read every step in run order (later steps need the outputs of earlier ones), changing nothing."""
    ctx = plan_context(settings, clients, on_event)
    found: list[StepInventory] = []
    for step in steps:
        entry = StepInventory(step.name)
        try:
            entry.items = inspect_step(step, ctx)
        except MlflowGcpError as error:
            entry.error = error
        found.append(entry)
    return Inventory(ctx, found)


def live(inventory: Inventory, step: str) -> list[tuple[Resource, Any]]:
    """The resources of `step` that exist, with their live state."""
    entry = next((s for s in inventory.steps if s.step == step), None)
    return [(i.resource, i.current) for i in (entry.items if entry else []) if i.current is not None]
