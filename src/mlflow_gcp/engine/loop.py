"""Runs a step's resources: read, compare, then create or update only what differs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc

from mlflow_gcp.engine.base import Change, Mode, Resource, ResourceState, Step, StepContext, StepResult
from mlflow_gcp.errors import PrerequisiteMissingError
from mlflow_gcp.gcp import retry
from mlflow_gcp.gcp.errors import translate


def _guarded(ctx: StepContext, what: str, action):
    try:
        return action()
    except gexc.GoogleAPICallError as e:
        raise translate(e, what, ctx.project, lambda: project_number(ctx)) from e


def project_number(ctx: StepContext) -> str | None:
    """The target project's number (Google names consumers by number), once per run; None when unknown."""
    known = ctx.outputs.get("project.number")
    if known:
        return known
    from mlflow_gcp.gcp.errors import execute

    try:
        number = str(execute(ctx.clients.resource_manager().projects().get(projectId=ctx.project))["projectNumber"])
    except Exception:
        return None
    ctx.outputs.set("project.number", number)
    return number


def _read(resource: Resource, ctx: StepContext):
    try:
        return resource.read()
    except gexc.GoogleAPICallError as e:
        if ctx.absent_in_plan(e):
            return None
        raise


def run_step(step: Step, ctx: StepContext) -> StepResult:
    ctx = ctx.for_step(step.name)
    started = time.monotonic()
    result = StepResult(step.name, planned=ctx.dry_run)
    retry.report_waits_to(ctx.log)
    try:
        for resource in step.resources(ctx):
            _run_resource(resource, ctx, result)
    finally:
        retry.report_waits_to(None)
    result.seconds = time.monotonic() - started
    return result


def _run_resource(resource: Resource, ctx: StepContext, result: StepResult) -> None:
    label = resource.label
    current = _guarded(ctx, f"reading {label}", lambda: _read(resource, ctx))
    if current is None and resource.absent_is_desired:
        return
    if current is None and resource.unreadable():
        # What holds it refused the run already (applying) or will (planning): nothing to plan for it.
        if not ctx.dry_run:
            raise PrerequisiteMissingError(f"{label[0].upper()}{label[1:]} cannot be read: {resource.unreadable()}.")
        result.resources.append(ResourceState(label, exists=False, unreadable=resource.unreadable()))
        return
    if (problem := resource.problem(current)) is not None:
        raise problem  # what `up` refuses, `--dry-run` predicts
    if current is None:
        if ctx.mode is Mode.CHECK:
            raise PrerequisiteMissingError(
                f"{label[0].upper()}{label[1:]} does not exist yet; it is made by the {ctx.step} step.",
                f"Run `mlflow-gcp step {ctx.step}` first, or `mlflow-gcp up` to run every step.",
            )
        result.changes.append(Change(label, "create"))
        result.resources.append(ResourceState(label, exists=False))
        if ctx.dry_run:
            return
        ctx.log(f"creating {label}")
        current, existed = _create(resource, ctx)
        if existed:
            # Already there: compared and brought in line exactly as on a rerun.
            fields = _guarded(ctx, f"comparing {label}", lambda: resource.drift(current))
            current = _update(resource, ctx, result, current, fields) if fields else current
        if current is None:
            raise PrerequisiteMissingError(f"{label} was created but cannot be read back.")
    else:
        fields = _guarded(ctx, f"comparing {label}", lambda: resource.drift(current))
        result.resources.append(
            ResourceState(label, exists=True, drift=tuple(fields), details=resource.details(current))
        )
        if fields and ctx.mode is not Mode.CHECK:
            current = _update(resource, ctx, result, current, fields)
    if current is not None:
        ctx.outputs.update(resource.outputs(current))


def _update(resource: Resource, ctx: StepContext, result: StepResult, current: Any, fields: list[str]) -> Any:
    """Record the change of `fields`, refuse what Google cannot change, ask before what disrupts, apply it and
    return the state read back (unchanged in a dry run)."""
    label = resource.label
    change = Change(label, "update", tuple(fields), tuple(resource.effect(f, current) for f in fields))
    result.changes.append(change)
    if change.impossible:
        raise resource.cannot_change(current, [f for f, _ in change.impossible])
    if ctx.dry_run:
        return current
    if change.disruptive:
        ctx.approve(change)
    ctx.log(f"updating {label}: {change.describe()}")
    _guarded(ctx, f"updating {label}", lambda: resource.update(current, fields))
    return _guarded(ctx, f"reading {label}", resource.read)


def _create(resource: Resource, ctx: StepContext) -> tuple[Any, bool]:
    """Create, then read back; returns the live state and whether it already existed.

    The one place that handles "already exists": a retry whose first attempt Google had applied (its answer
    lost), an interrupted run, or another run at the same time. What holds the name is read back; the caller
    compares it with the settings and brings it in line as on a rerun (fields Google cannot change are the
    resource's clear error). A name held by something this project cannot read is the error of a name taken."""
    from mlflow_gcp.gcp import retry

    label = resource.label
    try:
        resource.create()
    except gexc.GoogleAPICallError as e:
        if not retry.is_already_exists(e):
            raise translate(e, f"creating {label}", ctx.project) from e
        current = _guarded(ctx, f"reading {label}", lambda: _appeared(resource))
        if current is None:
            raise resource.name_taken() from e
        ctx.log(f"{label} already exists: comparing it with the settings")
        return current, True
    return _guarded(ctx, f"reading {label}", resource.read), False


def _appeared(resource: Resource) -> Any:
    """The resource's live state, waiting up to its appear_timeout for it to become readable."""
    from mlflow_gcp.gcp.operations import poll_delay
    from mlflow_gcp.gcp.retry import scaled

    started, timeout = time.monotonic(), scaled(resource.appear_timeout)
    while True:
        current = resource.read()
        elapsed = time.monotonic() - started
        if current is not None or elapsed >= timeout:
            return current
        time.sleep(min(poll_delay(elapsed), max(0.0, timeout - elapsed)))


@dataclass
class Inspected:
    """One resource of a step as read in plan mode: the Resource object, its live state (None when absent) and
    what status shows of it."""

    resource: Resource
    current: Any | None
    state: ResourceState


def inspect_step(step: Step, ctx: StepContext) -> list[Inspected]:
    """Read and compare every resource of `step`, changing nothing (`ctx` must be in plan mode). Outputs of the
    resources that exist are recorded, so later steps build their desired state as `up` would."""
    if not ctx.dry_run:
        raise ValueError("inspect_step reads only: give it a context in plan mode")
    ctx = ctx.for_step(step.name)
    found: list[Inspected] = []
    for resource in step.resources(ctx):
        label = resource.label
        current = _guarded(ctx, f"reading {label}", resource.read)
        if current is None and resource.absent_is_desired:
            continue
        if current is None:
            problem = None if resource.unreadable() else resource.problem(None)
            state = ResourceState(
                label,
                exists=False,
                unreadable=resource.unreadable(),
                problem=problem.message if problem else "",
                problem_hint=(problem.hint or "") if problem else "",
            )
        else:
            fields = _guarded(ctx, f"comparing {label}", lambda r=resource, c=current: r.drift(c))
            details = _guarded(ctx, f"describing {label}", lambda r=resource, c=current: r.details(c))
            problem = resource.problem(current)
            state = ResourceState(
                label,
                exists=True,
                drift=tuple(fields),
                details=details,
                problem=problem.message if problem else "",
                problem_hint=(problem.hint or "") if problem else "",
            )
            ctx.outputs.update(resource.outputs(current))
        found.append(Inspected(resource, current, state))
    return found
