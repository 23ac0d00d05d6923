"""Run the preflight before a command changes anything; show its warnings, and stop with one message that lists
every problem it found."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import typer

from mlflow_gcp.cli.console import bullets, err
from mlflow_gcp.config import Settings
from mlflow_gcp.gcp.clients import Clients

ALL_CHECKS = ("project", "billing", "permissions", "org policy")


def preflight_or_exit(
    settings: Settings,
    clients: Clients,
    *,
    steps: Iterable[str] = (),
    checks: Sequence[str] = ALL_CHECKS,
    skip: bool = False,
    blocking: bool = True,
    permissions: Sequence[str] | None = None,
) -> None:
    """`blocking=False` (dry runs): problems are shown as warnings and the command goes on, unless nothing can
    be read at all (no credentials, no project)."""
    if skip:
        return
    from rich.markup import escape

    from mlflow_gcp.preflight import ERROR, run_preflight

    report = run_preflight(settings, clients, steps=steps, checks=checks, permissions=permissions)
    fatal = [f for f in report.errors if blocking or f.check in ("credentials", "project")]
    for finding in report.findings:
        if finding not in fatal:
            hint = f" {finding.hint}" if finding.hint and finding.severity == ERROR else ""
            err.print(f"[yellow]Preflight:[/] {escape(finding.message)}{escape(hint)}")
    if not fatal:
        return
    count = f"{len(fatal)} problems" if len(fatal) > 1 else "a problem"
    err.print(
        f"[bold red]Error:[/] preflight found {count} in {escape(settings.project)}; nothing was changed.",
        soft_wrap=False,
    )
    bullets(err, [(finding.message, finding.hint) for finding in fatal])
    err.print("Fix these and run the same command again (`--skip-preflight` skips these checks).")
    raise typer.Exit(1)
