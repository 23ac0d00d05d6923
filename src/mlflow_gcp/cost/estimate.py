"""The monthly cost of a deployment from its settings: one line per billed resource, with the source of its price.

Assumptions are stated on the line they concern: 730 hours a month, one zonal Cloud SQL instance with 10 GiB of
SSD and about 1 GiB of backups, the server image (about 0.6 GiB) in Artifact Registry, four secrets with one
active version each. Free tiers, discounts, taxes and network egress are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlflow_gcp.config import Settings
from mlflow_gcp.cost.price_table import PRICES, TABLE_DATE, TABLE_SOURCE

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
SQL_DISK_GIB = 10
SQL_BACKUP_GIB = 1.0
IMAGE_GIB = 0.6
SECRET_COUNT = 4
REQUEST_SECONDS = 0.1  # the per-request figure assumes 100 ms per request
CATALOG = "catalog"
TABLE = "table"
CONNECTOR_ITEM = "VPC connector"

# Connector machine type -> (vCPUs billed, GiB billed) for E2 types; f1-micro has its own SKU.
E2_SHAPES = {"e2-micro": (0.25, 1.0), "e2-small": (0.5, 2.0), "e2-medium": (1.0, 4.0), "e2-standard-4": (4.0, 16.0)}
CUSTOM_TIER = re.compile(r"^db-custom-(\d+)-(\d+)$")


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: str
    monthly_usd: float | None  # None: not estimated (see note)
    source: str  # "catalog" or "table"
    note: str = ""


@dataclass(frozen=True)
class Estimate:
    region: str
    lines: list[CostLine]
    per_1000_requests_usd: float
    price_source: str  # what the table lines came from (date and source), or that all came from the catalog
    catalog_problem: str = ""  # why the catalog could not be read, when it could not
    assumptions: list[str] = field(default_factory=list)

    @property
    def monthly_total_usd(self) -> float:
        return round(sum(line.monthly_usd or 0.0 for line in self.lines), 2)

    @property
    def connector_usd(self) -> float:
        """The connector's share, which Direct VPC egress (--vpc-egress direct) removes (0 without one)."""
        return round(sum(line.monthly_usd or 0.0 for line in self.lines if line.item.startswith(CONNECTOR_ITEM)), 2)

    def as_dict(self) -> dict:
        return {
            "currency": "USD",
            "region": self.region,
            "monthly_total": self.monthly_total_usd,
            "connector_share": self.connector_usd,
            "per_1000_requests": round(self.per_1000_requests_usd, 4),
            "lines": [
                {
                    "item": line.item,
                    "quantity": line.quantity,
                    "monthly": None if line.monthly_usd is None else round(line.monthly_usd, 2),
                    "source": line.source,
                    "note": line.note,
                }
                for line in self.lines
            ],
            "prices": {"table_date": TABLE_DATE, "table_source": TABLE_SOURCE, "catalog_problem": self.catalog_problem},
            "assumptions": self.assumptions,
        }


class PriceBook:
    def __init__(self, catalog: Mapping[str, float] | None = None) -> None:
        self.catalog = dict(catalog or {})

    def price(self, key: str) -> tuple[float, str]:
        if key in self.catalog:
            return self.catalog[key], CATALOG
        return PRICES[key][0], TABLE


def _line(book: PriceBook, item: str, quantity: str, parts: list[tuple[str, float]], note: str = "") -> CostLine:
    """A line whose cost is the sum of price(key) * amount; its source is the catalog only if every key is."""
    total, sources = 0.0, set()
    for key, amount in parts:
        price, source = book.price(key)
        total += price * amount
        sources.add(source)
    return CostLine(item, quantity, total, TABLE if TABLE in sources else CATALOG, note)


def _database(settings: Settings, book: PriceBook) -> CostLine:
    tier = settings.db_tier
    item = f"Cloud SQL {tier} ({settings.db_edition.lower()}, zonal)"
    if settings.db_edition != "ENTERPRISE":
        return CostLine(item, "730 h", None, TABLE, "Enterprise Plus prices are not estimated; see Google's pricing")
    if tier == "db-f1-micro":
        return _line(book, item, "730 h", [("sql.f1_micro", HOURS_PER_MONTH)])
    if tier == "db-g1-small":
        return _line(book, item, "730 h", [("sql.g1_small", HOURS_PER_MONTH)])
    custom = CUSTOM_TIER.match(tier)
    if custom:
        vcpus, memory_gib = int(custom.group(1)), int(custom.group(2)) / 1024
        parts = [("sql.vcpu", vcpus * HOURS_PER_MONTH), ("sql.ram", memory_gib * HOURS_PER_MONTH)]
        return _line(book, item, f"{vcpus} vCPU, {memory_gib:g} GiB", parts)
    return CostLine(item, "730 h", None, TABLE, f"tier {tier} is not estimated (db-f1-micro, db-g1-small, db-custom-*)")


