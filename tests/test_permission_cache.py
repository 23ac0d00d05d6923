"""The server's permission cache (container/mlflow_gcp_server/permission_cache.py): hits, expiry, the revocation
bound, refusals never cached, and the instance that served an access change forgetting at once. The same behaviour
against the real server and MariaDB: tests/e2e/test_permission_cache_e2e.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))
# Flask (the login is kept with the request) is one of the server image's pins (container/requirements.txt), which CI's
# lowest-versions run of the tool's floors does not install.
pytest.importorskip("flask")

from mlflow_gcp_server.permission_cache import (
    DEFAULT_TTL_SECONDS,
    ClearOnAccessChange,
    PermissionCache,
    changes_access,
    install,
    ttl_from_environment,
)

TTL = 10.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeAuth:
    """The names permission_cache wraps in mlflow.server.auth, answering from a grants table the test changes."""

    def __init__(self):
        self.allowed: set[tuple[str, str]] = set()  # (username, experiment id)
        self.admins: set[str] = set()
        self.runs = {"run-1": "7"}
        self.username = "carl"
        self.calls: list[str] = []
        self.workspace_context = SimpleNamespace(get_request_workspace=lambda: None)

    def authenticate_request(self):
        self.calls.append("authenticate")
        return SimpleNamespace(username=self.username)

    def sender_is_admin(self):
        self.calls.append("is_admin")
        return self.username in self.admins

    def authorize(self, username, anchor, requirements):
        self.calls.append("authorize")
        return (username, anchor[1]) in self.allowed

    def _run_requirement(self, run_id, action):
        self.calls.append("run")
        experiment = self.runs.get(run_id)
        return None if experiment is None else (("experiment", experiment), [("experiment", experiment, action)])


@pytest.fixture
def clock():
    return Clock()


def wrapped(fake_auth) -> SimpleNamespace:
    namespace = SimpleNamespace(**{name: getattr(fake_auth, name) for name in (
        "authenticate_request", "sender_is_admin", "authorize", "_run_requirement", "workspace_context")})
    return namespace


@pytest.fixture
def server(clock):
    fake = FakeAuth()
    namespace = wrapped(fake)
    cache = PermissionCache(TTL, clock=clock)
    install(cache, namespace)
    return fake, namespace, cache


def test_an_allowed_decision_is_asked_once_within_the_bound(server, clock):
    fake, auth, _ = server
    fake.allowed.add(("carl", "7"))
    assert all(auth.authorize("carl", ("experiment", "7"), [("experiment", "7", "update")]) for _ in range(5))
    assert fake.calls.count("authorize") == 1
    assert auth.authorize("dora", ("experiment", "7"), [("experiment", "7", "update")]) is False  # per user
    assert auth.authorize("carl", ("experiment", "7"), [("experiment", "7", "read")])  # per requirement
    assert fake.calls.count("authorize") == 3


def test_a_revoked_permission_is_refused_after_the_bound(server, clock):
    fake, auth, _ = server
    fake.allowed.add(("carl", "7"))
    ask = lambda: auth.authorize("carl", ("experiment", "7"), [("experiment", "7", "update")])  # noqa: E731
    assert ask()
    fake.allowed.clear()  # revoked by another instance: this one was not told
    clock.now += TTL - 0.5
    assert ask()  # within the bound, the cached decision
    clock.now += 0.5
    assert ask() is False  # at the bound, asked again: refused
    assert fake.calls.count("authorize") == 2


def test_a_refusal_is_never_cached_so_a_new_grant_works_at_once(server):
    fake, auth, _ = server
    ask = lambda: auth.authorize("carl", ("experiment", "7"), [("experiment", "7", "update")])  # noqa: E731
    assert ask() is False
    fake.allowed.add(("carl", "7"))
    assert ask() is True


def test_admin_flag_is_cached_per_user_with_the_same_bound(server, clock):
    fake, auth, _ = server
    fake.admins.add("carl")
    assert auth.sender_is_admin() and auth.sender_is_admin()
    fake.username = "dora"
    assert auth.sender_is_admin() is False
    assert fake.calls.count("is_admin") == 2
    fake.username = "carl"
    fake.admins.clear()  # demoted elsewhere
    clock.now += TTL
    assert auth.sender_is_admin() is False


def test_the_login_is_checked_once_per_request_and_never_shared_between_requests(server):
    from flask import Flask

    fake, auth, _ = server
    fake.admins.add("carl")
    app = Flask("t")
    with app.app_context():  # one app context around two requests: what the request carries decides, not `g`
        with app.test_request_context("/api/2.0/mlflow/runs/log-metric"):
            assert auth.authenticate_request().username == "carl"
            assert auth.sender_is_admin() and auth.authenticate_request().username == "carl"
        assert fake.calls.count("authenticate") == 1
        fake.username = "dora"
        with app.test_request_context("/api/2.0/mlflow/runs/log-metric"):
            assert auth.authenticate_request().username == "dora"
            assert auth.sender_is_admin() is False
        assert fake.calls.count("authenticate") == 2


def test_a_refused_login_is_asked_again(server):
    from flask import Flask

    fake, _, _ = server
    fake.authenticate_request = lambda: fake.calls.append("authenticate") or SimpleNamespace(status_code=401)
    wrapped_again = wrapped(fake)
    install(PermissionCache(TTL), wrapped_again)
    with Flask("t").test_request_context("/api/2.0/mlflow/runs/log-metric"):
        assert wrapped_again.authenticate_request().status_code == 401
        assert wrapped_again.authenticate_request().status_code == 401
    assert fake.calls.count("authenticate") == 2


def test_run_experiment_cached_and_each_caller_gets_its_own_list(server):
    fake, auth, _ = server
    first = auth._run_requirement("run-1", "update")
    first[1].append("extra requirement")
    assert auth._run_requirement("run-1", "update") == (("experiment", "7"), [("experiment", "7", "update")])
    assert fake.calls.count("run") == 1
    assert auth._run_requirement("no-such-run", "update") is None
    assert auth._run_requirement("no-such-run", "update") is None
    assert fake.calls.count("run") == 3  # a missing run is not cached: it may be created next


def test_ttl_zero_turns_the_cache_off(clock):
    fake = FakeAuth()
    fake.allowed.add(("carl", "7"))
    auth = wrapped(fake)
    install(PermissionCache(0, clock=clock), auth)
    for _ in range(3):
        assert auth.authorize("carl", ("experiment", "7"), [])
    assert fake.calls.count("authorize") == 3


def test_size_is_bounded_least_recently_used_first(clock):
    cache = PermissionCache(TTL, max_entries=2, clock=clock)
    for key in ("a", "b"):
        cache.put(key, key)
    cache.get("a")
    cache.put("c", "c")
    assert cache.cached("a", lambda: "recomputed") == "a" and cache.cached("b", lambda: "recomputed") == "recomputed"


@pytest.mark.parametrize(("value", "ttl"), [("", DEFAULT_TTL_SECONDS), ("2.5", 2.5), ("0", 0.0), ("-3", 0.0),
                                             ("soon", DEFAULT_TTL_SECONDS)])
def test_ttl_setting(value, ttl):
    assert ttl_from_environment({"MLFLOW_GCP_PERMISSION_CACHE_SECONDS": value}) == ttl


@pytest.mark.parametrize(("method", "path", "changes"), [
    ("POST", "/api/3.0/mlflow/users/permissions/revoke", True),
    ("POST", "/api/2.0/mlflow/experiments/permissions/update", True),
    ("PATCH", "/api/2.0/mlflow/users/update-admin", True),
    ("DELETE", "/api/2.0/mlflow/users/delete", True),
    ("POST", "/ajax-api/3.0/mlflow/roles/assign", True),
    ("GET", "/api/2.0/mlflow/users/get", False),
    ("POST", "/api/2.0/mlflow/runs/log-metric", False),
])
def test_which_requests_change_access(method, path, changes):
    assert changes_access(method, path) is changes


def send_through(middleware, method: str, path: str, status: int) -> None:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    middleware.app = app
    asyncio.run(middleware({"type": "http", "method": method, "path": path}, receive, send))


def test_the_instance_that_served_an_access_change_forgets_at_once(server):
    fake, auth, cache = server
    fake.allowed.add(("carl", "7"))
    assert auth.authorize("carl", ("experiment", "7"), [])
    middleware = ClearOnAccessChange(None, cache)
    send_through(middleware, "POST", "/api/2.0/mlflow/runs/log-metric", 200)
    assert auth.authorize("carl", ("experiment", "7"), []) and fake.calls.count("authorize") == 1
    fake.allowed.clear()
    send_through(middleware, "POST", "/api/3.0/mlflow/users/permissions/revoke", 200)
    assert auth.authorize("carl", ("experiment", "7"), []) is False


def test_an_unhashable_argument_is_asked_every_time_not_an_error(server):
    fake, auth, _ = server
    fake.allowed.add(("carl", "7"))
    assert auth.authorize("carl", ("experiment", "7"), [{"unhashable": "requirement"}])
    assert auth.authorize("carl", ("experiment", "7"), [{"unhashable": "requirement"}])
    assert fake.calls.count("authorize") == 2


def test_requirements_holding_lists_are_cached_per_content(server):
    fake, auth, _ = server
    fake.allowed.add(("carl", "7"))
    ask = lambda fallback: auth.authorize("carl", ("experiment", "7"), [("run", "*", "update", fallback)])  # noqa: E731
    assert ask([("experiment", "7")]) and ask([("experiment", "7")])
    assert fake.calls.count("authorize") == 1
    assert ask([("experiment", "8")])  # another fallback: another decision
    assert fake.calls.count("authorize") == 2


def test_a_run_lookup_holding_something_mutable_is_copied_deeply(clock):
    fake = FakeAuth()
    namespace = wrapped(fake)
    namespace._run_requirement = lambda run_id, action: (("experiment", "7"), [("experiment", "7", action, ["x"])])
    install(PermissionCache(TTL, clock=clock), namespace)
    first = namespace._run_requirement("run-1", "update")
    first[1][0][3].append("changed by a caller")
    first[1].append("extra requirement")
    expected = (("experiment", "7"), [("experiment", "7", "update", ["x"])])
    assert namespace._run_requirement("run-1", "update") == expected
