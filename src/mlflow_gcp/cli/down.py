"""`mlflow-gcp down`: remove what `up` made, keeping the data (database, bucket, secrets) unless asked."""

from __future__ import annotations

import typer

from mlflow_gcp.cli import console
from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import SKIP_PREFLIGHT, with_settings
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError


def _confirmable(settings: Settings, *, delete_data: bool, yes: bool, dry_run: bool, **_) -> None:
    """Without a terminal, refuse before any request (even reading the recorded settings) unless --yes."""
    if not (dry_run or yes or console.interactive()):
        what = "the MLflow service and its data" if delete_data else "the MLflow service (the data is kept)"
        raise ConfigError(
            f"`mlflow-gcp down` deletes {what} in {settings.project} and asks for confirmation first, but there "
            "is no terminal to ask on. Nothing was read or deleted.",
            "Pass --yes to confirm in a script or CI (--dry-run lists what would be deleted), or run it in a "
            "terminal.",
        )


def _preflight(settings: Settings, options: dict) -> dict:
    """down's preflight, run before the recorded settings are read: the project and the permissions it deletes
    with."""
    from mlflow_gcp.preflight.permissions import down_permissions

    return {
        "checks": ("project", "permissions"),
        "permissions": down_permissions(settings, delete_data=options["delete_data"]),
        "blocking": not options["dry_run"],
    }


@with_settings(precheck=_confirmable, preflight=_preflight)
def down(
    settings: Settings,
    resolution,
    delete_data: bool = typer.Option(
        False, "--delete-data", help="Also delete the database, the bucket and the secrets (asks for the project id)."
    ),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Do not ask for confirmation (for scripts and CI; needed without a terminal)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    skip_preflight: bool = SKIP_PREFLIGHT,
) -> None:
    """Delete the deployment in reverse order, keeping the data (database, bucket, secrets) unless --delete-data.

    Asks first on a terminal; elsewhere (CI, scripts) --yes is required. The APIs and the default network are
    never touched. Safe to rerun."""
    from rich.markup import escape

    from mlflow_gcp.cli.down_view import show_plan
    from mlflow_gcp.cli.left_behind_view import show_left_behind
    from mlflow_gcp.cli.preflight import preflight_or_exit
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.inventory import read_inventory
    from mlflow_gcp.moves import check_same_region
    from mlflow_gcp.operate.left_behind import find_left_behind
    from mlflow_gcp.operate.teardown import (
        DELETE,
        abandoned_notes,
        holds_data,
        nothing_deployed,
        plan_teardown,
        reserved_names,
        run_teardown,
    )
    from mlflow_gcp.preflight.permissions import down_permissions

    check_same_region(resolution, "down")
    clients = Clients(settings.project)

    preflight_or_exit(
        settings,
        clients,
        checks=("project", "permissions"),
        permissions=down_permissions(settings, delete_data=delete_data),
        skip=skip_preflight,
        blocking=not dry_run,
    )
    with err.status(f"Reading the deployment in {settings.project}...", spinner="dots"):
        inventory = read_inventory(settings, clients=clients)
        left_behind = find_left_behind(settings, clients)
    if nothing_deployed(inventory):
        out.print(
            f"Nothing is deployed in {settings.project}: the Google APIs the deployment uses are not enabled there, "
            "so nothing to delete."
        )
        return
    plan = plan_teardown(inventory, delete_data=delete_data)
    to_delete = [r for r in plan if r.action == DELETE]
    show_plan(out, plan, settings, dry_run=dry_run)
    show_left_behind(out, left_behind, command="down")
    if not to_delete:
        out.print("Nothing to delete." + (" Kept resources are listed above." if plan else ""))
        return
    if dry_run:
        for note in reserved_names(plan, done=False):
            out.print(f"[yellow]Note:[/] {escape(note)}")
        out.print("Dry run: nothing was deleted.")
        return
    question = f"Delete these {len(to_delete)} resource(s) from {settings.project}?"
    if not yes and not delete_data and not typer.confirm(question, default=False, err=True):
        err.print("Nothing was deleted.")
        raise typer.Exit(1)
    if delete_data and not yes:
        err.print(
            f"[bold red]This deletes the MLflow data for good[/] (runs database, artifacts, passwords) in "
            f"{settings.project}."
        )
        typed = typer.prompt("Type the project id to confirm", err=True, default="", show_default=False)
        if typed.strip() != settings.project:
            err.print("The project id does not match: nothing was deleted.")
            raise typer.Exit(1)
    try:
        run_teardown(plan, log=lambda m: err.print(f"[dim]down:[/] {escape(m)}"))
    finally:
        _show_outcomes(plan)
    for note in reserved_names(plan) + abandoned_notes(plan):
        out.print(f"[yellow]Note:[/] {escape(note)}")
    unsupported = [r for r in plan if r.outcome == "not supported"]
    if unsupported:
        out.print("[yellow]Not deleted (this tool cannot delete them; delete them yourself):[/]")
        for removal in unsupported:
            out.print(f"  - {escape(removal.label)}")
    kept_data = [r for r in plan if r.action != DELETE and holds_data(r.resource)]
    from mlflow_gcp.cli.project import with_identity_flags

    note = with_identity_flags(" The data is kept: `mlflow-gcp up` brings the service back on it.") if kept_data else ""
    out.print("[green]Done.[/]" + note)


def _show_outcomes(plan) -> None:
    from rich.markup import escape

    for removal in plan:
        if removal.outcome == "failed":
            err.print(f"[red]failed:[/] {escape(removal.label)}")
    deleted = [r for r in plan if r.outcome == "deleted"]
    if deleted:
        out.print(f"Deleted {len(deleted)} resource(s).")
