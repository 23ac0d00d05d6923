"""`mlflow-gcp status`: every resource of the deployment, its drift, and live checks of the server."""

from __future__ import annotations

import json
import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings


@with_settings
def status(
    settings: Settings,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout, nothing else."),
) -> None:
    """Show what exists, what differs from the configuration, and whether the server answers. Reads only.

    Exit code 0 when everything is present and healthy, 1 otherwise."""
    from mlflow_gcp.operate.status import collect_status

    if as_json:
        report = collect_status(settings)
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        with err.status(f"Reading the deployment in {settings.project}...", spinner="dots"):
            report = collect_status(settings)
        _show(report)
    raise typer.Exit(0 if report.ok else 1)


def _details(details: dict[str, str]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in details.items())


def _show(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Deployment in {report.inventory.ctx.project} ({report.inventory.ctx.region})")
    for column in ("step", "resource", "exists", "state", "details"):
        table.add_column(column, overflow="fold")
    for entry in report.inventory.steps:
        if entry.error is not None:
            table.add_row(entry.step, "", "", "[bold red]unreadable[/]", escape(entry.error.message))
        for i, item in enumerate(entry.items):
            state = item.state
            if not state.exists:
                exists, text = "[red]no[/]", "[red]missing[/]"
            elif state.drift:
                exists, text = "yes", f"[yellow]drift: {escape(', '.join(state.drift))}[/]"
            else:
                exists, text = "yes", "[green]ok[/]"
            table.add_row(
                entry.step if i == 0 else "", escape(state.label), exists, text, escape(_details(state.details))
            )
    out.print(table)
    if report.server is not None:
        checks = Table(title=f"Server {report.url}")
        for column in ("check", "expected", "answer", "result"):
            checks.add_column(column)
        for check in report.server.checks:
            answer = str(check.status) if check.status is not None else escape(check.detail or "no answer")
            checks.add_row(check.name, str(check.expected), answer, "[green]ok[/]" if check.ok else "[red]failed[/]")
        out.print(checks)
    if report.ok:
        out.print("[green]Everything is present, as configured, and the server answers.[/]")
    else:
        out.print(f"[bold red]{len(report.problems)} problem(s):[/]")
        for problem in report.problems:
            out.print(f"  - {escape(problem)}")
        out.print("Run `mlflow-gcp up` to create or fix what is missing or differs.")
