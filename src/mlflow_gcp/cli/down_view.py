"""`down`'s plan at 80 columns: one line per kind of resource (a count, the names while they fit), what is
deleted, then what is kept and why, and what a kept Cloud SQL instance goes on costing. The question follows."""

from __future__ import annotations

import textwrap
from collections import defaultdict

from mlflow_gcp.config import Settings

PLURALS = {"Google APIs": "Google APIs", "address range": "address ranges", "bucket": "buckets"}


def _plural(kind: str, count: int) -> str:
    if count == 1:
        return kind
    return PLURALS.get(kind) or (kind[:-1] + "ies" if kind.endswith("y") else kind + "s")


def _name(removal) -> str:
    """The resource's name without its kind (`Cloud SQL instance x` → `x`); a grant: its role."""
    from mlflow_gcp.cli.names import short_role

    label, kind = removal.label, removal.resource.kind
    if kind == "grant":
        return short_role(removal.resource.role)
    name = label[len(kind) :].strip() if label.startswith(kind) else label
    if kind == "image":
        return name.rsplit("/", 1)[-1]
    return name.split("@", 1)[0]


def kind_lines(removals, width: int) -> list[str]:
    """`2 service accounts: run-mlflow, mlflow-build`, cut after the last name that fits (`, +3`)."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for removal in removals:
        by_kind[removal.resource.kind].append(_name(removal))
    lines = []
    for kind, names in by_kind.items():
        head = f"{len(names)} {_plural(kind, len(names))}" if len(names) > 1 else kind
        text = f"{head} {names[0]}" if len(names) == 1 else f"{head}: "
        if len(names) > 1:
            shown: list[str] = []
            for index, name in enumerate(names):
                rest = len(names) - index - 1
                candidate = ", ".join([*shown, name]) + (f", +{rest}" if rest else "")
                if len(text + candidate) > width and shown:
                    text += ", ".join(shown) + f", +{len(names) - len(shown)}"
                    break
                shown.append(name)
            else:
                text += ", ".join(shown)
        if len(text) > width:  # one long name: cut at its end, never mid-word of the kind
            text = text[: width - 1] + "…"
        lines.append(text)
    return lines


def kept_instance_cost(settings: Settings) -> float | None:
    """The Cloud SQL instance's monthly figure from the shipped price table (no request), if it can say."""
    from mlflow_gcp.cost.estimate import estimate

    line = next((x for x in estimate(settings, storage_gb=0.0).lines if x.item.startswith("Cloud SQL")), None)
    return line.monthly_usd if line is not None else None


def show_plan(console, plan, settings: Settings, *, dry_run: bool) -> None:
    from rich.markup import escape

    width = max(console.width, 40) - 10
    deleted = [r for r in plan if r.action == "delete"]
    kept = [r for r in plan if r.action != "delete"]
    verb = "would delete" if dry_run else "deletes"
    console.print(
        f"`down` {verb} {len(deleted)} resource(s) in {settings.project} and keeps {len(kept)}:", soft_wrap=False
    )
    for line in kind_lines(deleted, width):
        console.print(f"  [red]delete[/]  {escape(line)}")
    for reason, group in _by_reason(kept).items():
        for line in kind_lines(group, width):
            console.print(f"  [green]keep[/]    {escape(line)}")
        for part in textwrap.wrap(f"({reason})", width=max(console.width, 40) - 11):
            console.print(f"          [dim]{escape(part)}[/]")
    instance = next((r for r in kept if r.resource.kind == "Cloud SQL instance" and r.current is not None), None)
    if instance is not None:
        usd = kept_instance_cost(settings)
        figure = f" (about ${usd:,.2f}/month for {settings.db_tier}, price table)" if usd else ""
        console.print(
            f"[yellow]The kept Cloud SQL instance goes on billing[/]{figure}: `down --delete-data` deletes it "
            "with the data."
        )


def _by_reason(kept) -> dict[str, list]:
    groups: dict[str, list] = defaultdict(list)
    for removal in kept:
        groups[removal.reason or "kept"].append(removal)
    return groups
