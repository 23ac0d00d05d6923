"""The prices used when Google's Cloud Billing Catalog cannot be read: list prices in USD of a Tier 1 region
(us-central1; europe-west1 is within a few percent), without free tiers, discounts or taxes, as the maintainers
recorded them from Google's pricing pages on TABLE_DATE. Update them with the date when they change."""

from __future__ import annotations

TABLE_DATE = "2025-06"
TABLE_SOURCE = "list prices of Tier 1 regions from cloud.google.com/{sql,run,vpc,storage,artifact-registry}/pricing"

# Price key -> (USD per unit, unit).
PRICES: dict[str, tuple[float, str]] = {
    "sql.f1_micro": (0.0105, "hour"),
    "sql.g1_small": (0.0350, "hour"),
    "sql.vcpu": (0.0413, "vCPU-hour"),
    "sql.ram": (0.0070, "GiB-hour"),
    "sql.ssd": (0.170, "GiB-month"),
    "sql.backup": (0.080, "GiB-month"),
    "compute.e2_core": (0.021811, "vCPU-hour"),
    "compute.e2_ram": (0.002923, "GiB-hour"),
    "compute.f1_micro": (0.0076, "hour"),
    "run.cpu": (0.000024, "vCPU-second"),
    "run.memory": (0.0000025, "GiB-second"),
    "run.idle_cpu": (0.0000025, "vCPU-second"),
    "run.idle_memory": (0.0000025, "GiB-second"),
    "run.requests": (0.40 / 1_000_000, "request"),
    "storage.standard": (0.020, "GiB-month"),
    "artifactregistry.storage": (0.10, "GiB-month"),
    "secretmanager.version": (0.06, "active version-month"),
}
