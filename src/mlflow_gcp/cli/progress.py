"""The live view of running steps: a line per step (state, elapsed time, latest action), logs above it.
On a terminal it redraws in place; elsewhere (CI, pipes) it prints one line per change."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from mlflow_gcp.cli.console import out
from mlflow_gcp.engine.base import Change, Event, Status, StepResult
from mlflow_gcp.orchestrator import RunReport
from mlflow_gcp.steps import StepDef

STYLE = {
    Status.WAITING: "dim",
    Status.RUNNING: "cyan",
    Status.CREATED: "green",
    Status.UPDATED: "yellow",
    Status.UNCHANGED: "green",
    Status.FAILED: "bold red",
    Status.SKIPPED: "dim red",
}
# Where the note starts: spinner 1, step 15, state 10, time 7, a space after each.
NOTE_COLUMN = 1 + 15 + 10 + 7 + 4
FINAL = {Status.CREATED, Status.UPDATED, Status.UNCHANGED, Status.FAILED, Status.SKIPPED}


def _state(status: Status, planned: bool) -> str:
    label = status.value
    if planned and status in (Status.CREATED, Status.UPDATED):
        label = {"created": "to create", "updated": "to update"}[status.value]
    elif planned and status is Status.UNCHANGED:
        label = "up to date"
    return f"[{STYLE[status]}]{label}[/]"


class StepView:
    """Receives step events from any thread and draws them."""

    def __init__(self, steps: list[StepDef], *, planned: bool = False, console: Console | None = None) -> None:
        self.planned = planned
        self.console = console or out
        self.live = self.console.is_terminal
        self._lock = threading.Lock()
        # Fixed widths for everything but the note, which alone is cut to fit (Rich would cut every column,
        # the time first): the time stays whole at any width.
        self._progress = Progress(
            SpinnerColumn(finished_text=" ", table_column=Column(width=1, no_wrap=True)),
            TextColumn("{task.fields[step]}", table_column=Column(width=15, no_wrap=True)),
            TextColumn("{task.fields[state]}", table_column=Column(width=10, no_wrap=True)),
            TimeElapsedColumn(table_column=Column(width=7, no_wrap=True)),
            TextColumn("[dim]{task.fields[note]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
            console=self.console,
            transient=True,  # the summary or the plan that follows shows every row once
            disable=not self.live,
        )
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        for step in steps:
            self._tasks[step.name] = self._progress.add_task(
                step.name, start=False, total=1, step=step.name, state=_state(Status.WAITING, planned), note=""
            )

    def _note(self, message: str) -> str:
        """The latest action, cut to what is left of the line after the fixed columns."""
        room = max(self.console.width - NOTE_COLUMN, 10)
        return message if len(message) <= room else message[: room - 1] + "…"

    def __enter__(self) -> StepView:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    @contextmanager
    def paused(self):
        """Stop redrawing while the user answers a question on the terminal."""
        with self._lock:
            if self.live:
                self._progress.stop()
            try:
                yield
            finally:
                if self.live:
                    self._progress.start()

    def on_event(self, event: Event) -> None:
        with self._lock:
            task = self._tasks.get(event.step)
            if event.kind == "log":
                self._progress.console.print(f"[dim]{event.step}:[/] {event.message}", markup=True)
                if task is not None:
                    self._progress.update(task, note=self._note(event.message))
                return
            if task is None or event.status is None:
                return
            if event.status is Status.RUNNING:
                self._started[event.step] = time.monotonic()
                self._progress.start_task(task)
            state = _state(event.status, self.planned)
            self._progress.update(task, state=state)
            if event.status in FINAL:
                note = self._note(event.message.split(". ")[0]) if event.status is Status.FAILED else ""
                self._progress.update(task, completed=1, note=note)
                self._progress.stop_task(task)
            if not self.live and not self.planned:  # a plan is read whole after: no line per step before it
                elapsed = time.monotonic() - self._started.get(event.step, time.monotonic())
                timing = f" ({elapsed:.1f}s)" if event.status in FINAL and event.step in self._started else ""
                self.console.print(f"{event.step:<16} {state}{timing}")


def summary_table(report: RunReport, *, planned: bool, wide: bool = False, width: int | None = None):
    """A line per step that fits `width` (the console's): result, time, the changes by short name. `wide`: a
    table with the full name of every change."""
    if wide:
        return _wide_summary(report, planned=planned)
    from rich.console import Group

    from mlflow_gcp.cli.names import fit

    width = width or out.width
    lines = [f"[bold]{'Plan' if planned else 'Summary'}[/]"]
    for name, status in report.statuses.items():
        result: StepResult | None = report.results.get(name)
        seconds = f"{result.seconds:.1f}s" if result else ""
        changes = "; ".join(short_change_text(c) for c in (result.changes if result else []))
        label = _state(status, planned)
        pad = " " * (10 - len(_plain_state(status, planned)))
        lines.append(f"{name:<15} {label}{pad} {seconds:>6} {escape(fit(changes, width - 34))}".rstrip())
    return Group(*lines)


def _plain_state(status: Status, planned: bool) -> str:
    from rich.text import Text

    return Text.from_markup(_state(status, planned)).plain


def _wide_summary(report: RunReport, *, planned: bool) -> Table:
    table = Table(title="Plan" if planned else "Summary", show_lines=False)
    table.add_column("step")
    table.add_column("result")
    table.add_column("changes" if not planned else "would change", overflow="fold")
    table.add_column("time", justify="right")
    for name, status in report.statuses.items():
        result: StepResult | None = report.results.get(name)
        changes = "\n".join(change_text(c) for c in result.changes) if result else ""
        seconds = f"{result.seconds:.1f}s" if result else ""
        table.add_row(name, _state(status, planned), changes, seconds)
    return table


def change_text(change: Change) -> str:
    """`~ Cloud SQL instance NAME: tier (restarts the database for a few minutes)`, disruptive ones in red."""
    if change.action == "create":
        return f"[green]+[/] {escape(change.resource)}"
    mark = "[bold red]![/]" if change.disruptive or change.impossible else "[yellow]~[/]"
    return f"{mark} {escape(change.resource)}: {escape(change.describe())}"


def short_change_text(change: Change) -> str:
    """`! sql instance NAME: tier (restarts the database for a few minutes)`, plain text, by short name."""
    from mlflow_gcp.cli.names import short_name

    if change.action == "create":
        return f"+ {short_name(change.resource)}"
    mark = "!" if change.disruptive or change.impossible else "~"
    return f"{mark} {short_name(change.resource)}: {change.describe()}"
