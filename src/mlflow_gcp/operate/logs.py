"""The server's recent log lines, read from Cloud Logging (`entries.list` of logging.googleapis.com v2,
https://cloud.google.com/logging/docs/reference/v2/rest/v2/entries/list) through the discovery client that the
library already bundles (no extra dependency), filtered on the Cloud Run service; and the lines of the MLflow
upgrade's migration job (`{service}-migrate`, resource type `cloud_run_job`), each labelled with its execution, so
that the output of an upgrade that ran or failed is there beside the server's.

Nothing secret is ever returned: what looks like a password (a URL's user info, an `Authorization` header, a
`password=`/`PASSWORD:` value, the value of the secrets' variables) is replaced by `***` before anything leaves
this module."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError
from mlflow_gcp.gcp.clients import Clients

# Google's read quota is 60 entries.list requests a minute per project
# (https://cloud.google.com/logging/quotas#api-limits): following polls well under it.
FOLLOW_INTERVAL_SECONDS = 5.0
PAGE_SIZE = 200
SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_REDACTIONS = (
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),  # mysql+pymysql://user:PASSWORD@host
    (re.compile(r"(?i)(authorization:?\s*(?:basic|bearer)\s+)[A-Za-z0-9+/=._-]+"), r"\1***"),
    (re.compile(r"(?i)((?:password|passwd|secret[_-]?key|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+"), r"\1***"),
)


@dataclass(frozen=True)
class LogLine:
    timestamp: str  # RFC 3339, as Google gives it
    severity: str
    text: str
    insert_id: str
    source: str = ""  # "" for the server; "migration job EXECUTION" for a line of the upgrade's job

    @property
    def is_error(self) -> bool:
        return self.severity in SEVERITIES and SEVERITIES.index(self.severity) >= SEVERITIES.index("ERROR")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`30s`, `10m`, `1h`, `2d` before now, or an RFC 3339 time (`2026-12-07T18:00:00Z`)."""
    now = now or datetime.now(timezone.utc)
    match = _DURATION.match(value)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {value!r} is neither a duration nor a time.",
            "Give a duration such as 30s, 10m, 1h or 2d, or a time such as 2026-12-07T18:00:00Z.",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def service_filter(settings: Settings, *, after: str, errors_only: bool, inclusive: bool = True) -> str:
    """The Logging query of the service's entries (https://cloud.google.com/logging/docs/view/logging-query-language)."""
    resource = ['resource.type="cloud_run_revision"', f'resource.labels.service_name="{settings.service}"']
    return _query(resource, settings, after=after, errors_only=errors_only, inclusive=inclusive)


def job_filter(settings: Settings, *, after: str, errors_only: bool, inclusive: bool = True) -> str:
    """The Logging query of the migration job's entries (as gcloud's `run jobs executions logs read` filters)."""
    from mlflow_gcp.resources.migration_job import job_name

    resource = ['resource.type="cloud_run_job"', f'resource.labels.job_name="{job_name(settings)}"']
    return _query(resource, settings, after=after, errors_only=errors_only, inclusive=inclusive)


def _query(resource: list[str], settings: Settings, *, after: str, errors_only: bool, inclusive: bool) -> str:
    """The entries of `resource` (its clauses) in the region from `after` on, only errors if `errors_only`."""
    since = f'timestamp{">=" if inclusive else ">"}"{after}"'
    clauses = [*resource, f'resource.labels.location="{settings.region}"', since]
    if errors_only:
        clauses.append("severity>=ERROR")
    return " AND ".join(clauses)


def queries(settings: Settings, *, after: str, errors_only: bool) -> list[tuple[str, str]]:
    """(what, query) of the server's entries and the migration job's."""
    return [
        (f"Cloud Run service {settings.service}", service_filter(settings, after=after, errors_only=errors_only)),
        ("its migration job", job_filter(settings, after=after, errors_only=errors_only)),
    ]


def entry_text(entry: dict) -> str:
    """One line for an entry: its text, its JSON message, or the request it logs."""
    if "textPayload" in entry:
        text = str(entry["textPayload"])
    elif isinstance(entry.get("jsonPayload"), dict):
        payload = entry["jsonPayload"]
        text = str(payload.get("message") or payload.get("msg") or payload)
    elif isinstance(entry.get("httpRequest"), dict):
        request = entry["httpRequest"]
        path = str(request.get("requestUrl", "")).split("?", 1)[0]  # a query string may carry anything
        text = f"{request.get('requestMethod', '')} {path} {request.get('status', '')} {request.get('latency', '')}"
    else:
        text = ""
    return redact(" ".join(text.split()))


def _line(entry: dict) -> LogLine:
    source = ""
    if (entry.get("resource") or {}).get("type") == "cloud_run_job":
        execution = (entry.get("labels") or {}).get("run.googleapis.com/execution_name", "")
        source = f"migration job {execution}".strip()
    return LogLine(
        timestamp=str(entry.get("timestamp", "")),
        severity=str(entry.get("severity", "DEFAULT")),
        text=entry_text(entry),
        insert_id=str(entry.get("insertId", "")),
        source=source,
    )


def read_all(clients: Clients, settings: Settings, *, after: str, errors_only: bool, limit: int) -> list[LogLine]:
    """The newest `limit` entries of the server and of its migration job, oldest first."""
    lines = [
        line
        for what, query in queries(settings, after=after, errors_only=errors_only)
        for line in read_entries(clients, settings, query, limit=limit, what=what)
    ]
    return sorted(lines, key=lambda line: (line.timestamp, line.insert_id))[-limit:]


def read_entries(clients: Clients, settings: Settings, query: str, *, limit: int, what: str = "") -> list[LogLine]:
    """The newest `limit` entries that match, oldest first."""
    from google.api_core import exceptions as gexc

    from mlflow_gcp.gcp import retry
    from mlflow_gcp.gcp.errors import execute, translate

    api = clients.discovery("logging", "v2")
    body = {
        "resourceNames": [f"projects/{settings.project}"],
        "filter": query,
        "orderBy": "timestamp desc",
        "pageSize": min(limit, PAGE_SIZE),
    }
    lines: list[LogLine] = []
    try:
        while len(lines) < limit:
            page = retry.call(lambda body=dict(body): execute(api.entries().list(body=body)))
            lines += [_line(entry) for entry in page.get("entries", [])]
            token = page.get("nextPageToken")
            if not token:
                break
            body["pageToken"] = token
    except gexc.GoogleAPICallError as e:
        what = what or f"Cloud Run service {settings.service}"
        raise translate(e, f"reading the logs of {what}", settings.project) from e
    return list(reversed(lines[:limit]))


def recent(
    clients: Clients, settings: Settings, *, since: datetime, errors_only: bool = False, limit: int = 100
) -> list[LogLine]:
    return read_all(clients, settings, after=rfc3339(since), errors_only=errors_only, limit=limit)


def follow(
    clients: Clients,
    settings: Settings,
    *,
    after: list[LogLine],
    since: datetime,
    errors_only: bool = False,
    pause: Callable[[], None],
) -> Iterator[LogLine]:
    """New entries as they come, one request per `pause()` (Ctrl-C in `pause` ends it); entries already seen
    (same insertId) are not given twice."""
    seen = {line.insert_id for line in after}
    newest = max((line.timestamp for line in after), default=rfc3339(since))
    while True:
        pause()
        for line in read_all(clients, settings, after=newest, errors_only=errors_only, limit=PAGE_SIZE):
            if line.insert_id in seen:
                continue
            seen.add(line.insert_id)
            newest = max(newest, line.timestamp)
            yield line
