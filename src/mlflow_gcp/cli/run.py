"""Shared by `up` and `step`: run a set of steps with the live view, then print the summary."""

from __future__ import annotations

import typer

from mlflow_gcp.cli.console import err, out, show_error
from mlflow_gcp.cli.plan_view import plan_lines, summary_line
from mlflow_gcp.cli.preflight import preflight_or_exit
from mlflow_gcp.cli.progress import StepView, summary_table
from mlflow_gcp.config import Settings
from mlflow_gcp.engine.base import Mode, StepContext
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.orchestrator import RunReport, run_concurrently
from mlflow_gcp.steps import StepDef, load_prerequisites


def run_with_view(
    settings: Settings,
    steps: list[StepDef],
    *,
    dry_run: bool,
    yes: bool = False,
    wide: bool = False,
    skip_preflight: bool = False,
    as_json: bool = False,
    exit_code: bool = False,
    existed: frozenset[str] | set[str] = frozenset(),
) -> RunReport:
    """`yes` accepts the changes that restart or replace something; without it they are asked on a terminal
    and refused elsewhere, before anything is sent for them. `wide`: the summary with full names. The preflight
    runs first (a dry run shows its problems and goes on). `as_json`: the outcome as one JSON document on stdout,
    everything else on stderr. `exit_code` (with `dry_run`): exit 2 when the plan has changes, 1 on any error.
    `existed`: labels of the data-bearing resources the deployment had (it has a record): one this run creates
    had been deleted, and is said to be new and empty."""
    from mlflow_gcp.cli.approval import cli_approval

    mode = Mode.PLAN if dry_run else Mode.APPLY
    clients = Clients(settings.project)
    clients.prewarm()
    preflight_or_exit(settings, clients, steps=[step.name for step in steps], skip=skip_preflight, blocking=not dry_run)
    if not dry_run and "deploy" in {step.name for step in steps}:
        _refuse_downgrade(settings, clients)
    show = err if as_json else out
    with StepView(steps, planned=dry_run, console=show) as view:
        ctx = StepContext(
            settings=settings,
            clients=clients,
            mode=mode,
            on_event=view.on_event,
            approve=cli_approval(yes=yes, pause=view.paused),
        )
        load_prerequisites(tuple(step.name for step in steps), ctx)
        report = run_concurrently(steps, ctx)
    url = ctx.outputs.get("service.url")
    if as_json:
        import json
        import sys

        sys.stdout.write(json.dumps(run_document(report, url=url, planned=dry_run), indent=2) + "\n")
        sys.stdout.flush()
    elif dry_run and not wide:
        for line in plan_lines(report, out.width):
            out.print(line, soft_wrap=True)
    else:
        out.print(summary_table(report, planned=dry_run, wide=wide))
    if report.ok:
        show.print(summary_line(report, planned=dry_run))
    _announce_interruptions(report, planned=dry_run, console=show)
    if existed:
        _announce_new_empty(report, existed, settings.project, planned=dry_run)
    if report.ok and url and not dry_run:
        _refuse_if_database_refused(settings, clients, url)
        show.print(f"\nMLflow is ready at [bold]{url}[/]")
        from mlflow_gcp.cli.project import eval_line

        show.print(f"Use it from a shell with: [bold]{eval_line()}[/]")
    if dry_run and report.ok:
        show.print("Dry run: nothing was changed.")
    if not report.ok:
        code = 1
        several = len(report.errors) > 1
        for index, (step, error) in enumerate(report.errors.items()):
            if index:
                err.print()
            step_code = show_error(error, step if several else None)
            code = step_code if index == 0 else code
        err.print("Fix the cause and run the same command again: finished work is kept and not redone.")
        raise typer.Exit(1 if exit_code else code)
    return report


def _refuse_downgrade(settings: Settings, clients: Clients) -> None:
    """An image older than the MLflow the server runs is refused before any step sends anything (the deploy step
    refuses it too, and `--dry-run` shows it)."""
    from mlflow_gcp.errors import MlflowGcpError
    from mlflow_gcp.operate.login import current_login
    from mlflow_gcp.steps.mlflow_version import refuse_downgrade

    def admin() -> tuple[str, str] | None:
        try:
            login = current_login(settings, clients)
        except MlflowGcpError:
            return None
        return login.username, login.password

    try:
        refuse_downgrade(settings, clients, admin)
    except MlflowGcpError as error:
        raise typer.Exit(show_error(error)) from None


