"""A short cache in front of MLflow's permission lookups, with a stated revocation bound.

Every request of a logged-in user costs MLflow's auth a few database queries before the handler runs: the user
row (is the sender an admin?), the run's experiment, the user's grants. A client logging metrics asks the same
questions many times a second. Here the answers are kept for `ttl` seconds (MLFLOW_GCP_PERMISSION_CACHE_SECONDS,
default 10), per process:

- what is cached: a user's admin flag (`sender_is_admin`), the experiment a run belongs to (`_run_requirement`,
  a fact that never changes), and *allowed* decisions of `authorize(username, anchor, requirements)`. A refusal
  is never cached, so a new grant or a new resource is usable at once.
- revocation bound: a permission taken away (a grant revoked or lowered, a user demoted) is refused by every
  instance at most `ttl` seconds later; on the instance that served the change, at once (a write to users,
  roles, workspaces or permissions clears the cache, see `ClearOnAccessChange`). MLflow's own login cache
  (auth_cache_ttl_seconds, 120 s) holds a removed or demoted user's login longer on other instances.
- `ttl` 0 turns the cache off.
- within one request, the login is checked once (`authenticate_request`): MLflow asks again in its admin check and
  in each validator, each time parsing the header and computing an HMAC. The answer is kept with the request only;
  a request that changes its own sender's password is judged as a whole by the login it came with.

The wrappers replace the functions in `mlflow.server.auth`'s namespace, where MLflow's validators look them up
at each call (`install`); check_mlflow_compat.py fails the image build if those functions are gone.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from flask import has_request_context, request

TTL_VAR = "MLFLOW_GCP_PERMISSION_CACHE_SECONDS"
DEFAULT_TTL_SECONDS = 10.0
MAX_ENTRIES = 10_000
# The functions of mlflow.server.auth this module wraps (checked at image build time).
WRAPPED = ("sender_is_admin", "authorize", "_run_requirement", "authenticate_request")
_MISSING = object()
REQUEST_LOGIN_KEY = "mlflow_gcp.login"


class PermissionCache:
    """A thread-safe map with a time to live per entry and a size bound (least recently used evicted)."""

    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any:
        """The live value for `key`, or _MISSING."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self.clock():
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return _MISSING
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def cached(self, key: Hashable, compute: Callable[[], Any], keep: Callable[[Any], bool] = lambda _: True) -> Any:
        """`compute()`'s value for `key`, from the cache while it lives; a value `keep` rejects is not stored.
        A key that cannot be hashed (an argument shape MLflow did not use when this was written) is not cached."""
        try:
            hash(key)
        except TypeError:
            return compute()
        value = self.get(key)
        if value is _MISSING:
            value = compute()
            if keep(value):
                self.put(key, value)
        return value


def ttl_from_environment(environ=os.environ) -> float:
    value = environ.get(TTL_VAR, "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_TTL_SECONDS
    except ValueError:
        return DEFAULT_TTL_SECONDS


def _hashable(value: Any) -> Hashable:
    """Requirements are named tuples that may hold lists: a key made of tuples all the way down."""
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_hashable(item) for item in value))
    return value


def _decision_key(username, anchor, requirements, workspace) -> Hashable:
    # MLflow passes a list of Requirement named tuples of strings and tuples: one tuple of them is a key as it is
    # (the common case, asked on every request); anything else is turned into tuples all the way down.
    if type(requirements) is list:
        key = ("authorize", username, anchor, tuple(requirements), workspace)
        try:
            hash(key)
            return key
        except TypeError:
            pass
    return ("authorize", username, _hashable(anchor), _hashable(requirements), workspace)


def _own_copy(found):
    """A copy of a run lookup `(anchor, [requirements])` its caller may extend: a new list is enough when what it
    holds cannot change (hashable all the way down); anything else is copied deeply."""
    if type(found) is tuple and len(found) == 2 and type(found[1]) is list:
        try:
            hash((found[0], tuple(found[1])))
        except TypeError:
            return copy.deepcopy(found)
        return found[0], list(found[1])
    return copy.deepcopy(found)


def install(cache: PermissionCache, auth=None) -> None:
    """Put the cached lookups in place of MLflow's in `mlflow.server.auth` (once per process)."""
    if auth is None:
        import mlflow.server.auth as auth
    if getattr(auth, "_mlflow_gcp_permission_cache", None) is not None:
        return
    sender_is_admin, authorize, run_requirement = auth.sender_is_admin, auth.authorize, auth._run_requirement
    authenticate_request = auth.authenticate_request

    def authenticate_once():
        # MLflow checks the login several times per request (its before-request hook, the admin check, each
        # validator): the first successful answer is kept with this request (its WSGI environ, which no other
        # request shares) and given again.
        if not has_request_context():
            return authenticate_request()
        found = request.environ.get(REQUEST_LOGIN_KEY)
        if found is None:
            found = authenticate_request()
            if getattr(found, "username", None):  # not MLflow's 401 response
                request.environ[REQUEST_LOGIN_KEY] = found
        return found

    def cached_sender_is_admin() -> bool:
        return cache.cached(("is_admin", auth.authenticate_request().username), sender_is_admin)

    def cached_authorize(username, anchor, requirements) -> bool:
        key = _decision_key(username, anchor, requirements, _workspace(auth))
        return cache.cached(key, lambda: authorize(username, anchor, requirements), keep=bool)

    def cached_run_requirement(run_id, action):
        # Callers extend the requirement list they get: each gets its own copy.
        found = cache.cached(("run", run_id, action), lambda: run_requirement(run_id, action),
                             keep=lambda value: value is not None)
        return _own_copy(found)

    auth.authenticate_request = authenticate_once
    auth.sender_is_admin = cached_sender_is_admin
    auth.authorize = cached_authorize
    auth._run_requirement = cached_run_requirement
    auth._mlflow_gcp_permission_cache = cache


def _workspace(auth) -> str | None:
    # Decisions are per workspace when MLflow's workspaces are on (they are off on this deployment).
    try:
        return auth.workspace_context.get_request_workspace()
    except Exception:  # no request workspace resolvable: not a key part
        return None


ACCESS_CONTROL_MARKERS = ("/mlflow/users", "/mlflow/roles", "/mlflow/workspaces", "/permissions")
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def changes_access(method: str, path: str) -> bool:
    """A write that can change who may do what: users, roles, workspaces, any permission route."""
    return method.upper() not in READ_METHODS and any(marker in path for marker in ACCESS_CONTROL_MARKERS)


class ClearOnAccessChange:
    """ASGI middleware: after a successful access-control write, this instance forgets every cached decision."""

    def __init__(self, app, cache: PermissionCache):
        self.app = app
        self.cache = cache

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not changes_access(scope.get("method", "GET"), scope.get("path") or ""):
            return await self.app(scope, receive, send)

        async def send_then_clear(message):
            await send(message)
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                self.cache.clear()

        try:
            await self.app(scope, receive, send_then_clear)
        finally:
            # Also when the write failed halfway: clearing too often costs only a few lookups.
            self.cache.clear()
