"""What every step is made of.

A step is an ordered list of resources. For each resource the engine reads the live state (None when
absent), asks which owned fields differ from the desired state, and only then creates or updates. Reading
and comparing are separate from applying, so `--dry-run` and `status` come from the same code as `up`.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol, TypeVar

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import MlflowGcpError, NameTakenError, PrerequisiteMissingError
from mlflow_gcp.gcp.clients import Clients

T = TypeVar("T")


class Mode(str, Enum):
    APPLY = "apply"  # create and update what differs
    PLAN = "plan"  # read and compare only (--dry-run, status)
    CHECK = "check"  # read only, a missing resource is an error (prerequisites of `step NAME`)


class Status(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    SKIPPED = "skipped"


class Impact(str, Enum):
    """What changing an owned field does to the running deployment on Google."""

    NONE = "none"  # nothing visible: labels, bounds, protection flags
    REVISION = "revision"  # Cloud Run rolls out a new revision; the current one serves until it is ready
    RESTART = "restart"  # the Cloud SQL instance restarts: the server loses its database meanwhile
    REPLACE = "replace"  # deleted and created again (or its machines replaced)
    IMPOSSIBLE = "impossible"  # Google cannot change it in place

    @property
    def disruptive(self) -> bool:
        """A change a user must accept first: it interrupts the server."""
        return self in (Impact.RESTART, Impact.REPLACE)


@dataclass(frozen=True)
class Effect:
    impact: Impact = Impact.NONE
    note: str = ""  # what it does, said on the line of the change ("restarts the database for a few minutes")


NO_EFFECT = Effect()


@dataclass(frozen=True)
class Change:
    resource: str
    action: str  # "create" or "update"
    fields: tuple[str, ...] = ()
    effects: tuple[Effect, ...] = ()  # one per field (updates)

    def field_effects(self) -> list[tuple[str, Effect]]:
        effects = self.effects or (NO_EFFECT,) * len(self.fields)
        return list(zip(self.fields, effects, strict=True))

    @property
    def disruptive(self) -> list[tuple[str, Effect]]:
        return [(f, e) for f, e in self.field_effects() if e.impact.disruptive]

    @property
    def impossible(self) -> list[tuple[str, Effect]]:
        return [(f, e) for f, e in self.field_effects() if e.impact is Impact.IMPOSSIBLE]

    def describe(self) -> str:
        """`tier (restarts the database for a few minutes), labels`: each field with what it does."""
        return ", ".join(f"{f} ({e.note})" if e.note else f for f, e in self.field_effects())


@dataclass(frozen=True)
class ResourceState:
    """What status shows of one resource."""

    label: str
    exists: bool
    drift: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)
    # It exists but cannot serve (a connector in ERROR, a stopped instance): `up` refuses it, whatever its settings.
    problem: str = ""
    problem_hint: str = ""
    # Whether it exists is unknown: what holds it could not be read or is not running (e.g. a stopped instance).
    unreadable: str = ""

    @property
    def condition(self) -> str:
        """What decides its mark: unreadable, missing, failed (a problem), drift or ok."""
        if self.unreadable:
            return "unreadable"
        if not self.exists:
            return "missing"
        if self.problem:
            return "failed"
        return "drift" if self.drift else "ok"


@dataclass
class StepResult:
    step: str
    changes: list[Change] = field(default_factory=list)
    resources: list[ResourceState] = field(default_factory=list)
    planned: bool = False
    seconds: float = 0.0

    @property
    def status(self) -> Status:
        if any(c.action == "create" for c in self.changes):
            return Status.CREATED
        if self.changes:
            return Status.UPDATED
        return Status.UNCHANGED


@dataclass(frozen=True)
class Event:
    step: str
    kind: str  # "log", "status"
    message: str = ""
    status: Status | None = None


PENDING = "(pending)"


class Outputs:
    """Values steps hand to later steps (IPs, names, URLs). Never secret values: those live in
    StepContext.secret_values, which nothing prints."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, key: str, value: str) -> None:
        with self._lock:
            self._values[key] = value

    def update(self, values: dict[str, str]) -> None:
        with self._lock:
            self._values.update(values)

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def as_dict(self) -> dict[str, str]:
        with self._lock:
            return dict(self._values)


