"""MLflow's FastAPI permission middleware, skipped where it only passes the request on (issue 19: throughput).

MLflow's basic-auth app (`add_fastapi_permission_middleware`) checks the routes FastAPI serves itself (gateway,
native artifact routes) in an `@app.middleware("http")` function: a Starlette BaseHTTPMiddleware, which every
request pays for (a task group and a stream per request, ~0.2 ms CPU here) though for a route mounted from Flask
(every REST call of the tracking API: log_metric, log_batch, ...) it decides nothing and calls the next app; Flask's
own `before_request` authenticates and authorizes those.

`SkipWhenPassThrough` goes straight to the next app only when MLflow's middleware would certainly do nothing but
that: MLflow has no FastAPI validator for the path and method, and the request matches no route FastAPI serves
itself (so it is served by the Flask mount, behind Flask's checks). Every other request, including every one MLflow's
middleware might refuse or annotate, goes through MLflow's middleware unchanged. The decision uses MLflow's own
functions (checked at image build time: check_mlflow_compat.py).

The decision depends only on the request's type, method, path and root path (Starlette's route matching and MLflow's
validator lookup read nothing else), so it is kept per such key for paths up to CACHED_PATH_LENGTH characters (at most
CACHED_DECISIONS of them, least recently used evicted: about 1 MB): a client logging metrics asks it for the same few
paths many times a second.
"""

from __future__ import annotations

import functools

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request

MLFLOW_DISPATCH_NAME = "fastapi_permission_middleware"
# The functions of mlflow.server.auth used for the decision (checked at image build time).
USED = ("get_routed_asgi_path", "_find_fastapi_validator", "_native_fastapi_routes", "_scope_matches_native_route")
CACHED_DECISIONS = 4096
CACHED_PATH_LENGTH = 256


class SkipWhenPassThrough:
    """ASGI middleware in place of MLflow's permission middleware (`mlflow`: its BaseHTTPMiddleware)."""

    def __init__(self, app, mlflow, native_routes, auth):
        self.app = app
        self.mlflow = mlflow
        self.native_routes = native_routes
        self.auth = auth
        self._decide = functools.lru_cache(maxsize=CACHED_DECISIONS)(self.decide)

    def passes_through(self, scope) -> bool:
        if scope["type"] != "http":
            return False
        path = scope.get("path")
        if not isinstance(path, str) or not path:  # MLflow would then read the path from the Host header
            return False
        key = (scope.get("method", "GET"), path, scope.get("root_path", ""))
        return self._decide(*key) if len(path) <= CACHED_PATH_LENGTH else self.decide(*key)

    def decide(self, method: str, path: str, root_path: str) -> bool:
        # Computed from the key alone (a scope of just these fields), so a cached decision is the same decision.
        scope = {"type": "http", "method": method, "path": path, "root_path": root_path}
        if self.auth._scope_matches_native_route(self.native_routes, scope):
            return False
        routed = self.auth.get_routed_asgi_path(Request(scope))
        return self.auth._find_fastapi_validator(routed, method) is None

    async def __call__(self, scope, receive, send):
        if self.passes_through(scope):
            return await self.app(scope, receive, send)
        return await self.mlflow(scope, receive, send)


def install(fastapi_app, auth=None) -> bool:
    """Wrap MLflow's permission middleware of `fastapi_app` (before it first serves); False if it is not there."""
    if auth is None:
        import mlflow.server.auth as auth
    from starlette.middleware import Middleware

    native_routes = auth._native_fastapi_routes(fastapi_app)
    for index, middleware in enumerate(fastapi_app.user_middleware):
        dispatch = middleware.kwargs.get("dispatch")
        if middleware.cls is BaseHTTPMiddleware and getattr(dispatch, "__name__", "") == MLFLOW_DISPATCH_NAME:
            fastapi_app.user_middleware[index] = Middleware(_wrapped, dispatch=dispatch, native_routes=native_routes,
                                                            auth=auth)
            return True
    return False


def _wrapped(app, dispatch, native_routes, auth):
    return SkipWhenPassThrough(app, BaseHTTPMiddleware(app, dispatch=dispatch), native_routes, auth)
