"""`mlflow-gcp open`: the MLflow UI in the browser, or its URL where there is none."""

from __future__ import annotations

import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings


@with_settings
def open_ui(
    settings: Settings,
    print_only: bool = typer.Option(False, "--print", help="Print the URL; open nothing."),
) -> None:
    """Open the MLflow UI in the browser (it asks for the login of `mlflow-gcp credentials`). Without a browser
    or a terminal, print its URL."""
    from mlflow_gcp.errors import MlflowGcpError
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.resources.live_service import read_service

    service = read_service(settings, Clients(settings.project))
    if service is None or not service.uri:
        raise MlflowGcpError(
            f"Nothing is deployed in {settings.project} (region {settings.region}): there is no MLflow UI to open.",
            f"Run `mlflow-gcp up --project {settings.project}`.",
        )
    url = service.uri
    if print_only or not _terminal() or not _open(url):
        out.print(url, markup=False, soft_wrap=True)
        return
    from mlflow_gcp.cli.project import with_identity_flags

    err.print(with_identity_flags(f"Opened {url} (the login: `mlflow-gcp credentials`)."), markup=False)


def _terminal() -> bool:
    return sys.stdout.isatty()


def _open(url: str) -> bool:
    """Whether a browser took the URL (`webbrowser` finds none on a server or over SSH)."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
