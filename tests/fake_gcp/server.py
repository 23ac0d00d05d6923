"""A local HTTP fake of the Google APIs mlflow-gcp calls, reached through MLFLOW_GCP_API_ENDPOINT.

It behaves like Google on the wire: REST paths under `/{api}/...`, long-running operations that finish after a
configurable latency, error bodies with `google.rpc.ErrorInfo` (SERVICE_DISABLED until the API is enabled,
IAM_PERMISSION_DENIED), IAM policies with etags, and injectable faults. Every request is logged so tests can
count what was sent.

API handlers live in `tests/fake_gcp/apis/<api>.py`; each has `register(fake)` that adds routes with
`fake.route(api, method, template)`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT = "demo-project"
PROJECT_NUMBER = "123456789012"

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# The service names behind each `{api}` path prefix, for SERVICE_DISABLED.
SERVICE_OF_API = {
    "run": "run.googleapis.com",
    "sqladmin": "sqladmin.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "iam": "iam.googleapis.com",
    "iamcredentials": "iamcredentials.googleapis.com",
    "vpcaccess": "vpcaccess.googleapis.com",
    "compute": "compute.googleapis.com",
    "cloudresourcemanager": "cloudresourcemanager.googleapis.com",
    "artifactregistry": "artifactregistry.googleapis.com",
    "cloudbuild": "cloudbuild.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "storage": "storage.googleapis.com",
    "serviceusage": "serviceusage.googleapis.com",
    "cloudbilling": "cloudbilling.googleapis.com",
}


class ApiError(Exception):
    """An error answered in Google's JSON shape (both the v1 `errors` list and the v2 `status`/`details`)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        legacy_reason: str | None = None,
        details: list[dict] | None = None,
        domain: str = "googleapis.com",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body: dict[str, Any] = {
            "code": code,
            "message": message,
            "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
            "errors": [
                {
                    "message": message,
                    "domain": "global",
                    "reason": legacy_reason or reason or STATUS_NAMES.get(code, "unknown"),
                }
            ],
        }
        all_details = list(details or [])
        if reason:
            all_details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": domain,
                    "metadata": metadata or {},
                }
            )
        if all_details:
            self.body["details"] = all_details


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found.", legacy_reason="notFound")


def already_exists(what: str) -> ApiError:
    return ApiError(409, f"{what} already exists.", status="ALREADY_EXISTS", legacy_reason="alreadyExists")


@dataclass
class Request:
    api: str
    method: str
    path: str  # without the /{api} prefix
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)
    query_all: dict[str, list[str]] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.raw or b"{}")


@dataclass
class LoggedRequest:
    api: str
    method: str
    path: str
    query: dict[str, str]
    mutating: bool
    status: int = 0
    body: bytes = b""
    lost: str | None = None  # applied, but its answer was lost ("503" or "reset")
    route: str = ""  # the route's template, e.g. "/v1/projects/{project}/secrets/{secret}:addVersion"


@dataclass
class Fault:
    status: int
    times: int
    api: str | None = None
    method: str | None = None
    path_contains: str | None = None
    reason: str | None = None
    metadata: dict[str, str] | None = None
    message: str = "Injected fault."

    def matches(self, api: str, method: str, path: str) -> bool:
        return (
            (self.api is None or self.api == api)
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in path)
        )


@dataclass
class LostAnswer:
    """A mutating request Google applies whose answer never reaches the caller: a 503 from the front end, or a
    connection reset, after the commit. The caller's retry then meets 409 or, for a method that is not idempotent,
    does the work twice. Seen at scale on every Google API; Google's own guidance for this is to retry with
    idempotent requests or read the state back (https://cloud.google.com/apis/design/design_patterns#request_duplication,
    https://cloud.google.com/storage/docs/retry-strategy#idempotency)."""

    how: str  # "503", "reset" (TCP reset) or "close" (the connection closed cleanly, no answer)
    times: int
    api: str | None = None
    method: str | None = None
    path_contains: str | None = None
    route: str | None = None  # a route template, e.g. "/v1/projects/{project}/secrets/{secret}:addVersion"

    def matches(self, api: str, method: str, path: str, route: str) -> bool:
        return (
            (self.api is None or self.api == api)
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in path)
            and (self.route is None or self.route == route)
        )


# The status `handle` gives to a request whose answer is lost by a reset connection: nothing is written back.
RESET = 0


