"""Short names and the one detail that matters, for one-line-per-resource displays that fit 80 columns.
Full labels and every detail stay in `--wide` and `--json`."""

from __future__ import annotations

# Resource kind (the start of a label) → a short kind.
SHORT_KINDS = {
    "Google APIs": "APIs",
    "VPC network": "network",
    "address range": "range",
    "private services connection on": "peering on",
    "Cloud SQL instance": "sql instance",
    "MySQL database": "sql database",
    "MySQL user": "sql user",
    "VPC connector": "connector",
    "service account": "service account",
    "Artifact Registry repository": "repository",
    "Cloud Run service": "run service",
}

# Resource kind → the detail worth a glance, from the keys of its `details`.
KEY_DETAIL = {
    "Google APIs": "{enabled} enabled",
    "VPC network": "{subnet mode} subnets",
    "address range": "{range}",
    "private services connection": "{ranges}",
    "Cloud SQL instance": "{state} {tier}",
    "MySQL database": "{charset}",
    "MySQL user": "host {host}",
    "VPC connector": "{state} {range}",
    "service account": "{state}",
    "bucket": "{location}",
    "secret": "version {version}",
    "Artifact Registry repository": "{format}",
    "image": "{version}",
    "Cloud Run service": "ready: {ready}",
}


def short_name(label: str) -> str:
    """`Cloud SQL instance mlflow-tracking-database` → `sql instance mlflow-tracking-database`; a service account
    loses its domain, an image its registry path, a grant everything after its role."""
    for kind, short in SHORT_KINDS.items():
        if label.startswith(kind + " "):
            label = short + label[len(kind) :]
            break
    if label.startswith("grant "):
        return label.split(" to ", 1)[0]
    if label.startswith("service account "):
        return label.split("@", 1)[0]
    if label.startswith("image "):
        return "image " + label.rsplit("/", 1)[-1]
    return label.split(" (", 1)[0]  # "secret mysql-credentials (made by the database step)"


def key_detail(kind: str, details: dict[str, str]) -> str:
    template = KEY_DETAIL.get(kind)
    if template:
        try:
            return template.format(**details)
        except (KeyError, IndexError, ValueError):
            pass
    return next(iter(details.values()), "")


def short_role(role: str) -> str:
    """`roles/secretmanager.secretAccessor` → `secretAccessor`."""
    return role.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


def fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
