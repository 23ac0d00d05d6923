"""Shared by `up` and `step`: run a set of steps with the live view, then print the summary."""

from __future__ import annotations

import typer

from mlflow_gcp.cli.console import err, out, show_error
from mlflow_gcp.cli.preflight import preflight_or_exit
from mlflow_gcp.cli.progress import StepView, summary_table
from mlflow_gcp.config import Settings
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.orchestrator import RunReport, run_concurrently
from mlflow_gcp.steps import StepDef
from mlflow_gcp.steps.base import Mode, StepContext
from mlflow_gcp.steps.engine import load_prerequisites


def run_with_view(
    settings: Settings,
    steps: list[StepDef],
    *,
    dry_run: bool,
    yes: bool = False,
    wide: bool = False,
    skip_preflight: bool = False,
) -> RunReport:
    """`yes` accepts the changes that restart or replace something; without it they are asked on a terminal
    and refused elsewhere, before anything is sent for them. `wide`: the summary with full names. The preflight
    runs first (a dry run shows its problems and goes on)."""
    from mlflow_gcp.cli.approval import cli_approval

    mode = Mode.PLAN if dry_run else Mode.APPLY
    clients = Clients(settings.project)
    clients.prewarm()
    preflight_or_exit(settings, clients, steps=[step.name for step in steps], skip=skip_preflight, blocking=not dry_run)
    with StepView(steps, planned=dry_run) as view:
        ctx = StepContext(
            settings=settings,
            clients=clients,
            mode=mode,
            on_event=view.on_event,
            approve=cli_approval(yes=yes, pause=view.paused),
        )
        load_prerequisites(tuple(step.name for step in steps), ctx)
        report = run_concurrently(steps, ctx)
    out.print(summary_table(report, planned=dry_run, wide=wide))
    _announce_interruptions(report, planned=dry_run)
    url = ctx.outputs.get("service.url")
    if report.ok and url and not dry_run:
        out.print(f"\nMLflow is ready at [bold]{url}[/]")
        out.print('Use it from a shell with: [bold]eval "$(mlflow-gcp credentials)"[/]')
    if dry_run and report.ok:
        out.print("Dry run: nothing was changed.")
    if not report.ok:
        error = report.first_error()
        code = show_error(error) if error else 1
        if len(report.errors) > 1:
            err.print(f"{len(report.errors) - 1} other step(s) failed too: {', '.join(list(report.errors)[1:])}.")
        err.print("Fix the cause and run the same command again: finished work is kept and not redone.")
        raise typer.Exit(code)
    return report


def _announce_interruptions(report: RunReport, *, planned: bool) -> None:
    """One plain line per change that interrupts the server, so it is read even where the table wraps."""
    from rich.markup import escape

    for result in report.results.values():
        for change in result.changes:
            for field, effect in change.disruptive:
                then = " `up` asks before it (--yes accepts it)." if planned else " (accepted)"
                out.print(
                    f"[bold red]![/] {escape(change.resource)}: {field} {escape(effect.note)}.{then}", soft_wrap=True
                )