def _connector(settings: Settings, book: PriceBook) -> CostLine:
    count = settings.connector_min_instances
    machine = settings.connector_machine_type
    item = f"{CONNECTOR_ITEM}: {count} x {machine} (minimum, always on)"
    hours = count * HOURS_PER_MONTH
    if machine == "f1-micro":
        return _line(book, item, f"{hours} h", [("compute.f1_micro", hours)])
    if machine in E2_SHAPES:
        vcpus, gib = E2_SHAPES[machine]
        return _line(book, item, f"{hours} h", [("compute.e2_core", vcpus * hours), ("compute.e2_ram", gib * hours)])
    return CostLine(item, f"{hours} h", None, TABLE, f"machine type {machine} is not estimated")


def _memory_gib(memory: str) -> float:
    number = float(memory[:-2])
    return number if memory.endswith("Gi") else number / 1024


def _cpu(cpu: str) -> float:
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _min_instances(settings: Settings, book: PriceBook) -> CostLine:
    count = settings.min_instances
    item = f"Cloud Run: {count} minimum instance(s) kept warm"
    if count == 0:
        return CostLine(item, "scales to zero", 0.0, TABLE, "billed per request only (see below)")
    cpu, memory = _cpu(settings.cpu), _memory_gib(settings.memory)
    seconds = count * SECONDS_PER_MONTH
    return _line(
        book,
        item,
        f"{count} x {settings.cpu} vCPU, {settings.memory}",
        [("run.idle_cpu", cpu * seconds), ("run.idle_memory", memory * seconds)],
        "idle rate; busy time is billed per request",
    )


def per_1000_requests(settings: Settings, book: PriceBook) -> float:
    cpu, memory = _cpu(settings.cpu), _memory_gib(settings.memory)
    seconds = 1000 * REQUEST_SECONDS
    return (
        book.price("run.requests")[0] * 1000
        + book.price("run.cpu")[0] * cpu * seconds
        + book.price("run.memory")[0] * memory * seconds
    )


def estimate(
    settings: Settings, storage_gb: float, catalog: Mapping[str, float] | None = None, catalog_problem: str = ""
) -> Estimate:
    book = PriceBook(catalog)
    lines = [
        _database(settings, book),
        _line(book, "Cloud SQL storage (SSD)", f"{SQL_DISK_GIB} GiB", [("sql.ssd", SQL_DISK_GIB)]),
        _line(
            book,
            "Cloud SQL backups",
            f"~{SQL_BACKUP_GIB:g} GiB",
            [("sql.backup", SQL_BACKUP_GIB)],
            "grows with the database",
        ),
    ]
    if getattr(settings, "vpc_egress", "connector") == "connector":
        lines.append(_connector(settings, book))
    else:
        lines.append(CostLine("Direct VPC egress", "no instances", 0.0, TABLE, "no connector instances to pay for"))
    lines += [
        _min_instances(settings, book),
        _line(
            book,
            "Cloud Storage artifacts (Standard)",
            f"{storage_gb:g} GiB",
            [("storage.standard", storage_gb)],
            "set with --storage-gb",
        ),
        _line(
            book, "Artifact Registry (server image)", f"~{IMAGE_GIB:g} GiB", [("artifactregistry.storage", IMAGE_GIB)]
        ),
        _line(book, "Secret Manager", f"{SECRET_COUNT} active versions", [("secretmanager.version", SECRET_COUNT)]),
    ]
    used_table = any(line.source == TABLE and line.monthly_usd for line in lines)
    source = f"shipped table of {TABLE_DATE} ({TABLE_SOURCE})" if used_table or not catalog else "Cloud Billing Catalog"
    return Estimate(
        region=settings.region,
        lines=lines,
        per_1000_requests_usd=per_1000_requests(settings, book),
        price_source=source,
        catalog_problem=catalog_problem,
        assumptions=[
            "730 hours a month; list prices in USD without free tiers, discounts, taxes or network egress",
            f"per 1,000 requests: {REQUEST_SECONDS * 1000:g} ms each at {settings.cpu} vCPU and {settings.memory}",
        ],
    )
