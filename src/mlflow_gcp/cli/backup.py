"""`mlflow-gcp backup`: an on-demand Cloud SQL backup now, waited for with the live view; `backup list`: the
automated and on-demand backups and the point-in-time window."""

from __future__ import annotations

import json
import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup
from mlflow_gcp.cli.options import JSON_RESULT, with_settings
from mlflow_gcp.config import Settings


def stage_view(names: list[str], console):
    """The live view of `up`, with a line per stage of a command that is not a step."""
    from mlflow_gcp.cli.progress import StepView
    from mlflow_gcp.steps import StepDef

    return StepView([StepDef(name, "", (), "") for name in names], console=console)


app = typer.Typer(
    cls=PanelGroup,
    help="Take an on-demand Cloud SQL backup now; `list` shows the backups and the point-in-time window.",
    invoke_without_command=True,
)


@app.callback()
@with_settings
def backup(
    settings: Settings,
    why: str = typer.Option(
        "taken by hand", "--why", help="Why the backup is taken, kept in its description (e.g. 'before an upgrade')."
    ),
    as_json: bool = JSON_RESULT,
) -> None:
    """Take an on-demand backup of the Cloud SQL instance now, and wait for it; prints its id and time.

    `mlflow-gcp backup list`: the automated and on-demand backups and the point-in-time window."""
    from rich.markup import escape

    from mlflow_gcp.engine.base import Event, Status
    from mlflow_gcp.resources.sql_backups import Backups, iso

    show = err if as_json else out
    backups = Backups(settings)
    with stage_view(["backup"], show) as view:
        view.on_event(Event("backup", "status", "", Status.RUNNING))
        try:
            run = backups.take(why.strip() or "taken by hand", log=lambda m: view.on_event(Event("backup", "log", m)))
        except BaseException as error:
            view.on_event(Event("backup", "status", str(error), Status.FAILED))
            raise
        view.on_event(Event("backup", "status", "", Status.CREATED))
    if as_json:
        sys.stdout.write(json.dumps(run.as_dict(), indent=2) + "\n")
        return
    out.print(
        f"[green]Backup {run.id}[/] of {escape(backups.instance)} taken at {iso(run.time)} ({run.status}).",
        soft_wrap=True,
    )
    from mlflow_gcp.cli.project import command

    restore = command(f"mlflow-gcp restore {run.id}")
    out.print(f"Restore it into a new instance with: [bold]{restore}[/]", soft_wrap=True)


@app.command("list", cls=PanelCommand)
@with_settings
def list_backups(settings: Settings, as_json: bool = JSON_RESULT) -> None:
    """The automated and on-demand backups of the Cloud SQL instance (time, kind, status).

    Also the point-in-time window its binary logs give. Reads only."""
    _list(settings, as_json=as_json)


def _list(settings: Settings, *, as_json: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from mlflow_gcp.resources.sql_backups import Backups, age, backup_health, iso

    backups = Backups(settings)
    backups.require_instance()
    runs = backups.list()
    window = backups.window()
    newest, warning = backup_health(runs)
    if as_json:
        document = {
            "instance": backups.instance,
            "backups": [r.as_dict() for r in runs],
            "newest_successful": newest.as_dict() if newest else None,
            "warning": warning or None,
            "point_in_time_window": window.as_dict(),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    table = Table(title=f"Backups of {settings.db_instance}", box=None, header_style="dim")
    for column in ("id", "time (UTC)", "age", "kind", "status", "description"):
        table.add_column(column, overflow="fold")
    for run in runs:
        style = "green" if run.successful else "red" if run.status in ("FAILED", "SKIPPED") else "yellow"
        table.add_row(
            run.id,
            (iso(run.time) or "").replace("T", " ").rstrip("Z")[:19],
            age(run.time) if run.time else "",
            "on demand" if run.kind == "ON_DEMAND" else run.kind.lower(),
            f"[{style}]{run.status.lower()}[/]",
            escape(run.description or run.error),
        )
    if runs:
        out.print(table)
    else:
        out.print(f"No backup of {escape(settings.db_instance)} yet.")
    from mlflow_gcp.cli.project import with_identity_flags

    if warning:
        out.print(f"[yellow]Warning:[/] {escape(warning)}: {with_identity_flags('take one with `mlflow-gcp backup`')}.")
    out.print(f"Point-in-time window: {escape(window.describe())}", soft_wrap=True)
    out.print(
        with_identity_flags(
            "Restore with `mlflow-gcp restore BACKUP_ID` or `mlflow-gcp restore --to-time TIME` (a new instance)."
        )
    )


def show_backups(summary) -> None:
    """`status`: the newest successful backup and its age (a warning when none or older than 36 h), and the
    point-in-time window; lines that fit 80 columns like the resources'."""
    if summary is None:
        return
    from rich.markup import escape

    from mlflow_gcp.cli.names import fit
    from mlflow_gcp.resources.sql_backups import age

    width = max(out.width, 40)

    def line(mark: str, name: str, detail: str) -> None:
        style = {"ok": "green", "warn": "yellow", "unknown": "bold red"}[mark]
        text = fit(detail, max(width - 24, 10))
        out.print(f"[{style}]{mark:<7}[/] {name:<15} {escape(text)}", soft_wrap=True)

    out.print(fit(f"\nBackups of {summary.instance}", width + 1), soft_wrap=True)
    if summary.problem:
        line("unknown", "backups", f"unreadable: {summary.problem}")
        return
    newest = summary.newest
    if newest is None:
        line("warn", "newest backup", "none: take one with `mlflow-gcp backup`")
    else:
        when = newest.ended or newest.time
        kind = "on demand" if newest.kind == "ON_DEMAND" else newest.kind.lower()
        mark = "warn" if summary.warning else "ok"
        line(mark, "newest backup", f"{age(when)} ago ({kind}, {newest.id})")
    window = summary.window
    if window.earliest is not None and window.latest is not None:
        span = f"{_short(window.earliest)} to {_short(window.latest)} UTC"
        line("ok", "point in time", span)
    else:
        line("warn", "point in time", f"no window: {window.problem or 'binary logging is off'}")


def _short(when) -> str:
    import datetime as dt

    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
