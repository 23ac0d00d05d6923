"""Read the catalog's prices for a region, or say why they could not be read."""

from __future__ import annotations

from google.api_core import exceptions as gexc

from mlflow_gcp.cost.catalog import read_catalog
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.gcp.errors import execute


def catalog_prices(project: str, region: str) -> tuple[dict[str, float], str]:
    """(price key -> USD, problem). An empty dict and the reason when the catalog cannot be read."""
    try:
        api = Clients(project).discovery("cloudbilling", "v1")
        found = read_catalog(api, region, page=execute)
    except gexc.GoogleAPICallError as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        if reason == "SERVICE_DISABLED":
            return {}, (
                "the Cloud Billing API is not enabled in the project "
                "(`gcloud services enable cloudbilling.googleapis.com` gives current prices)"
            )
        return {}, f"the Cloud Billing Catalog answered {e.code}: {reason}"
    except Exception as e:  # no credentials, no network: the table still answers
        return {}, f"the Cloud Billing Catalog could not be reached ({type(e).__name__})"
    return {key: price.usd for key, price in found.items()}, "" if found else "the catalog matched no price"
