"""The `mlflow-gcp` command line. Importing it must stay cheap: Google libraries load only when a command
talks to Google."""

from __future__ import annotations

from pathlib import Path

import typer

from mlflow_gcp import __version__
from mlflow_gcp.cli import (
    backup,
    cost,
    credentials,
    down,
    export,
    help_format,
    logs,
    open_ui,
    restore,
    status,
    step,
    up,
    users,
)
from mlflow_gcp.cli.console import debug, out

_ = help_format  # imported for its effect on --help

app = typer.Typer(
    name="mlflow-gcp",
    help="A secured MLflow tracking server on Google Cloud, with one command.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"mlflow-gcp {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug_flag: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.", envvar="MLFLOW_GCP_DEBUG"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Provision and operate MLflow on Cloud Run, Cloud SQL, GCS and Secret Manager.

    Settings come from flags, MLFLOW_GCP_* environment variables, or a .env file in the working directory.
    """
    debug.enabled = debug_flag


DEPLOY, READ, USE, DATA = "Deploy", "Look", "Use", "Backups"
app.command("up", rich_help_panel=DEPLOY)(up.up)
app.add_typer(step.app, name="step", rich_help_panel=DEPLOY)
app.command("down", rich_help_panel=DEPLOY)(down.down)
app.add_typer(export.app, name="export", rich_help_panel=DEPLOY)
app.command("status", rich_help_panel=READ)(status.status)
app.command("logs", rich_help_panel=READ)(logs.logs)
app.command("cost", rich_help_panel=READ)(cost.cost)
app.command("open", rich_help_panel=USE)(open_ui.open_ui)
app.add_typer(credentials.app, name="credentials", rich_help_panel=USE)
app.add_typer(users.app, name="users", rich_help_panel=USE)
app.add_typer(backup.app, name="backup", rich_help_panel=DATA)
app.command("restore", rich_help_panel=DATA)(restore.restore)


def main() -> None:
    import os
    import sys

    from mlflow_gcp import env_file
    from mlflow_gcp.cli.console import err, show_error
    from mlflow_gcp.errors import MlflowGcpError

    try:
        from_file = env_file.load(Path.cwd() / ".env")
    except MlflowGcpError as error:
        sys.exit(show_error(error))
    for warning in env_file.warnings(from_file, os.environ):
        err.print(f"[yellow]Warning:[/] {warning}", markup=True, highlight=False)
    from mlflow_gcp.cli.lazy import run

    run(app, sys.argv[1:])
