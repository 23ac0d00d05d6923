"""`mlflow-gcp restore BACKUP_ID | --to-time TIME`: the databases as they were, in a new Cloud SQL instance, with
the server moved onto it; the previous instance is kept untouched."""

from __future__ import annotations

import datetime as dt
import json
import sys

import typer

from mlflow_gcp.cli import console
from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import JSON_RESULT, with_settings
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError, MlflowGcpError


def parse_point(backup_id: str, to_time: str):
    from mlflow_gcp.operate.restore import RestorePoint

    if bool(backup_id) == bool(to_time):
        raise ConfigError(
            "Give either a backup id (`mlflow-gcp restore BACKUP_ID`, ids in `mlflow-gcp backup list`) or a time "
            "(`mlflow-gcp restore --to-time 2026-12-07T18:30:00Z`), not both or neither."
        )
    if backup_id:
        if not backup_id.isdigit():
            raise ConfigError(f"'{backup_id}' is not a backup id: ids are numbers (see `mlflow-gcp backup list`).")
        return RestorePoint(backup_id=backup_id)
    try:
        when = dt.datetime.fromisoformat(to_time.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise ConfigError(
            f"--to-time {to_time}: not a time. Give it as RFC 3339, e.g. 2026-12-07T18:30:00Z (UTC) or "
            "2026-12-07T19:30:00+01:00."
        ) from e
    if when.tzinfo is None:
        raise ConfigError(
            f"--to-time {to_time} has no time zone: add Z for UTC (2026-12-07T18:30:00Z) or an offset (+01:00)."
        )
    return RestorePoint(time=when.astimezone(dt.timezone.utc))


def _refuse_without_terminal(settings: Settings, *, yes: bool, dry_run: bool, backup_id: str, to_time: str, **_):
    parse_point(backup_id, to_time)
    if not (dry_run or yes or console.interactive()):
        raise ConfigError(
            "`mlflow-gcp restore` creates a Cloud SQL instance and moves the server onto it, and asks first, but "
            "there is no terminal to ask on. Nothing was read or changed.",
            "Pass --yes to go ahead in a script or CI (--dry-run shows what it would do), or run it in a terminal.",
        )


@with_settings(precheck=_refuse_without_terminal)
def restore(
    settings: Settings,
    backup_id: str = typer.Argument("", metavar="BACKUP_ID", help="A backup id from `mlflow-gcp backup list`."),
    to_time: str = typer.Option(
        "", "--to-time", metavar="TIME", help="Restore the state at this time (RFC 3339, e.g. 2026-12-07T18:30:00Z)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be done; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (for scripts and CI; needed without a terminal)."),
    as_json: bool = JSON_RESULT,
) -> None:
    """Restore a backup, or the state at a time, into a NEW Cloud SQL instance and move the server onto it.

    The current instance is never changed: it keeps everything written since, until you delete it.

    A failure leaves the server on the current instance; running the same command again resumes."""
    from rich.markup import escape

    from mlflow_gcp.cli.approval import cli_approval
    from mlflow_gcp.cli.backup import stage_view
    from mlflow_gcp.operate.restore import STAGES, Restore
    from mlflow_gcp.steps import STEPS

    point = parse_point(backup_id, to_time)
    show = err if as_json else out
    job = Restore(settings, point, log=lambda m: err.print(f"[dim]restore:[/] {escape(m)}"))
    with err.status(f"Reading the deployment in {settings.project}...", spinner="dots"):
        plan = job.prepare()
    todo = plan.steps(point)
    if plan.moved:
        show.print(f"{escape(plan.new)} already holds {point.describe()} and is the deployment's instance.")
    else:
        show.print(f"[bold]Restore {escape(point.describe())}[/] of {escape(plan.previous)} into a new instance:")
        for line in todo:
            show.print(f"  - {escape(line)}", soft_wrap=True)
        show.print(f"{escape(plan.previous)} is not changed: it keeps what was written after that point.")
    if dry_run:
        if as_json:
            sys.stdout.write(json.dumps({"dry_run": True, "instance": plan.new, "would": todo}, indent=2) + "\n")
        show.print("Dry run: nothing was changed.")
        return
    if not yes and not plan.moved and not typer.confirm("Go ahead?", default=False, err=True):
        raise MlflowGcpError("The restore was declined; nothing was changed.")
    names = [*STAGES[:3], *(step.name for step in STEPS), STAGES[3]]
    with stage_view(names, show) as view:
        job.on_event = view.on_event
        job.approve = cli_approval(yes=True, pause=view.paused)  # the restore itself was accepted above
        result = job.run()
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return
    out.print(
        f"[green]Restored[/] {escape(point.describe())}: the server at {escape(result.url)} runs on "
        f"{escape(result.new_instance)}, the deployment's instance from now on.",
        soft_wrap=True,
    )
    if result.previous_instance:
        import dataclasses

        from mlflow_gcp.cli.down_view import kept_instance_cost

        previous = dataclasses.replace(
            settings,
            db_tier=result.previous_tier or settings.db_tier,
            db_edition=result.previous_edition or "ENTERPRISE",
        )
        usd = kept_instance_cost(previous)
        cost = (
            f"about ${usd:,.2f} a month ({previous.db_tier}, price table)"
            if usd
            else f"what a {previous.db_tier} instance costs (`mlflow-gcp cost`)"
        )
        out.print(
            f"The previous instance {escape(result.previous_instance)} is kept as it was, with what was written after "
            f"that point; it costs {cost} until you delete it:",
            soft_wrap=True,
        )
        from mlflow_gcp.operate.restore_plan import delete_commands

        out.print(f"    {delete_commands(result.previous_instance)}", soft_wrap=True, markup=False)
