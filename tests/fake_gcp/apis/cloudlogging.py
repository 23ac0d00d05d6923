"""Cloud Logging v2: `entries.list` (POST /v2/entries:list), for `mlflow-gcp logs`.

Request and response as in https://cloud.google.com/logging/docs/reference/v2/rest/v2/entries/list:
the body holds `resourceNames`, `filter`, `orderBy` ("timestamp asc", the default, or "timestamp desc"),
`pageSize` and `pageToken`; the answer `entries` (LogEntry: timestamp, severity, insertId, resource, and one
of textPayload/jsonPayload/protoPayload, httpRequest) and `nextPageToken`. Listing is a read: it changes nothing.

Options:
- `fake.log_entries`: the project's entries (dicts in LogEntry's shape); `add_log_entry(...)` appends one.
- Filters: the conjunction of comparisons the tool sends (`a.b="x"`, `timestamp>=".."`, `timestamp>".."`,
  `severity>=ERROR`, joined by AND; a field's segment may be quoted, as in `labels."run.googleapis.com/execution_name"`)
  is evaluated; anything else is refused with 400 INVALID_ARGUMENT, as Google
  refuses a filter it cannot parse (https://cloud.google.com/logging/docs/view/logging-query-language).
- The Logging API is enabled by default on every project
  (https://cloud.google.com/service-usage/docs/enabled-service#default), so it is not in SERVICE_OF_API.
"""

from __future__ import annotations

import re
from typing import Any

from tests.fake_gcp.server import PROJECT, ApiError, FakeGoogle, Request

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY")
# A field is dotted names, a segment quoted when it holds other characters: labels."run.googleapis.com/execution_name".
_CLAUSE = re.compile(
    r'^\s*((?:[A-Za-z_]+|"[^"]+")(?:\.(?:[A-Za-z_]+|"[^"]+"))*)\s*(=|>=|>|<=|<)\s*(?:"([^"]*)"|([A-Z]+))\s*$'
)
_SEGMENT = re.compile(r'"([^"]+)"|([A-Za-z_]+)')


def _field(entry: dict, path: str) -> Any:
    value: Any = entry
    for match in _SEGMENT.finditer(path):
        part = match.group(1) or match.group(2)
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _compare(left: Any, operator: str, right: str, *, severity: bool = False) -> bool:
    if left is None:
        return False
    if severity:
        left, right = SEVERITIES.index(str(left)), SEVERITIES.index(right)  # type: ignore[assignment]
    return {
        "=": left == right,
        ">=": left >= right,
        ">": left > right,
        "<=": left <= right,
        "<": left < right,
    }[operator]


def matcher(query: str):
    clauses = []
    for text in filter(None, (part.strip() for part in query.split(" AND "))):
        match = _CLAUSE.match(text)
        if not match or (match.group(4) and match.group(1) != "severity"):
            raise ApiError(400, f"Unparseable filter: {text}", status="INVALID_ARGUMENT")
        value = match.group(3) if match.group(3) is not None else match.group(4)
        clauses.append((match.group(1), match.group(2), value))

    def matches(entry: dict) -> bool:
        return all(_compare(_field(entry, f), op, value, severity=f == "severity") for f, op, value in clauses)

    return matches


def register(fake: FakeGoogle) -> None:
    fake.log_entries = []

    def add_log_entry(timestamp: str, text: str = "", *, severity: str = "INFO", service: str = "mlflow", **more):
        entry = {
            "logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout",
            "resource": {
                "type": "cloud_run_revision",
                "labels": {"service_name": service, "location": "europe-west1", "project_id": PROJECT},
            },
            "timestamp": timestamp,
            "receiveTimestamp": timestamp,
            "severity": severity,
            "insertId": f"{len(fake.log_entries) + 1:08x}",
            **({"textPayload": text} if text else {}),
            **more,
        }
        fake.log_entries.append(entry)
        return entry

    fake.add_log_entry = add_log_entry

    @fake.route("logging", "POST", "/v2/entries:list", mutating=False)
    def list_entries(req: Request):
        body = req.json
        if body.get("resourceNames") != [f"projects/{PROJECT}"]:
            raise ApiError(403, "The caller does not have permission", status="PERMISSION_DENIED")
        order = body.get("orderBy", "timestamp asc")
        if order not in ("timestamp asc", "timestamp desc"):
            raise ApiError(400, f"Invalid orderBy: {order}", status="INVALID_ARGUMENT")
        matches = matcher(body.get("filter", ""))
        found = sorted((e for e in fake.log_entries if matches(e)), key=lambda e: (e["timestamp"], e["insertId"]))
        if order == "timestamp desc":
            found.reverse()
        start = int(body.get("pageToken") or 0)
        size = int(body.get("pageSize") or 50)
        page = found[start : start + size]
        answer: dict[str, Any] = {"entries": page} if page else {}
        if start + size < len(found):
            answer["nextPageToken"] = str(start + size)
        return answer
