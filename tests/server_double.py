"""A local stand-in for the deployed MLflow server, for status, credentials and rotation tests.

It listens on 127.0.0.1 and answers like MLflow with basic auth: `/health` 200, API calls 401 without or with
a wrong login, 200 with the admin login. As the real container does, each new revision of the fake Cloud Run
service "starts" with the secret versions its template pins, read from the fake Secret Manager: the admin
password is brought in line with `mlflow-credentials` then, and the MySQL login of `mysql-credentials` must
match the fake Cloud SQL user's password, else `/health` answers 503 and API calls 500 (no database).

Issue 24: a revision whose template sets MLFLOW_GCP_MAINTENANCE serves the maintenance app (`/health` 200, every
other path 503 with Retry-After, no database touched), and `/mlflow-gcp/versions` answers the admin with the MLflow
version of the revision (its `mlflow-gcp/mlflow-version` annotation, else `version_default`) and the schema
revisions, taken from `fake.sql_data[instance]["schema"]` when a test set one.

`point_service_at(double)` makes the fake Cloud Run give services the double's URLs, and
`forbid_non_loopback(monkeypatch)` makes any connection to another host fail the test.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from mlflow_gcp.config import SECRET_ENV, SECRET_MLFLOW, SECRET_MYSQL
from mlflow_gcp.service_spec import SECRET_ENV_VARS
from mlflow_gcp.steps.mlflow_version import MAINTENANCE_ENV, VERSION_ANNOTATION
from tests.fake_gcp.server import PROJECT

REGION = "europe-west1"


class MlflowDouble:
    def __init__(self, fake, *, service: str = "mlflow", instance: str = "mlflow-tracking-database") -> None:
        self.fake, self.service, self.instance = fake, service, instance
        self.revision: str | None = None
        self.admin: tuple[str, str] | None = None
        self.mysql: tuple[str, str] | None = None
        self.db_host: str | None = None  # DB_HOST of the mlflow-env version the running revision pins
        self.startups = 0
        # Test switch: while set, new revisions keep the admin password they found (their startup fails to align
        # it with the secret).
        self.admin_frozen = False
        self.requests: list[tuple[str, str, int]] = []
        self.maintenance = ""  # MLFLOW_GCP_MAINTENANCE of the running revision
        self.mlflow_version: str | None = None  # the running revision's version annotation
        self.version_default = "3.17.2"  # what a revision without the annotation runs
        self.has_versions_route = True  # False: a server of an earlier mlflow-gcp, without /mlflow-gcp/versions
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._wrap_rollouts()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def urls(self) -> list[str]:
        port = self._server.server_address[1]
        return [f"http://localhost:{port}", self.url]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- revisions -------------------------------------------------------------------------------------------
    def _wrap_rollouts(self) -> None:
        """Start the new revision when a Cloud Run operation of the fake completes, as Cloud Run does."""
        original = self.fake.after

        def after(kind, action):
            if not kind.startswith("run."):
                return original(kind, action)

            def then():
                action()
                self.sync()

            return original(kind, then)

        self.fake.after = after

    def _secret(self, secret_id: str, version: str) -> str | None:
        versions = self.fake.state.get("secret_versions", {}).get(f"projects/{PROJECT}/secrets/{secret_id}", [])
        if version == "latest":
            live = [v for v in versions if v["state"] != "DESTROYED"]
            found = live[-1:]
        else:
            found = [v for v in versions if v["name"].endswith(f"/{version}")]
        if not found or found[0]["state"] != "ENABLED":
            return None
        return found[0]["data"].decode()

    def sync(self) -> None:
        """A revision that became ready since the last look starts: it reads its pinned secret versions."""
        with self._lock:
            service = self.fake.run_service(self.service)
            revision = service.get("latestReadyRevision") if service else None
            if revision is None or revision == self.revision:
                if service is None:
                    self.revision = None
                return
            self.revision = revision
            self.startups += 1
            env = {}
            for item in service["template"]["containers"][0].get("env", []):
                ref = (item.get("valueSource") or {}).get("secretKeyRef")
                if ref and item["name"] in SECRET_ENV_VARS:
                    env[ref["secret"]] = self._secret(ref["secret"], ref.get("version", "latest"))
            self.maintenance = next(
                (e.get("value", "") for e in service["template"]["containers"][0].get("env", [])
                 if e["name"] == MAINTENANCE_ENV),
                "",
            )
            self.mlflow_version = (service["template"].get("annotations") or {}).get(VERSION_ANNOTATION)
            settings = env.get(SECRET_ENV) or ""
            self.db_host = next((ln[8:] for ln in settings.splitlines() if ln.startswith("DB_HOST=")), None)
            mysql = env.get(SECRET_MYSQL)
            self.mysql = tuple(mysql.split(":", 1)) if mysql else None
            mlflow = env.get(SECRET_MLFLOW)
            if mlflow and not (self.admin_frozen and self.admin is not None):
                self.admin = tuple(mlflow.split(":", 1))

    def database_instance(self) -> str | None:
        """The Cloud SQL instance the running revision connects to: the one whose private IP is its DB_HOST
        (the instance named at creation when it names none, or none is known yet); None when no running instance
        has that IP."""
        if self.db_host is None:
            return self.instance
        for name, instance in getattr(self.fake, "sql_instances", {}).items():
            ips = [a["ipAddress"] for a in instance.get("ipAddresses", []) if a.get("type") == "PRIVATE"]
            if self.db_host in ips and instance.get("state") == "RUNNABLE":
                return name
        return None

    def database_ok(self) -> bool:
        if self.mysql is None:
            return False
        users = getattr(self.fake, "sql_users", {}).get(self.database_instance(), [])
        return any(u["name"] == self.mysql[0] and u.get("password") == self.mysql[1] for u in users)

    # -- HTTP ------------------------------------------------------------------------------------------------
    def schema(self) -> str | None:
        data = getattr(self.fake, "sql_data", {}).get(self.database_instance()) or {}
        return data.get("schema")

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict]:
        self.sync()
        with self._lock:
            if self.maintenance:
                if path == "/health":
                    return 200, {"status": "OK"}
                return 503, {
                    "error_code": "TEMPORARILY_UNAVAILABLE",
                    "message": f"MLflow is being upgraded (maintenance: {self.maintenance}); try again in a few "
                    "minutes.",
                }
            db = self.database_ok()
            if path == "/health":
                return (200, {"status": "OK"}) if db else (503, {"error": "database unreachable"})
            versions = path == "/mlflow-gcp/versions" and self.has_versions_route
            if not versions and not path.startswith("/api/") and not path.startswith("/ajax-api/"):
                return 404, {"error": "not found"}
            login = None
            if authorization and authorization.startswith("Basic "):
                try:
                    login = tuple(base64.b64decode(authorization[6:]).decode().split(":", 1))
                except ValueError:
                    login = None
            if login is None or self.admin is None or login != self.admin:
                return 401, {"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."}
            if not db:
                return 500, {"error_code": "INTERNAL_ERROR", "message": "Access denied for user (database)"}
            if versions:
                version = self.mlflow_version or self.version_default
                schema = self.schema() or version
                return 200, {
                    "mlflow": version,
                    "tracking_schema": schema,
                    "tracking_head": version,
                    "auth_schema": schema,
                    "auth_head": version,
                }
            return 200, {"experiments": [{"experiment_id": "0", "name": "Default"}]}

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                status, body = double.answer(path, self.headers.get("Authorization"))
                double.requests.append(("GET", path, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 503 and double.maintenance:
                    self.send_header("Retry-After", "60")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


def pin_secret_versions(fake, service: str = "mlflow") -> None:
    """The service's `latest` secret references pinned to the newest versions, as the deploy step pins them."""
    for item in fake.run_service(service)["template"]["containers"][0]["env"]:
        ref = item.get("valueSource", {}).get("secretKeyRef")
        if ref and ref.get("version", "latest") == "latest":
            newest = fake.state["secret_versions"][f"projects/{PROJECT}/secrets/{ref['secret']}"][-1]
            ref["version"] = newest["name"].rsplit("/", 1)[-1]


