"""Live checks against the deployed MLflow server: it is up, the login works, and nothing works without it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

SEARCH_PATH = "/api/2.0/mlflow/experiments/search"
SEARCH_QUERY = {"max_results": "1"}
TIMEOUT = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: int
    status: int | None  # None: no HTTP answer
    detail: str = ""  # short: "answered 503, expected 200", "cannot resolve host", "timed out after 15 s"
    error: str = ""  # the full error when there was no answer (shown with --debug)
    unreachable: bool = False  # no connection at all (name, refused, TLS): waiting would not help

    @property
    def answered(self) -> bool:
        return self.status is not None


@dataclass(frozen=True)
class ServerReport:
    url: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def database_refused(self) -> bool:
        """An authenticated API call answered 500: MLflow passed the login but failed on its database, which is
        what a MySQL password that the Cloud SQL user no longer has (reset by hand) looks like from outside."""
        return any(c.name == "login" and c.status == 500 for c in self.checks)

    @property
    def reachable(self) -> bool:
        """At least one check got an HTTP answer."""
        return any(c.answered for c in self.checks)


def _causes(error: BaseException):
    """The error and everything it wraps (requests wraps urllib3, which wraps the socket error)."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]


def short_cause(error: BaseException) -> str:
    """A few words for why a request got no answer: what a person can act on."""
    import socket
    import ssl

    import requests

    causes = list(_causes(error))

    def has(*types: type) -> bool:
        return any(isinstance(c, types) for c in causes)

    if has(requests.exceptions.SSLError, ssl.SSLError):
        return "TLS error"
    if has(requests.exceptions.Timeout, socket.timeout, TimeoutError):
        return f"timed out after {TIMEOUT:g} s"
    if has(socket.gaierror) or any(type(c).__name__ == "NameResolutionError" for c in causes):
        return "cannot resolve host"
    if has(requests.exceptions.ProxyError):
        return "proxy error"
    if has(ConnectionRefusedError):
        return "connection refused"
    if has(ConnectionResetError):
        return "connection reset"
    if has(requests.exceptions.ConnectionError):
        return "cannot connect"
    return f"request failed ({type(error).__name__})"


def is_unreachable(error: BaseException) -> bool:
    """No connection could be made at all (the name does not resolve, the connection is refused or times out,
    TLS fails): unlike a slow or broken-off answer, waiting for it would not help."""
    import socket
    import ssl

    import requests

    for cause in _causes(error):
        if isinstance(cause, (requests.exceptions.SSLError, ssl.SSLError, requests.exceptions.ConnectTimeout)):
            return True
        if isinstance(cause, (socket.gaierror, ConnectionRefusedError)):
            return True
        if type(cause).__name__ == "NameResolutionError":
            return True
    return False


def _get(
    url: str,
    path: str,
    *,
    auth: tuple[str, str] | None = None,
    params: dict | None = None,
    timeout: float | None = None,
):
    """(status, error); a connection failure is (None, the error). Redirects are not followed: an answer is
    judged as it comes. Bounded by `timeout`, else by TIMEOUT as it is at the call."""
    import requests

    try:
        response = requests.get(
            url.rstrip("/") + path,
            params=params,
            auth=auth,
            timeout=TIMEOUT if timeout is None else timeout,
            allow_redirects=False,
        )
    except requests.RequestException as e:
        return None, e
    return response.status_code, None


def _check(name: str, expected: int, url: str, path: str, **kwargs) -> Check:
    status, error = _get(url, path, **kwargs)
    if error is not None:
        return Check(
            name, False, expected, None, short_cause(error), f"{type(error).__name__}: {error}", is_unreachable(error)
        )
    detail = f"answered {status}, expected {expected}" if status != expected else ""
    return Check(name, status == expected, expected, status, detail)


def check_health(url: str) -> Check:
    return _check("health", 200, url, "/health")


def check_login(url: str, username: str, password: str, *, timeout: float | None = None) -> Check:
    return _check("login", 200, url, SEARCH_PATH, auth=(username, password), params=SEARCH_QUERY, timeout=timeout)


def check_refuses_anonymous(url: str) -> Check:
    return _check("no login refused", 401, url, SEARCH_PATH, params=SEARCH_QUERY)


def check_server(url: str, username: str, password: str) -> ServerReport:
    """`/health` 200, an authenticated API call 200, the same call without a login 401. The three at once: a
    server that does not answer costs one timeout, not three."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        checks = [
            pool.submit(check_health, url),
            pool.submit(check_login, url, username, password),
            pool.submit(check_refuses_anonymous, url),
        ]
        return ServerReport(url, tuple(c.result() for c in checks))


def login_timeout() -> float:
    """How long a new login may take to be accepted after a rollout; MLFLOW_GCP_LOGIN_TIMEOUT shortens it."""
    return float(os.environ.get("MLFLOW_GCP_LOGIN_TIMEOUT", "120"))


def wait_for_login(
    url: str, username: str, password: str, *, timeout: float | None = None, log: Callable[[str], None] | None = None
) -> Check:
    """Poll until the login is accepted (a new revision may take a moment to serve), or give the last answer.
    Bounded by `timeout` (each request too); a server that cannot be reached at all ends the wait at once."""
    limit = login_timeout() if timeout is None else timeout
    deadline = time.monotonic() + limit
    delay = 0.2
    if log is not None:
        log(f"checking the login against {url} (waiting up to {limit:.0f} s for it to be accepted)")
    while True:
        remaining = max(deadline - time.monotonic(), 1.0)
        check = check_login(url, username, password, timeout=min(TIMEOUT, remaining))
        if check.ok or check.unreachable or time.monotonic() + delay > deadline:
            return check
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def checkable(url: str) -> bool:
    """Against an emulator of the Google APIs (MLFLOW_GCP_API_ENDPOINT), a service URL it invents is no server:
    only a loopback one (a local stand-in) is checked."""
    from urllib.parse import urlsplit

    from mlflow_gcp.gcp.clients import ENDPOINT_ENV

    return not os.environ.get(ENDPOINT_ENV) or urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def database_refused_after_deploy(url: str, username: str, password: str) -> Check | None:
    """After `up`: the failed login check when the server answers an authenticated call with 500 or 503 (it
    cannot use its database), after a bounded wait for a revision that is still starting; else None (fine, or
    not for this check to judge: unreachable from here, or another answer)."""
    check = check_login(url, username, password)
    if check.status not in (500, 503):
        return None
    check = wait_for_login(url, username, password, timeout=min(login_timeout(), 30.0))
    return check if check.status in (500, 503) else None



VERSIONS_PATH = "/mlflow-gcp/versions"


def read_versions(url: str, username: str, password: str, *, timeout: float = TIMEOUT) -> dict | None:
    """What the server says it runs (admin only): `{"mlflow", "tracking_schema", "tracking_head", "auth_schema",
    "auth_head"}`; None when it does not answer so (unreachable, in maintenance, or a server of an earlier
    mlflow-gcp without the route)."""
    import requests

    try:
        response = requests.get(
            url.rstrip("/") + VERSIONS_PATH, auth=(username, password), timeout=timeout, allow_redirects=False
        )
        if response.status_code != 200:
            return None
        answer = response.json()
    except (requests.RequestException, ValueError):
        return None
    return answer if isinstance(answer, dict) else None
