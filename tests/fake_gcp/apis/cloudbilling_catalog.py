"""Cloud Billing Catalog: `services.list` and `services.skus.list`, paged, in the catalog's shapes
(https://cloud.google.com/billing/docs/reference/rest/v1/services.skus/list). The public catalog needs the
Cloud Billing API enabled for the caller's project like any other API, so a project without it is answered
SERVICE_DISABLED.

`fake.catalog_skus` holds the SKUs by service display name; the defaults are europe-west1 prices that differ
from the shipped table, plus SKUs of other regions and engines that must not be picked."""

from __future__ import annotations

from tests.fake_gcp.server import FakeGoogle, Request, not_found

SERVICE_IDS = {
    "Cloud SQL": "9662-B51E-5089",
    "Compute Engine": "6F81-5844-456A",
    "Cloud Run": "152E-C115-5142",
    "Cloud Storage": "95FF-2EF5-5EA1",
    "Artifact Registry": "149C-F9EC-3994",
    "Secret Manager": "EE2C-7FAC-5E08",
    "BigQuery": "24E6-581D-38E5",
}
PAGE_SIZE = 3


def sku(description: str, usd: float, unit: str, regions: tuple[str, ...] = ("europe-west1",), free: bool = False):
    units = int(usd)
    rates = [
        {
            "startUsageAmount": 0,
            "unitPrice": {"currencyCode": "USD", "units": str(units), "nanos": round((usd - units) * 1e9)},
        }
    ]
    if free:
        rates.insert(0, {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 0}})
        rates[1]["startUsageAmount"] = 1
    sku_id = f"{abs(hash((description, regions))) % 10**12:012d}"
    return {
        "name": f"services/x/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "serviceRegions": list(regions),
        "pricingInfo": [{"pricingExpression": {"usageUnit": unit, "tieredRates": rates}}],
    }


def default_skus() -> dict[str, list[dict]]:
    return {
        "Cloud SQL": [
            sku("Cloud SQL for PostgreSQL: Zonal - Micro instance in Belgium", 0.5, "h"),
            sku("Cloud SQL for MySQL: Zonal - Micro instance in Americas", 0.9, "h", ("us-central1",)),
            sku("Cloud SQL for MySQL: Zonal - Micro instance in Belgium", 0.0110, "h"),
            sku("Cloud SQL for MySQL: Zonal - Small instance in Belgium", 0.0370, "h"),
            sku("Cloud SQL for MySQL: Zonal - vCPU in Belgium", 0.0450, "h"),
            sku("Cloud SQL for MySQL: Zonal - RAM in Belgium", 0.0076, "GiBy.h"),
            sku("Cloud SQL for MySQL: Zonal - Standard storage in Belgium", 0.187, "GiBy.mo"),
            sku("Cloud SQL: Backups in Belgium", 0.088, "GiBy.mo"),
        ],
        "Compute Engine": [
            sku("E2 Instance Core running in Belgium", 0.023982, "h"),
            sku("E2 Instance Ram running in Belgium", 0.003214, "GiBy.h"),
        ],
        "Cloud Run": [
            sku("Services CPU (Request-based billing) in europe-west1", 0.000024, "s", free=True),
            sku("Services Memory (Request-based billing) in europe-west1", 0.0000025, "GiBy.s", free=True),
            sku("Requests", 0.0000004, "count", ("global",), free=True),
        ],
        "Cloud Storage": [sku("Standard Storage Belgium", 0.020, "GiBy.mo")],
        "Artifact Registry": [sku("Artifact Registry Storage", 0.10, "GiBy.mo", ("global",), free=True)],
        "Secret Manager": [sku("Secret version replica storage", 0.06, "count", ("global",), free=True)],
        "BigQuery": [sku("Analysis", 6.25, "TiBy", ("global",))],
    }


def _page(items: list, req: Request, key: str) -> dict:
    start = int(req.query.get("pageToken") or 0)
    size = min(int(req.query.get("pageSize") or PAGE_SIZE), PAGE_SIZE)
    page = {key: items[start : start + size]}
    if start + size < len(items):
        page["nextPageToken"] = str(start + size)
    return page


def register(fake: FakeGoogle) -> None:
    fake.catalog_skus = default_skus()

    @fake.route("cloudbilling", "GET", "/v1/services")
    def list_services(req: Request):
        services = [
            {"name": f"services/{sid}", "serviceId": sid, "displayName": name} for name, sid in SERVICE_IDS.items()
        ]
        return _page(services, req, "services")

    @fake.route("cloudbilling", "GET", "/v1/services/{service}/skus")
    def list_skus(req: Request):
        name = next((n for n, sid in SERVICE_IDS.items() if sid == req.params["service"]), None)
        if name is None:
            raise not_found(f"Service {req.params['service']}")
        if req.query.get("currencyCode", "USD") != "USD":
            raise not_found("Currency")
        return _page(fake.catalog_skus.get(name, []), req, "skus")
