"""The `mlflow-gcp` command line. Importing it must stay cheap: a command's module loads only when that command
runs or shows its help (cli/lazy.py), Google libraries only when a command talks to Google."""

from __future__ import annotations

from pathlib import Path

import typer

from mlflow_gcp import __version__
from mlflow_gcp.cli.lazy import Entry, LazyGroup, print_help_directly

DEPLOY, READ, USE, DATA = "Deploy", "Look", "Use", "Backups"


class Root(LazyGroup):
    entries = (
        Entry(
            "up",
            "up:up",
            DEPLOY,
            "Create or update the whole deployment. Safe to rerun: what exists and matches is left alone.",
        ),
        Entry("step", "step:app", DEPLOY, "Run one setup step. Steps it needs must have run before."),
        Entry(
            "down",
            "down:down",
            DEPLOY,
            "Delete the deployment in reverse order, keeping the data (database, "
            "bucket, secrets) unless --delete-data.",
        ),
        Entry("export", "export:app", DEPLOY, "Write the deployment in another tool's format."),
        Entry(
            "status",
            "status:status",
            READ,
            "Show what exists, what differs from the configuration, and whether the server answers. Reads only.",
        ),
        Entry(
            "logs",
            "logs:logs",
            READ,
            "Show the server's recent log lines (Cloud Logging, the Cloud Run service's entries). Reads only.",
        ),
        Entry(
            "cost",
            "cost:cost",
            READ,
            "Estimate what the deployment costs per month, from Google's price catalog "
            "for the region when it can be read, otherwise from a price table shipped with the tool (its date and "
            "source are printed). Reads only.",
        ),
        Entry(
            "open",
            "open_ui:open_ui",
            USE,
            "Open the MLflow UI in the browser (it asks for the login of "
            "`mlflow-gcp credentials`). Without a browser or a terminal, print its URL.",
        ),
        Entry(
            "credentials", "credentials:app", USE, "Print the login of the MLflow server; `rotate` gives new passwords."
        ),
        Entry("users", "users:app", USE, "Users of the MLflow server and their permissions."),
        Entry(
            "backup",
            "backup:app",
            DATA,
            "Take an on-demand Cloud SQL backup now; `list` shows the backups and the point-in-time window.",
        ),
        Entry(
            "restore",
            "restore:restore",
            DATA,
            "Restore a backup, or the state at a time, into a NEW Cloud SQL instance and move the server onto it.",
        ),
    )


app = typer.Typer(
    name="mlflow-gcp",
    cls=Root,
    help="A secured MLflow tracking server on Google Cloud, with one command.",
    no_args_is_help=True,
    rich_markup_mode=None,  # Click's plain help, in sections (cli/help_format.py)
    pretty_exceptions_enable=False,
    # Help as wide as the terminal up to 120 columns (Click's own limit is 80).
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)


def _version(value: bool) -> None:
    if value:
        print(f"mlflow-gcp {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug_flag: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.", envvar="MLFLOW_GCP_DEBUG"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Provision and operate MLflow on Cloud Run, Cloud SQL, GCS and Secret Manager.

    Settings come from flags, MLFLOW_GCP_* environment variables, or a .env file in the working directory.
    """
    from mlflow_gcp.cli.console import debug  # not at the top: `mlflow-gcp --help` draws nothing with Rich

    debug.enabled = debug_flag


def main() -> None:
    import os
    import sys

    from mlflow_gcp import env_file
    from mlflow_gcp.errors import MlflowGcpError

    try:
        from_file = env_file.load(Path.cwd() / ".env")
    except MlflowGcpError as error:
        from mlflow_gcp.cli.console import show_error

        sys.exit(show_error(error))
    for warning in env_file.warnings(from_file, os.environ):
        from mlflow_gcp.cli.console import err

        err.print(f"[yellow]Warning:[/] {warning}", markup=True, highlight=False)
    if not print_help_directly(app, sys.argv[1:]):
        app()
