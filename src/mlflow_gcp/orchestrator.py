"""Runs steps concurrently: each starts as soon as the steps it needs have finished.

Cloud SQL takes 10 to 20 minutes to create; the connector, service account, bucket and image build run
meanwhile. A failed step skips the steps that need it and lets the others finish.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlflow_gcp.engine.base import Event, Status, StepContext, StepResult
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.steps import StepDef


@dataclass
class RunReport:
    statuses: dict[str, Status]
    results: dict[str, StepResult] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and all(s not in (Status.FAILED, Status.SKIPPED) for s in self.statuses.values())

    def first_error(self) -> BaseException | None:
        return next(iter(self.errors.values()), None)


def run_concurrently(steps: Sequence[StepDef], ctx: StepContext) -> RunReport:
    """Run `steps`; requirements outside `steps` are taken as already satisfied."""
    selected = {step.name for step in steps}
    report = RunReport(statuses={step.name: Status.WAITING for step in steps})
    finished: queue.Queue[tuple[str, StepResult | None, BaseException | None]] = queue.Queue()
    started_at = time.monotonic()
    running: set[str] = set()

    def worker(step: StepDef) -> None:
        try:
            finished.put((step.name, run_step(step, ctx), None))
        except BaseException as error:
            finished.put((step.name, None, error))

    def set_status(name: str, status: Status, message: str = "") -> None:
        report.statuses[name] = status
        ctx.on_event(Event(name, "status", message, status))

    while True:
        for step in steps:
            if report.statuses[step.name] is not Status.WAITING:
                continue
            needs = [r for r in step.requires if r in selected]
            if any(report.statuses[r] in (Status.FAILED, Status.SKIPPED) for r in needs):
                set_status(step.name, Status.SKIPPED, "a step it needs failed")
            elif all(report.statuses[r] in (Status.CREATED, Status.UPDATED, Status.UNCHANGED) for r in needs):
                set_status(step.name, Status.RUNNING)
                running.add(step.name)
                # Daemon threads: an interrupted run must not wait for a 15-minute Cloud SQL operation.
                threading.Thread(target=worker, args=(step,), name=f"step-{step.name}", daemon=True).start()
        if not running:
            break
        name, result, error = finished.get()
        running.discard(name)
        if error is not None:
            report.errors[name] = error
            set_status(name, Status.FAILED, str(error))
        else:
            assert result is not None
            report.results[name] = result
            set_status(name, result.status)
    report.seconds = time.monotonic() - started_at
    return report