@dataclass
class Route:
    api: str
    method: str
    pattern: re.Pattern
    handler: Callable[[Request], Any]
    mutating: bool
    template: str = ""


def compile_template(template: str) -> re.Pattern:
    """`/v1/projects/{project}/secrets/{secret}:getIamPolicy` → regex; `{name=**}` matches several segments."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(=\*\*)?\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.+?)" if m.group(2) else f"(?P<{m.group(1)}>[^/:]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


class FakeGoogle:
    def __init__(self, *, enabled: set[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self.log: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self.lost_answers: list[LostAnswer] = []
        # Optional chaos (see tests/fake_gcp/chaos.py): called before and after each request is applied.
        self.chaos: Any = None
        # Requests dropped because their body arrived incomplete: (method, path, Content-Length, bytes received).
        self.truncated: list[tuple[str, str, int, int]] = []
        # Service names enabled on the project; Service Usage itself always answers.
        self.enabled: set[str] = set(enabled or ())
        # When each service was enabled through Service Usage, and how long it still answers SERVICE_DISABLED.
        self.activating_since: dict[str, float] = {}
        self.activation_seconds = 0.0
        self.state: dict[str, Any] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self._etags = itertools.count(1)
        # Option: a member newly added to a policy is refused by that many permission checks (services that check
        # access, e.g. Cloud Run on the secrets of a revision) before the grant applies: IAM changes take minutes
        # (https://cloud.google.com/iam/docs/access-change-propagation). 0: grants apply at once, unchecked.
        self.grant_propagation = 0
        self._unapplied: dict[tuple[str, str, str], int] = {}
        self._ids = itertools.count(1)
        # Simulated latency in seconds of operations, by kind (e.g. "sqladmin.create"); 0 when unset.
        self.latency: dict[str, float] = {}
        self._due: list[tuple[float, Callable[[], None]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        from tests.fake_gcp import apis

        apis.register_all(self)

    # -- routing -----------------------------------------------------------------------------------------
    def route(self, api: str, method: str, template: str, *, mutating: bool | None = None):
        def decorate(handler: Callable[[Request], Any]):
            self.routes.append(
                Route(
                    api,
                    method,
                    compile_template(template),
                    handler,
                    method != "GET" if mutating is None else mutating,
                    template,
                )
            )
            return handler

        return decorate

    # -- helpers for API modules -------------------------------------------------------------------------
    def next_id(self) -> str:
        return f"{next(self._ids):06d}"

    def after(self, kind: str, action: Callable[[], None]) -> float:
        """Run `action` once `latency[kind]` seconds have passed (at the next request after that)."""
        due = time.monotonic() + self.latency.get(kind, 0.0)
        with self.lock:
            self._due.append((due, action))
        return due

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            ready = [item for item in self._due if item[0] <= now]
            self._due = [item for item in self._due if item[0] > now]
        for _, action in sorted(ready, key=lambda item: item[0]):
            action()

    def get_policy(self, key: str) -> dict[str, Any]:
        with self.lock:
            if key not in self.policies:
                self.policies[key] = {"version": 1, "etag": self._new_etag(), "bindings": []}
            return json.loads(json.dumps(self.policies[key]))

    def set_policy(self, key: str, policy: dict[str, Any], *, conflict_status: int = 409) -> dict[str, Any]:
        """Store a policy; a stale etag is refused as Google does (409 ABORTED, or 412 for Storage)."""
        with self.lock:
            current = self.get_policy(key)
            if policy.get("etag") and policy["etag"] != current["etag"]:
                raise ApiError(
                    conflict_status,
                    "There were concurrent policy changes. Please retry the whole "
                    "read-modify-write with exponential backoff.",
                    status="ABORTED" if conflict_status == 409 else "FAILED_PRECONDITION",
                    legacy_reason="conditionNotMet" if conflict_status == 412 else "aborted",
                )
            before = {(b["role"], m) for b in current.get("bindings", []) for m in b.get("members", [])}
            for binding in policy.get("bindings", []):
                for member in binding.get("members", []):
                    if (binding.get("role"), member) not in before and self.grant_propagation:
                        self._unapplied[(key, binding.get("role"), member)] = self.grant_propagation
            stored = {
                "version": policy.get("version", 1),
                "etag": self._new_etag(),
                "bindings": [b for b in policy.get("bindings", []) if b.get("members")],
            }
            self.policies[key] = stored
            return json.loads(json.dumps(stored))

    def grant_applied(self, key: str, role: str, member: str) -> bool:
        """A permission check: the member holds the role on `key` and the grant has propagated."""
        with self.lock:
            if member not in self.members(key, role):
                return False
            left = self._unapplied.get((key, role, member), 0)
            if left > 0:
                self._unapplied[(key, role, member)] = left - 1
                return False
            return True

    def members(self, key: str, role: str) -> list[str]:
        policy = self.policies.get(key, {})
        return [m for b in policy.get("bindings", []) if b["role"] == role for m in b["members"]]

    def _new_etag(self) -> str:
        return base64.b64encode(f"etag-{next(self._etags)}".encode()).decode()

    # -- faults and inspection ---------------------------------------------------------------------------
    def fail(
        self,
        status: int = 503,
        *,
        times: int = 1,
        api: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        message: str = "Injected fault.",
    ) -> Fault:
        fault = Fault(status, times, api, method, path_contains, reason, metadata, message)
        with self.lock:
            self.faults.append(fault)
        return fault

    def lose_answer(
        self,
        how: str = "503",
        *,
        times: int = 1,
        api: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        route: str | None = None,
    ) -> LostAnswer:
        """Apply the next matching mutating request(s), then lose the answer: `how` is "503", "reset" or "close"."""
        if how not in ("503", "reset", "close"):
            raise ValueError(how)
        lost = LostAnswer(how, times, api, method, path_contains, route)
        with self.lock:
            self.lost_answers.append(lost)
        return lost

    def _take_lost_answer(self, api: str, method: str, path: str, route: str) -> str | None:
        with self.lock:
            lost = next((x for x in self.lost_answers if x.times > 0 and x.matches(api, method, path, route)), None)
            if lost is None:
                return self.chaos.lose_answer(api, method, path) if self.chaos else None
            lost.times -= 1
            return lost.how

    def requests(self, *, api: str | None = None, mutating: bool | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [
                r for r in self.log if (api is None or r.api == api) and (mutating is None or r.mutating == mutating)
            ]

    def mutating_requests(self) -> list[LoggedRequest]:
        return self.requests(mutating=True)

    def note_truncated(self, method: str, raw_path: str, expected: int, received: int) -> None:
        """A request whose body stopped short of its Content-Length: recorded for tests, never applied."""
        with self.lock:
            self.truncated.append((method, raw_path, expected, received))

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    # -- dispatch ----------------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict, bytes]:
        """Returns (status, extra headers, body)."""
        self.tick()
        split = urlsplit(raw_path)
        segments = split.path.lstrip("/").split("/", 1)
        api, path = segments[0], "/" + (segments[1] if len(segments) > 1 else "")
        path = unquote(path)
        query_all = parse_qs(split.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in query_all.items()}
        route, params = self._match(api, method, path)
        entry = LoggedRequest(
            api, method, path, query, route.mutating if route else method != "GET", body=raw,
            route=route.template if route else "",
        )
        with self.lock:
            self.log.append(entry)
        try:
            self._apply_faults(api, method, path)
            if route is None:
                raise ApiError(404, f"The fake has no route for {method} /{api}{path}.")
            self._check_enabled(api)
            if self.chaos:
                self.chaos.before(api, method, path)
            result = route.handler(Request(api, method, path, query, headers, raw, params, query_all))
            status, extra, body = self._encode(result)
            applied = route.mutating and status < 400
            lost = self._take_lost_answer(api, method, path, route.template) if applied else None
            if lost:
                entry.lost = lost
                if lost in ("reset", "close"):
                    entry.status = RESET
                    return RESET, {"how": lost}, b""
                raise ApiError(503, "The service is currently unavailable.")
        except ApiError as e:
            status, extra, body = e.code, {"Content-Type": "application/json"}, json.dumps({"error": e.body}).encode()
        entry.status = status
        return status, extra, body

    def _match(self, api: str, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            if route.api == api and route.method == method:
                m = route.pattern.match(path)
                if m:
                    return route, m.groupdict()
        return None, {}

    def _apply_faults(self, api: str, method: str, path: str) -> None:
        with self.lock:
            fault = next((f for f in self.faults if f.times > 0 and f.matches(api, method, path)), None)
            if fault is None:
                return
            fault.times -= 1
        raise ApiError(fault.status, fault.message, reason=fault.reason, metadata=fault.metadata)

    def _check_enabled(self, api: str) -> None:
        service = SERVICE_OF_API.get(api)
        activating = time.monotonic() - self.activating_since.get(service or "", -1e9) < self.activation_seconds
        if api == "serviceusage" or service is None or (service in self.enabled and not activating):
            return
        raise ApiError(
            403,
            f"{service.split('.')[0].title()} API has not been used in project {PROJECT_NUMBER} before or it is "
            f"disabled. Enable it by visiting https://console.developers.google.com/apis/api/{service}/overview"
            f"?project={PROJECT_NUMBER} then retry.",
            reason="SERVICE_DISABLED",
            legacy_reason="accessNotConfigured",
            metadata={"service": service, "consumer": f"projects/{PROJECT_NUMBER}"},
        )

    @staticmethod
    def _encode(result: Any) -> tuple[int, dict, bytes]:
        if isinstance(result, tuple) and len(result) == 3:
            return result
        if isinstance(result, tuple):
            status, payload = result
        else:
            status, payload = 200, result
        if isinstance(payload, bytes):
            return status, {"Content-Type": "application/octet-stream"}, payload
        return status, {"Content-Type": "application/json"}, json.dumps(payload if payload is not None else {}).encode()

    # -- server ------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes; without this, Nagle delays each answer ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    # The client went away mid-body (e.g. killed between sending headers and body). Google's front
                    # end never hands an incomplete request to the service: nothing is applied, nothing answered.
                    fake.note_truncated(self.command, self.path, length, len(raw))
                    self.close_connection = True
                    return
                status, extra, body = fake.handle(self.command, self.path, dict(self.headers), raw)
                if status == RESET:
                    if extra.get("how") == "reset":
                        # A TCP reset (linger 0): the client reads ECONNRESET, as from a dropped connection.
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.rfile.close()
                    self.connection.close()
                    return
                self.send_response(
                    status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None
                )
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


def parse_message(raw: bytes, message_class) -> dict[str, Any]:
    """A request body as Google reads it into `message_class` (a proto-plus class): integer enums become names,
    an unknown field is a 400 as on the real API."""
    from google.protobuf import json_format

    try:
        message = json_format.Parse(raw or b"{}", message_class.pb(message_class()))
    except json_format.ParseError as e:
        raise ApiError(400, f"Invalid JSON payload received. {e}") from e
    return json_format.MessageToDict(message)


def longrunning(
    name: str, *, done: bool, response: dict | None = None, error: dict | None = None, metadata: dict | None = None
) -> dict[str, Any]:
    """A google.longrunning.Operation in JSON."""
    op: dict[str, Any] = {"name": name, "done": done}
    if metadata:
        op["metadata"] = metadata
    if done and error:
        op["error"] = error
    elif done:
        op["response"] = response or {}
    return op


class LongRunningStore:
    """google.longrunning operations for one API: created pending, done after the kind's latency."""

    def __init__(self, fake: FakeGoogle, api: str, prefix: str) -> None:
        self.fake, self.api, self.prefix = fake, api, prefix
        self.ops: dict[str, dict[str, Any]] = {}

    def start(
        self, kind: str, finish: Callable[[], dict | None], *, metadata: dict | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """`finish` runs when the operation completes; it returns the response, or raises ApiError."""
        name = name or f"{self.prefix}/operation-{self.fake.next_id()}"
        op = longrunning(name, done=False, metadata=metadata)
        self.ops[name] = op

        def complete() -> None:
            try:
                op["response"] = finish() or {}
            except ApiError as e:
                op["error"] = {"code": e.code, "message": e.body["message"]}
            op["done"] = True

        self.fake.after(kind, complete)
        self.fake.tick()
        return dict(op)

    def get(self, name: str) -> dict[str, Any]:
        return operation_named(self.ops, name)


def operation_named(operations: dict[str, dict], name: str) -> dict[str, Any]:
    """`operations.get`: a copy of the operation as it stands, or 404."""
    if name not in operations:
        raise not_found(f"Operation {name}")
    return dict(operations[name])


def route_regional_operations(fake: FakeGoogle, api: str, version: str, operations: dict[str, dict]) -> None:
    """`operations.get` of an API whose google.longrunning operations are named
    `projects/P/locations/L/operations/O` (Cloud Build, Artifact Registry, Cloud Run)."""

    @fake.route(api, "GET", f"/{version}/projects/{{project}}/locations/{{location}}/operations/{{operation}}")
    def get_operation(req: Request) -> dict[str, Any]:
        return operation_named(
            operations, "projects/{project}/locations/{location}/operations/{operation}".format(**req.params)
        )
