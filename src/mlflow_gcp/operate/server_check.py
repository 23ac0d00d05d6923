"""Live checks against the deployed MLflow server: it is up, the login works, and nothing works without it."""

from __future__ import annotations

import os
import time
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
    detail: str = ""


@dataclass(frozen=True)
class ServerReport:
    url: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _get(url: str, path: str, *, auth: tuple[str, str] | None = None, params: dict | None = None):
    """(status, detail); a connection failure is (None, why). Redirects are not followed: an answer is judged
    as it comes."""
    import requests

    try:
        response = requests.get(
            url.rstrip("/") + path, params=params, auth=auth, timeout=TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as e:
        return None, f"{type(e).__name__}: {e}"
    return response.status_code, ""


def _check(name: str, expected: int, url: str, path: str, **kwargs) -> Check:
    status, detail = _get(url, path, **kwargs)
    if status is not None and status != expected:
        detail = f"answered {status}, expected {expected}"
    return Check(name, status == expected, expected, status, detail)


def check_health(url: str) -> Check:
    return _check("health", 200, url, "/health")


def check_login(url: str, username: str, password: str) -> Check:
    return _check("login", 200, url, SEARCH_PATH, auth=(username, password), params=SEARCH_QUERY)


def check_refuses_anonymous(url: str) -> Check:
    return _check("no login refused", 401, url, SEARCH_PATH, params=SEARCH_QUERY)


def check_server(url: str, username: str, password: str) -> ServerReport:
    """`/health` 200, an authenticated API call 200, the same call without a login 401."""
    return ServerReport(url, (check_health(url), check_login(url, username, password), check_refuses_anonymous(url)))


def login_timeout() -> float:
    """How long a new login may take to be accepted after a rollout; MLFLOW_GCP_LOGIN_TIMEOUT shortens it."""
    return float(os.environ.get("MLFLOW_GCP_LOGIN_TIMEOUT", "120"))


def wait_for_login(url: str, username: str, password: str, *, timeout: float | None = None) -> Check:
    """Poll until the login is accepted (a new revision may take a moment to serve), or give the last answer."""
    deadline = time.monotonic() + (login_timeout() if timeout is None else timeout)
    delay = 0.2
    while True:
        check = check_login(url, username, password)
        if check.ok or time.monotonic() + delay > deadline:
            return check
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