def point_service_at(monkeypatch, double: MlflowDouble) -> None:
    """Services the fake Cloud Run creates get the double's URLs (instead of https://...run.app)."""
    from tests.fake_gcp.apis import run

    monkeypatch.setattr(run, "service_urls", lambda project, location, service: double.urls)


def forbid_non_loopback(monkeypatch) -> None:
    """Any connection to a host other than 127.0.0.1/localhost fails the test instead of leaving the machine."""
    original = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise AssertionError(f"a test tried to reach {address}: only loopback hosts are allowed")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


# -- a whole deployment for tests ------------------------------------------------------------------------------
def build_context(tmp_path, monkeypatch):
    """A minimal build context of our own, so the image tag does not follow edits of `container/`."""
    context = tmp_path / "build-context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python", "-m", "http.server"]\n')
    monkeypatch.setenv("MLFLOW_GCP_CONTAINER_DIR", str(context))
    return context


def deploy(fake, tmp_path, monkeypatch, *args: str) -> MlflowDouble:
    """`mlflow-gcp up` against the fake, the service answering through a double; the request log cleared."""
    from tests.helpers import ALL_APIS_ENABLED, cli

    forbid_non_loopback(monkeypatch)
    build_context(tmp_path, monkeypatch)
    fake.enabled |= ALL_APIS_ENABLED
    double = MlflowDouble(fake)
    point_service_at(monkeypatch, double)
    result = cli("up", *args)
    assert result.exit_code == 0, result.output
    fake.clear_log()
    return double


def existence(**overrides) -> dict[str, bool]:
    """Resource label → exists, read through the steps in plan mode (as status does)."""
    from mlflow_gcp.inventory import read_inventory
    from tests.helpers import settings

    inventory = read_inventory(settings(**overrides))
    assert all(s.error is None for s in inventory.steps), [s.error for s in inventory.steps]
    return {state.label: state.exists for _, state in inventory.states()}


def api_login(url: str, username: str | None, password: str | None) -> int:
    """The status of an authenticated MLflow API call (as a client would make it)."""
    import requests

    auth = (username, password) if username is not None else None
    response = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=auth, timeout=5)
    return response.status_code