@dataclass
class StepContext:
    settings: Settings
    clients: Clients
    mode: Mode = Mode.APPLY
    step: str = ""
    outputs: Outputs = field(default_factory=Outputs)
    secret_values: dict[str, str] = field(default_factory=dict)
    on_event: Callable[[Event], None] = lambda event: None
    # APIs this run enabled: calls to them may still answer SERVICE_DISABLED for a while.
    enabled_now: set[str] = field(default_factory=set)
    # Called before a change that restarts or replaces something; raises to refuse it. The CLI asks on a
    # terminal and needs --yes elsewhere; library callers accept.
    approve: Callable[[Change], None] = lambda change: None
    # Resources this run created (e.g. a service account's email): Google may not show them everywhere yet.
    created_now: set[str] = field(default_factory=set)

    @property
    def project(self) -> str:
        return self.settings.project

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def dry_run(self) -> bool:
        return self.mode is not Mode.APPLY

    def for_step(self, name: str, mode: Mode | None = None) -> StepContext:
        """The same run (shared outputs, secrets, events) seen from one step, optionally in another mode."""
        return dataclasses.replace(self, step=name, mode=mode or self.mode)

    def retry_predicate(self, api: str) -> Callable[[BaseException], bool]:
        """Transient errors, plus SERVICE_DISABLED for a while when this run has just enabled `api`
        (e.g. "compute")."""
        from mlflow_gcp.gcp import retry  # google.api_core: not at import time, `--help` must stay fast

        if f"{api.removesuffix('.googleapis.com')}.googleapis.com" in self.enabled_now:
            return retry.any_of(retry.is_transient, retry.is_service_activating)
        return retry.is_transient

    def call(self, api: str, fn: Callable[[], T], **kwargs: Any) -> T:
        """`retry.call` with the retry predicate of `api` (unless the caller gives its own)."""
        from mlflow_gcp.gcp import retry

        return retry.call(fn, predicate=kwargs.pop("predicate", self.retry_predicate(api)), **kwargs)

    def absent_in_plan(self, exc: BaseException) -> bool:
        """Planning on a project whose API is not enabled yet (the apis step enables it): nothing exists there."""
        from mlflow_gcp.gcp import retry

        return self.mode is Mode.PLAN and retry.is_service_activating(exc)

    def log(self, message: str) -> None:
        self.on_event(Event(self.step, "log", message))

    def output(self, key: str, made_by: str) -> str:
        """An output of an earlier step. Planning goes on with a placeholder when it does not exist yet."""
        value = self.outputs.get(key)
        if value is not None:
            return value
        if self.dry_run:
            return PENDING
        raise PrerequisiteMissingError(
            f"The {self.step} step needs {key.replace('_', ' ')}, made by the {made_by} step, which has not run.",
            f"Run `mlflow-gcp step {made_by}` first, or `mlflow-gcp up` to run every step.",
        )

    def secret_value(self, secret_id: str, made_by: str) -> str:
        value = self.secret_values.get(secret_id)
        if value is not None:
            return value
        if self.dry_run:
            return PENDING
        raise PrerequisiteMissingError(
            f"The {self.step} step needs the secret {secret_id}, made by the {made_by} step, which has not run.",
            f"Run `mlflow-gcp step {made_by}` first, or `mlflow-gcp up` to run every step.",
        )


class Resource(ABC):
    """One Google Cloud resource a step owns."""

    kind: str = "resource"
    # `down` keeps resources that hold data unless --delete-data.
    holds_data: bool = False
    # After a create answered "already exists": how long (seconds) the resource may take to become readable, when
    # Google makes it readable only once a create already under way finishes, or shows new ones late (IAM).
    appear_timeout: float = 0.0
    # A resource that should not exist (a connector left by a switch to Direct VPC egress): absent, nothing is
    # made and status does not list it; present, `drift` says whether `update` deletes it.
    absent_is_desired: ClassVar[bool] = False
    # False for what is read through another resource and goes with it (the MLflow version the service runs):
    # status shows it, `down` has nothing of its own to delete.
    deletable: ClassVar[bool] = True

    def __init__(self, ctx: StepContext, name: str) -> None:
        self.ctx = ctx
        self.name = name

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @abstractmethod
    def read(self) -> Any | None:
        """The live resource, or None when it does not exist. Waits out transitional states."""

    def drift(self, current: Any) -> list[str]:
        """Names of the owned fields whose live value differs from the desired one."""
        return []

    def problem(self, current: Any | None) -> MlflowGcpError | None:
        """The error `up` stops with because of the live resource's state (a connector in ERROR, a stopped
        instance), or, when it does not exist (`current` None), because it cannot be made as configured; None when
        all is well. `--dry-run` predicts it; `status` shows it."""
        return None

    def unreadable(self) -> str:
        """After read() answered None: why the resource could not be read (what holds it is stopped or could not
        be read), or "" when it truly does not exist."""
        return ""

    # What changing each owned field does on Google; fields not listed change nothing visible.
    effects: ClassVar[dict[str, Effect]] = {}

    def effect(self, field: str, current: Any) -> Effect:
        return self.effects.get(field, NO_EFFECT)

    def cannot_change(self, current: Any, fields: list[str]) -> MlflowGcpError:
        """The error for fields whose effect is IMPOSSIBLE: what differs and what to do instead."""
        return MlflowGcpError(
            f"{self.label[0].upper()}{self.label[1:]} cannot change {', '.join(fields)} in place.",
            "Give the live value back as a setting, or delete the resource yourself and run again.",
        )

    def observed(self, current: Any) -> dict[str, Any]:
        """The settings (Settings field name -> value) this live resource embodies. A deployment made before
        settings were recorded (or by hand) adopts them, so its first `up` changes nothing it was not asked."""
        return {}

    @abstractmethod
    def create(self) -> None:
        """Create the resource and wait until it is usable. A Conflict means it appeared meanwhile: fine."""

    def update(self, current: Any, fields: list[str]) -> None:
        raise NotImplementedError(f"{self.label} cannot be updated in place")

    def name_taken(self) -> MlflowGcpError:
        """The error when a create answered "already exists" but this project cannot read what holds the name."""
        return NameTakenError(
            f"The name of {self.label} is taken: Google says it exists, but this project cannot read it.",
            "Choose another name in the settings (see `mlflow-gcp up --help`).",
        )

    def outputs(self, current: Any) -> dict[str, str]:
        return {}

    def details(self, current: Any) -> dict[str, str]:
        """The settings that matter, for status."""
        return {}

    def delete(self, current: Any) -> None:
        raise NotImplementedError(f"{self.label} cannot be deleted by this tool")


ResourceFactory = Callable[[StepContext], Iterator[Resource]]


class Step(Protocol):
    """What the engine runs: a named list of resources (`mlflow_gcp.steps.StepDef` is one)."""

    @property
    def name(self) -> str: ...

    def resources(self, ctx: StepContext) -> Iterator[Resource]: ...
