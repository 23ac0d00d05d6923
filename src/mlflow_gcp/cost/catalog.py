"""Prices from Google's Cloud Billing Catalog API (`services.list`, `services.skus.list`) for one region.

Each price key of the shipped table is looked up by the SKU's service, description and region; a key the
catalog does not answer keeps the table's price, and the estimate says which source each line used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Catalog service display name -> [(price key, description pattern, usage unit)]. A SKU in another unit than the
# one the estimate multiplies by is not used. The patterns follow the catalog's SKU
# descriptions (e.g. "Cloud SQL for MySQL: Zonal - vCPU in Belgium", "E2 Instance Core running in Belgium").
MATCHERS: dict[str, list[tuple[str, re.Pattern, str | None]]] = {
    "Cloud SQL": [
        ("sql.f1_micro", re.compile(r"Cloud SQL for MySQL: Zonal - Micro instance", re.I), "h"),
        ("sql.g1_small", re.compile(r"Cloud SQL for MySQL: Zonal - Small instance", re.I), "h"),
        ("sql.vcpu", re.compile(r"MySQL: Zonal - vCPU", re.I), "h"),
        ("sql.ram", re.compile(r"MySQL: Zonal - RAM", re.I), "GiBy.h"),
        ("sql.ssd", re.compile(r"MySQL: Zonal - Standard storage", re.I), "GiBy.mo"),
        ("sql.backup", re.compile(r"Cloud SQL: Backups", re.I), "GiBy.mo"),
    ],
    "Compute Engine": [
        ("compute.e2_core", re.compile(r"^E2 Instance Core running in", re.I), "h"),
        ("compute.e2_ram", re.compile(r"^E2 Instance Ram running in", re.I), "GiBy.h"),
        ("compute.f1_micro", re.compile(r"^Micro Instance with burstable CPU running in", re.I), "h"),
    ],
    "Cloud Run": [
        ("run.cpu", re.compile(r"^Services CPU \(Request-based billing\)", re.I), "s"),
        ("run.memory", re.compile(r"^Services Memory \(Request-based billing\)", re.I), "GiBy.s"),
        ("run.idle_cpu", re.compile(r"^Services Idle Min-Instance CPU \(Request-based billing\)", re.I), "s"),
        (
            "run.idle_memory",
            re.compile(r"^Services Idle Min-Instance Memory \(Request-based billing\)", re.I),
            "GiBy.s",
        ),
        ("run.requests", re.compile(r"^Requests$", re.I), "count"),
    ],
    "Cloud Storage": [("storage.standard", re.compile(r"^Standard Storage ", re.I), "GiBy.mo")],
    "Artifact Registry": [("artifactregistry.storage", re.compile(r"^Artifact Registry Storage", re.I), "GiBy.mo")],
    "Secret Manager": [("secretmanager.version", re.compile(r"^Secret version replica storage", re.I), None)],
}
GLOBAL_REGIONS = {"global"}


@dataclass(frozen=True)
class CatalogPrice:
    usd: float
    sku: str


def unit_price(sku: dict) -> float | None:
    """The USD price per usage unit of the SKU's first paid tier (free tiers are ignored here)."""
    for info in sku.get("pricingInfo", [])[:1]:
        expression = info.get("pricingExpression", {})
        rates = expression.get("tieredRates", [])
        paid = [r for r in rates if _money(r.get("unitPrice", {})) > 0] or rates
        if not paid:
            return None
        return _money(paid[0].get("unitPrice", {}))
    return None


def _in_unit(sku: dict, usage_unit: str | None) -> bool:
    if usage_unit is None:
        return True
    units = {i.get("pricingExpression", {}).get("usageUnit") for i in sku.get("pricingInfo", [])[:1]}
    return usage_unit in units


def _money(money: dict) -> float:
    return int(money.get("units", 0) or 0) + int(money.get("nanos", 0) or 0) / 1e9


def _serves(sku: dict, region: str) -> bool:
    regions = set(sku.get("serviceRegions", []))
    return region in regions or bool(regions & GLOBAL_REGIONS) or not regions


def match_prices(service_name: str, skus: Iterable[dict], region: str) -> dict[str, CatalogPrice]:
    found: dict[str, CatalogPrice] = {}
    for key, pattern, usage_unit in MATCHERS.get(service_name, []):
        for sku in skus:
            if pattern.search(sku.get("description", "")) and _serves(sku, region) and _in_unit(sku, usage_unit):
                price = unit_price(sku)
                if price is not None:
                    found[key] = CatalogPrice(price, sku.get("skuId", sku.get("name", "")))
                    break
    return found


def read_catalog(api, region: str, page: Callable = lambda request: request.execute()) -> dict[str, CatalogPrice]:
    """Prices of every matched key, read with a `cloudbilling` v1 discovery client."""
    services = {}
    request = api.services().list(pageSize=5000)
    while request is not None:
        response = page(request)
        for service in response.get("services", []):
            services[service.get("displayName", "")] = service["name"]
        request = api.services().list_next(request, response)
    prices: dict[str, CatalogPrice] = {}
    for display_name in MATCHERS:
        name = services.get(display_name)
        if not name:
            continue
        skus: list[dict] = []
        request = api.services().skus().list(parent=name, currencyCode="USD", pageSize=5000)
        while request is not None:
            response = page(request)
            skus.extend(response.get("skus", []))
            request = api.services().skus().list_next(request, response)
        prices.update(match_prices(display_name, skus, region))
    return prices