def _refuse_if_database_refused(settings: Settings, clients: Clients, url: str) -> None:
    """Never "MLflow is ready" for a server that cannot use its database (a MySQL password reset by hand)."""
    from mlflow_gcp.errors import MlflowGcpError
    from mlflow_gcp.operate.login import current_login
    from mlflow_gcp.resources.server_check import checkable, database_refused_after_deploy

    if not checkable(url):
        return
    try:
        login = current_login(settings, clients)
    except MlflowGcpError:
        return  # the login cannot be read here: status says why
    check = database_refused_after_deploy(url, login.username, login.password)
    if check is None:
        return
    error = MlflowGcpError(
        f"Everything is deployed, but the server at {url} cannot use its database: an authenticated call "
        f"answered {check.status}. Most likely the Cloud SQL user no longer has the MySQL password of "
        "mysql-credentials (reset by hand, e.g. in the Console), which `up` does not change.",
        "Run `mlflow-gcp credentials rotate --database`: it gives the MySQL user a new password and rolls out the "
        f"server with it. If that does not help, the server's logs say why: `gcloud run services logs read "
        f"{settings.service} --region {settings.region} --project {settings.project}`.",
    )
    raise typer.Exit(show_error(error))


def run_document(report: RunReport, *, url: str | None, planned: bool) -> dict:
    """What `up --json` prints: every step with its result, time and changes under their full names."""
    return {
        "ok": report.ok,
        "dry_run": planned,
        "url": url,
        "steps": [
            {
                "step": name,
                "result": status.value,
                "seconds": round(report.results[name].seconds, 1) if name in report.results else None,
                "changes": [
                    {"resource": c.resource, "action": c.action, "fields": list(c.fields), "effects": c.describe()}
                    for c in (report.results[name].changes if name in report.results else [])
                ],
                "error": str(report.errors[name]) if name in report.errors else None,
            }
            for name, status in report.statuses.items()
        ],
    }


def _announce_interruptions(report: RunReport, *, planned: bool, console=out) -> None:
    """One plain line per change that interrupts the server, so it is read even where the table wraps."""
    from rich.markup import escape

    for result in report.results.values():
        for change in result.changes:
            for field, effect in change.disruptive:
                then = " `up` asks before it (--yes accepts it)." if planned else " (accepted)"
                console.print(
                    f"[bold red]![/] {escape(change.resource)}: {field} {escape(effect.note)}.{then}", soft_wrap=True
                )


# Backups of a deleted Cloud SQL instance survive only if "retained backups" were enabled on it or a final backup was
# taken when it was deleted; otherwise deleting it erases its backups too. Retained and final backups are kept at the
# project level (https://cloud.google.com/sql/docs/mysql/backup-recovery/manage-backups-deleted-instance,
# https://cloud.google.com/sql/docs/mysql/delete-instance).
def _announce_new_empty(report: RunReport, existed, project: str, *, planned: bool) -> None:
    """A deployment existed (it has a record) and this run creates its Cloud SQL instance or bucket: they were
    deleted, and what is made is NEW and EMPTY. Said plainly, with where an instance's backups may be."""
    from rich.markup import escape

    verb = "would create" if planned else "created"
    for result in report.results.values():
        for change in result.changes:
            if change.action != "create" or change.resource not in existed:
                continue
            if change.resource.startswith("Cloud SQL instance "):
                err.print(
                    f"[bold red]![/] {escape(change.resource)}: {verb} a NEW, EMPTY instance (the deployment had one: "
                    "it was deleted). The old data is gone unless restored from a backup: Cloud SQL keeps a deleted "
                    "instance's backups only if retained backups were enabled on it or a final backup was taken when "
                    f"it was deleted; those are listed by `gcloud sql backups list --project {project}` (Console: "
                    "Cloud SQL > Backups) and restored with `gcloud sql backups restore`.",
                    soft_wrap=True,
                )
            elif change.resource.startswith("bucket "):
                err.print(
                    f"[bold red]![/] {escape(change.resource)}: {verb} a NEW, EMPTY bucket (the deployment had one: it "
                    "was deleted); the artifacts logged so far are gone unless the old bucket is restored (Cloud "
                    "Storage soft delete) or copied back.",
                    soft_wrap=True,
                )


def show_resolution(resolution) -> None:
    """Say which recorded settings this run changes and which live values it adopts (on stderr)."""
    from rich.markup import escape

    from mlflow_gcp.remembered import describe_source

    for name, (old, new) in resolution.changed_from_record().items():
        source = describe_source(name, resolution.sources[name])
        err.print(f"[dim]settings:[/] {name.replace('_', '-')} {escape(str(old))} -> {escape(str(new))} ({source})")
    if resolution.adopted:
        adopted = ", ".join(f"{n.replace('_', '-')}={v}" for n, v in resolution.adopted.items())
        err.print(f"[dim]settings:[/] adopted from the live deployment: {escape(adopted)}")
