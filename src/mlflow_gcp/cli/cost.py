"""`mlflow-gcp cost`: the monthly cost of the deployment the settings describe."""

from __future__ import annotations

import json
import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings


def _storage_gb(value: float) -> float:
    if value < 0:
        raise typer.BadParameter("must be 0 or more")
    return value


def _without_credentials(project: str) -> str:
    """Why the catalog and the recorded settings cannot be read ("" when they can): no credentials."""
    from mlflow_gcp.errors import CredentialsError
    from mlflow_gcp.gcp.clients import Clients

    try:
        Clients(project).credentials  # noqa: B018 (finds the credentials, sends nothing)
    except CredentialsError:
        return "no Google Cloud credentials"
    return ""


@with_settings(offline_when=_without_credentials)
def cost(
    settings: Settings,
    storage_gb: float = typer.Option(
        10.0, "--storage-gb", callback=_storage_gb, help="Artifacts kept in the bucket, in GiB."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout, nothing else."),
    offline: bool = typer.Option(
        False, "--offline", help="Use the shipped price table; send no request (the default without credentials)."
    ),
) -> None:
    """Estimate what the deployment costs per month, from Google's price catalog for the region when it can be
    read, otherwise from a price table shipped with the tool (its date and source are printed). Reads only."""
    from mlflow_gcp.cost.estimate import estimate

    if isinstance(offline, str) and offline:
        from mlflow_gcp.cost.price_table import TABLE_DATE

        err.print(
            f"[yellow]Note:[/] {offline}: prices from the table shipped with the tool ({TABLE_DATE}), settings as "
            "given (`gcloud auth application-default login` gives current prices and the recorded settings).",
            soft_wrap=True,
        )
    reason = offline if isinstance(offline, str) else "--offline"
    catalog, problem = ({}, f"not read ({reason})") if offline else _catalog(settings, quiet=as_json)
    result = estimate(settings, storage_gb, catalog, problem)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
        return
    show(result)


def _catalog(settings: Settings, *, quiet: bool):
    from contextlib import nullcontext

    from mlflow_gcp.cost.prices import catalog_prices

    spinner = err.status("Reading prices from the Cloud Billing Catalog...", spinner="dots")
    with nullcontext() if quiet else spinner:
        return catalog_prices(settings.project, settings.region)


def show(result) -> None:
    from rich.table import Table

    table = Table(title=f"Monthly cost estimate, {result.region} (USD)", title_justify="left")
    table.add_column("Item")
    table.add_column("Quantity")
    table.add_column("USD/month", justify="right")
    table.add_column("Price", style="dim")
    for line in result.lines:
        amount = "n/a" if line.monthly_usd is None else f"{line.monthly_usd:,.2f}"
        item = f"{line.item}\n[dim]{line.note}[/]" if line.note else line.item
        table.add_row(item, line.quantity, amount, line.source)
    table.add_row("[bold]Total[/]", "", f"[bold]{result.monthly_total_usd:,.2f}[/]", "")
    out.print(table)
    if result.connector_usd:
        out.print(
            f"--vpc-egress direct (Direct VPC egress, no connector) removes the connector's "
            f"${result.connector_usd:,.2f} of the ${result.monthly_total_usd:,.2f}."
        )
    out.print(f"Plus about ${result.per_1000_requests_usd:.4f} per 1,000 requests ({result.assumptions[1]}).")
    out.print(f"Prices: {result.price_source}.")
    if result.catalog_problem:
        out.print(f"[yellow]Google's price catalog was not used:[/] {result.catalog_problem}.")
    out.print(f"[dim]Assumes {result.assumptions[0]}.[/]")


def dry_run_line(settings: Settings) -> str:
    """The one line `up --dry-run` ends with (shipped table: no request)."""
    from mlflow_gcp.cost.estimate import estimate
    from mlflow_gcp.cost.price_table import TABLE_DATE

    result = estimate(settings, storage_gb=10.0)
    from mlflow_gcp.cli.project import with_identity_flags

    return with_identity_flags(
        f"Estimated cost: about ${result.monthly_total_usd:,.0f}/month at rest plus "
        f"${result.per_1000_requests_usd:.3f} per 1,000 requests (price table of {TABLE_DATE}; "
        "`mlflow-gcp cost` for details and current prices)."
    )
