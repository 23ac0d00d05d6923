"""`mlflow-gcp logs`: the server's recent log lines from Cloud Logging, `--follow` to keep reading."""

from __future__ import annotations

import json
import os
import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings

POLL_ENV = "MLFLOW_GCP_LOGS_POLL_SECONDS"  # how often --follow asks (default: operate.logs.FOLLOW_INTERVAL_SECONDS)
SEVERITY_STYLE = {"WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red", "ALERT": "bold red"}


@with_settings
def logs(
    settings: Settings,
    since: str = typer.Option(
        "1h",
        "--since",
        metavar="DURATION|TIME",
        help="From how long ago: 30s, 10m, 1h, 2d, or a time (2026-12-07T18:00:00Z).",
    ),
    errors: bool = typer.Option(False, "--errors", "-e", help="Only entries of severity ERROR and above."),
    limit: int = typer.Option(100, "--limit", "-n", metavar="COUNT", min=1, help="At most this many lines (newest)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep reading new lines until Ctrl-C."),
    as_json: bool = typer.Option(
        False, "--json", help="JSON on stdout: one document; with --follow, one object per line."
    ),
) -> None:
    """Show the server's recent log lines (Cloud Logging, the Cloud Run service's entries). Reads only.

    Lines of an MLflow upgrade's migration job are shown too, labelled `migration job EXECUTION`.

    Passwords and tokens found in a line are shown as ***."""
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.operate import logs as source

    clients = Clients(settings.project)
    start = source.parse_since(since)
    lines = source.recent(clients, settings, since=start, errors_only=errors, limit=limit)
    if as_json and not follow:
        document = {
            "project": settings.project,
            "region": settings.region,
            "service": settings.service,
            "since": source.rfc3339(start),
            "entries": [line.as_dict() for line in lines],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    show = _json_line if as_json else _show
    for line in lines:
        show(line)
    if not follow:
        if not lines:
            what = "error lines" if errors else "log lines"
            err.print(f"No {what} from {settings.service} in {settings.project} ({settings.region}) since {since}.")
        return
    interval = float(os.environ.get(POLL_ENV) or source.FOLLOW_INTERVAL_SECONDS)
    err.print(f"[dim]Following {settings.service}: a read every {interval:g} s; Ctrl-C stops.[/]")
    try:
        for line in source.follow(
            clients, settings, after=lines, since=start, errors_only=errors, pause=lambda: _pause(interval)
        ):
            show(line)
    except KeyboardInterrupt:
        err.print("[dim]Stopped.[/]")


def _pause(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _json_line(line) -> None:
    sys.stdout.write(json.dumps(line.as_dict()) + "\n")
    sys.stdout.flush()


def _show(line) -> None:
    from rich.markup import escape

    style = SEVERITY_STYLE.get(line.severity, "")
    severity = f"[{style}]{line.severity:<8}[/]" if style else f"{line.severity:<8}"
    source = f"[magenta]{escape(line.source)}:[/] " if line.source else ""
    out.print(f"[dim]{line.timestamp[:19].replace('T', ' ')}[/] {severity} {source}{escape(line.text)}", soft_wrap=True)
