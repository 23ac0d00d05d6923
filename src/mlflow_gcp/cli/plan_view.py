"""The plan of `up --dry-run` / `step --dry-run` at 80 columns: a line per step, then a line per change under it
(wrapped, never cut: what changes is named before any detail), and Terraform's summary line
(`Plan: 3 to create, 1 to change, 1 to replace/restart.`). `--exit-code` makes the plan's outcome the exit
code, as `terraform plan -detailed-exitcode`: 0 no changes, 2 changes pending, 1 error."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import typer

CHANGES_PENDING = 2


class ChangesPending(typer.Exit):
    """The exit of `--dry-run --exit-code` when the plan has changes (not a bad setting's 2)."""

    def __init__(self) -> None:
        super().__init__(CHANGES_PENDING)


@dataclass(frozen=True)
class Counts:
    create: int = 0
    change: int = 0
    disrupt: int = 0  # replaced or restarted: the changes `up` asks about

    @property
    def total(self) -> int:
        return self.create + self.change + self.disrupt


def counts(report) -> Counts:
    create = change = disrupt = 0
    for result in report.results.values():
        for c in result.changes:
            if c.action == "create":
                create += 1
            elif c.disruptive or c.impossible:
                disrupt += 1
            else:
                change += 1
    return Counts(create, change, disrupt)


def summary_line(report, *, planned: bool) -> str:
    n = counts(report)
    if planned:
        if not n.total:
            return "Plan: no changes; everything exists as configured."
        return f"Plan: {n.create} to create, {n.change} to change, {n.disrupt} to replace/restart."
    if not n.total:
        return "Done: nothing needed a change."
    return f"Done: {n.create} new, {n.change} changed, {n.disrupt} replaced/restarted."


def plan_lines(report, width: int) -> list[str]:
    """Rich markup: a line per step, a line per change under it, wrapped under its own text."""
    from rich.markup import escape

    from mlflow_gcp.cli.progress import _state, short_change_text

    lines = ["[bold]Plan[/]"]
    for name, status in report.statuses.items():
        result = report.results.get(name)
        lines.append(f"{name:<15} {_state(status, True)}")
        for change in result.changes if result else []:
            for part in textwrap.wrap(short_change_text(change), width=max(width - 2, 30), subsequent_indent="    "):
                lines.append("  " + escape(part))
    return lines
