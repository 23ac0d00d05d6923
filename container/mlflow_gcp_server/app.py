"""The app the container serves: MLflow's basic-auth app behind a guard fit for Cloud Run.

Registered as the `mlflow-gcp` app (`mlflow server --app-name mlflow-gcp`, entry point in the
dist-info next to this package); uvicorn runs with `--no-proxy-headers`.
"""

from __future__ import annotations

import gc
import os
from fnmatch import fnmatch

from mlflow_gcp_server import storage_locations, versions
from mlflow_gcp_server.route_policy import classify, is_allowed

FORBIDDEN = 403
NOT_FOUND = 404


class CloudRunGuard:
    """ASGI middleware around the whole server, before any MLflow code sees a request.

    - Every request reaches this container through Cloud Run's front end, which redirects http to
      https and terminates TLS (https://cloud.google.com/run/docs/triggering/https-request), and
      keeps a client's own X-Forwarded-For, appending the client's address
      (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header). So no header
      can tell where a request comes from, and the TCP peer is Google's proxy, never the caller:
      the caller's address is unknown (None), and no request, whatever it carries, looks local
      to the server (MLflow's assistant granted loopback callers what it refuses to others).
      The scheme is https because the container only runs behind that TLS front, a fact of the
      deployment, not of the request: MLflow's links and redirects keep the service's https URL.
    - A path outside the families this deployment serves is refused to everyone, admins
      included, before authentication: 403 with the reason for a family meant for a laptop,
      404 for a path in no family (route_policy.py).
    - A browser request from a web origin other than the service's own is refused (403). MLflow
      lets any http://localhost page make credentialed cross-origin requests (its CORS rules are
      made for a server on the same laptop): here, any page a user opens on their own machine
      would read and write the team's server with the login the browser remembers. The mlflow
      client sends no Origin; the UI's own requests carry the service's origin.
    """

    def __init__(self, app, allowed_origins: tuple[str, ...] = ()):
        self.app = app
        self.allowed_origins = allowed_origins

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        scope = {**scope, "client": None, "scheme": "https" if scope["type"] == "http" else "wss"}
        path = scope.get("path") or "/"
        if not is_allowed(path):
            return await self.refuse(scope, send, path)
        if self.foreign_origin(scope):
            return await self.respond(send, FORBIDDEN, b"Cross-origin requests are refused (mlflow-gcp).")
        return await self.app(scope, receive, send)

    def foreign_origin(self, scope) -> bool:
        origins = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name.lower() == b"origin"]
        if not origins or "*" in self.allowed_origins:
            return False
        return not all(any(fnmatch(origin, allowed) for allowed in self.allowed_origins) for origin in origins)

    @staticmethod
    async def refuse(scope, send, path: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        family = classify(path)
        if family is None:
            return await CloudRunGuard.respond(send, NOT_FOUND, b"Not found.")
        return await CloudRunGuard.respond(send, FORBIDDEN, (
            f"Disabled on this server (mlflow-gcp): MLflow's '{family.name}' features are meant for a "
            f"server on your own machine: {family.reason}.").encode())

    @staticmethod
    async def respond(send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app():
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app

    from mlflow_gcp_server import cookie_sessions, fastapi_passthrough, permission_cache, request_parse

    cache = permission_cache.PermissionCache(permission_cache.ttl_from_environment())
    permission_cache.install(cache)
    # The service's own URLs, as the entrypoint gives them to MLflow (comma-separated, `*` patterns).
    origins = os.environ.get("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "")
    server = create_basic_auth_app()
    fastapi_passthrough.install(server)  # MLflow's FastAPI permission middleware only where it can decide
    cookie_sessions.install(flask_app)  # no cookie signer for requests without a session cookie
    request_parse.install()  # a request's body parsed into its message once (permission check and handler)
    storage_locations.install(flask_app)  # after MLflow's login and permission checks
    versions.install(flask_app)  # admins only: MLflow's fail-closed auth, then the view's own check
    guarded = CloudRunGuard(permission_cache.ClearOnAccessChange(server, cache),
                            tuple(filter(None, (o.strip() for o in origins.split(",")))))
    freeze_startup_objects()
    return guarded


def freeze_startup_objects() -> int:
    """Move what the server holds once started out of the cyclic garbage collector's way; the number moved.

    The worker holds about 350,000 objects from its imports and set-up (MLflow, SQLAlchemy, protobuf, Flask), kept
    for its whole life. CPython's full collection scans every one of them each time: here every few hundred
    `log_batch` calls, about 70 ms each time (5% of such a call's CPU, and that pause for the request it lands on).
    `gc.freeze()` (https://docs.python.org/3/library/gc.html#gc.freeze) moves them to a generation no collection
    scans; what requests allocate is collected as before. Cycles among these objects that turn to garbage later
    are not freed: start-up objects live as long as the worker anyway."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
