"""The `mlflow-gcp` command line. Importing it must stay cheap: Google libraries load only when a command
talks to Google."""

from __future__ import annotations

from pathlib import Path

import typer

from mlflow_gcp import __version__
from mlflow_gcp.cli import cost, credentials, down, export, status, step, up, users
from mlflow_gcp.cli.console import debug, out

app = typer.Typer(
    name="mlflow-gcp",
    help="A secured MLflow tracking server on Google Cloud, with one command.",
    no_args_is_help=True,
    rich_markup_mode=None,
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


app.command("up")(up.up)
app.add_typer(step.app, name="step")
app.command("status")(status.status)
app.command("credentials")(credentials.credentials)
app.command("down")(down.down)
app.add_typer(export.app, name="export")
app.command("cost")(cost.cost)
app.add_typer(users.app, name="users")


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
    app()
