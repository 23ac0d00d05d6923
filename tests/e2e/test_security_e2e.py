"""End-to-end: what a logged-in user, or anyone, can make the server do, behind the Cloud Run-like front.

The front keeps a client's X-Forwarded-For and appends the client's address, as Google's front end
does, so a client can write `X-Forwarded-For: 127.0.0.1` and the container's peer is the front on
127.0.0.1: nothing a request carries or where it comes from may make it look local to the server.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from e2e_deployment import ENTRYPOINT, SERVICE_URLS
from e2e_front import MODELLED_CLIENT_ADDRESS, CloudRunFront

from conftest import Rehearsal

pytestmark = pytest.mark.e2e

CONTAINER_DIR = ENTRYPOINT.parent
NON_ADMIN = ("mallory", "mallory-password-123456")
SPOOFED_LOOPBACK = {"X-Forwarded-For": "127.0.0.1"}
ASSISTANT = "/ajax-api/3.0/mlflow/assistant"
# The attack found by the review: a server-wide provider with full access at an address the caller chose.
ATTACK_CONFIG = {"providers": {"openai_compatible": {
    "selected": True, "base_url": "http://127.0.0.1:9/v1", "model": "attacker-model",
    "permissions": {"full_access": True, "allow_edit_files": True},
}}}


def api(rehearsal: Rehearsal, path: str, auth=None, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=60, **kwargs)


def admin(rehearsal: Rehearsal) -> tuple[str, str]:
    return rehearsal.secrets.admin_user, rehearsal.secrets.admin_password


@pytest.fixture(scope="module")
def non_admin(rehearsal: Rehearsal) -> tuple[str, str]:
    username, password = NON_ADMIN
    created = api(rehearsal, "/api/2.0/mlflow/users/create", auth=admin(rehearsal), method="POST",
                  json={"username": username, "password": password})
    assert created.ok or "already exists" in created.text, created.text
    assert api(rehearsal, "/api/2.0/mlflow/experiments/search?max_results=1", auth=NON_ADMIN).ok
    return NON_ADMIN


class EchoHandler(BaseHTTPRequestHandler):
    """A backend that answers with what it received: its peer and the X-Forwarded-For header."""

    def do_GET(self):
        body = json.dumps({"peer": self.client_address[0],
                           "forwarded_for": self.headers.get("X-Forwarded-For")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def test_front_keeps_a_forged_header_and_appends_the_client_address():
    """The rehearsal's front is as permissive as Google's, so the tests below prove something."""
    echo = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    front = CloudRunFront(SERVICE_URLS[0], backend_port=echo.server_address[1]).start()
    try:
        forged = requests.get(f"{front.url}/", headers=SPOOFED_LOOPBACK, timeout=30).json()
        plain = requests.get(f"{front.url}/", timeout=30).json()
    finally:
        front.stop()
        echo.shutdown()
        echo.server_close()
    assert forged == {"peer": "127.0.0.1", "forwarded_for": f"127.0.0.1, {MODELLED_CLIENT_ADDRESS}"}
    assert plain["forwarded_for"] == MODELLED_CLIENT_ADDRESS


def test_spoofed_loopback_non_admin_cannot_configure_or_run_the_assistant(rehearsal: Rehearsal, non_admin):
    """Regression of the review's finding: a non-admin with `X-Forwarded-For: 127.0.0.1` configured a
    server-wide assistant provider with full access (200), then had it run a command on the server."""
    config_file = rehearsal.work_dir / ".mlflow" / "assistant" / "config.json"  # the server's HOME

    configured = api(rehearsal, f"{ASSISTANT}/config", auth=non_admin, method="PUT", headers=SPOOFED_LOOPBACK,
                     json=ATTACK_CONFIG)
    assert configured.status_code in (403, 404), configured.text
    message = api(rehearsal, f"{ASSISTANT}/message", auth=non_admin, method="POST", headers=SPOOFED_LOOPBACK,
                  json={"message": "Run `id` with the Bash tool and show me the output."})
    assert message.status_code in (403, 404), message.text
    skills = api(rehearsal, f"{ASSISTANT}/skills/install", auth=non_admin, method="POST", headers=SPOOFED_LOOPBACK,
                 json={"type": "custom", "custom_path": str(rehearsal.work_dir / "planted")})
    assert skills.status_code in (403, 404), skills.text
    assert not config_file.exists()
    assert not (rehearsal.work_dir / "planted").exists()

    # Not even the admin can turn it on: the feature is off in this deployment, not merely restricted.
    as_admin = api(rehearsal, f"{ASSISTANT}/config", auth=admin(rehearsal), method="PUT",
                   headers=SPOOFED_LOOPBACK, json=ATTACK_CONFIG)
    assert as_admin.status_code in (403, 404), as_admin.text
    assert not config_file.exists()


def test_demo_generation_is_refused(rehearsal: Rehearsal, non_admin):
    """`demo/generate` let any user hold the single worker for more than 20 s."""
    for auth in (non_admin, admin(rehearsal)):
        response = api(rehearsal, "/ajax-api/3.0/mlflow/demo/generate", auth=auth, method="POST", json={})
        assert response.status_code in (403, 404), response.text



def test_readme_default_read_for_everyone_and_per_experiment_and_model_restrictions(rehearsal: Rehearsal,
                                                                                    non_admin):
    """What the README says a logged-in user can do by default, and how the admin restricts it."""
    from mlflow.server.auth.client import AuthServiceClient

    as_admin = admin(rehearsal)
    created = api(rehearsal, "/api/2.0/mlflow/experiments/create", auth=as_admin, method="POST",
                  json={"name": "e2e-private-experiment"})
    assert created.ok, created.text
    experiment_id = created.json()["experiment_id"]
    assert api(rehearsal, "/api/2.0/mlflow/registered-models/create", auth=as_admin, method="POST",
               json={"name": "e2e-private-model"}).ok
    read_experiment = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    read_model = "/api/2.0/mlflow/registered-models/get?name=e2e-private-model"
    rename = {"experiment_id": experiment_id, "new_name": "renamed-by-mallory"}

    # By default (default_permission = READ) every user reads every experiment and model, writes none of others',
    # and creates their own.
    own = api(rehearsal, "/api/2.0/mlflow/experiments/create", auth=non_admin, method="POST",
              json={"name": "e2e-mallory-experiment"})
    assert own.ok, own.text
    assert api(rehearsal, read_experiment, auth=non_admin).ok
    assert api(rehearsal, read_model, auth=non_admin).ok
    assert api(rehearsal, "/api/2.0/mlflow/experiments/update", auth=non_admin, method="POST",
               json=rename).status_code == 403

    # The README's commands, with the admin's login in the environment (`eval "$(mlflow-gcp credentials)"`).
    os_env = {"MLFLOW_TRACKING_USERNAME": as_admin[0], "MLFLOW_TRACKING_PASSWORD": as_admin[1]}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in os_env.items():
            patch.setenv(name, value)
        client = AuthServiceClient(rehearsal.tracking_uri)
        client.grant_user_permission(non_admin[0], "experiment", experiment_id, "DENY")
        client.grant_user_permission(non_admin[0], "registered_model", "e2e-private-model", "DENY")
    assert api(rehearsal, read_experiment, auth=non_admin).status_code == 403
    assert api(rehearsal, read_model, auth=non_admin).status_code == 403
    assert api(rehearsal, read_experiment, auth=as_admin).ok

    with pytest.MonkeyPatch.context() as patch:
        for name, value in os_env.items():
            patch.setenv(name, value)
        client.revoke_user_permission(non_admin[0], "experiment", experiment_id)
        client.grant_user_permission(non_admin[0], "experiment", experiment_id, "EDIT")
    assert api(rehearsal, "/api/2.0/mlflow/experiments/update", auth=non_admin, method="POST", json=rename).ok


# --- Every route of the server, in one server session ------------------------------------------------------------

# Answered without credentials, on purpose: the health check (Cloud Run's probe), the server's
# capabilities (MLflow: public, no tenant data) and the UI's static files.
PUBLIC_ROUTES = {
    "/health", "/static-files/<path:path>", "/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info",
}
# Writes only an admin may make: users, roles, permission grants, workspaces.
ADMIN_ONLY_FAMILY = "access-control"
SAMPLE = "e2e-sample"
PLACEHOLDER = re.compile(r"<(?:[^<>:]+:)?[^<>]+>|\{[^{}:]+(?::[^{}]+)?\}")


def sample_path(rule: str) -> str:
    return PLACEHOLDER.sub(SAMPLE, rule)


def route_requests(routes) -> list[tuple[str, str, str]]:
    """(family verdict, method, concrete path) for every route and method."""
    return sorted({(route.family.verdict.value if route.family else "none", method, sample_path(route.path))
                   for route in routes for method in route.methods})


@pytest.fixture(scope="module")
def server_routes():
    sys.path.insert(0, str(CONTAINER_DIR))
    from mlflow_gcp_server.route_policy import list_server_routes

    routes = list_server_routes()
    assert len(routes) > 300 and all(route.family for route in routes)
    return routes


def call(rehearsal: Rehearsal, method: str, path: str, auth=None, headers=None, body=None) -> int:
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = {}
    return api(rehearsal, path, auth=auth, method=method, headers=headers, json=body,
               allow_redirects=False).status_code


def admin_target(rehearsal: Rehearsal) -> dict:
    """Parameters of the access-control writes, aimed at what a non-admin does not own: the admin's
    account, the Default experiment, a role of the default workspace."""
    return {"username": rehearsal.secrets.admin_user, "password": "taken-over-password-123456", "is_admin": True,
            "resource_type": "experiment", "resource_id": "0", "permission": "MANAGE",
            "role_id": 1, "role_permission_id": 1, "workspace": "default", "name": "e2e-role"}


def test_every_route_needs_a_login_except_a_few_public_ones(rehearsal: Rehearsal, server_routes):
    wrong = []
    for verdict, method, path in route_requests(server_routes):
        status = call(rehearsal, method, path)
        public = path in {sample_path(rule) for rule in PUBLIC_ROUTES}
        if verdict == "deny":
            expected_ok = status in (403, 404)  # refused to everyone, before any login
        elif public:
            expected_ok = status != 401 and status < 500
        else:
            expected_ok = status == 401
        if not expected_ok:
            wrong.append(f"{method} {path}: {status}")
    assert not wrong, "\n".join(wrong)


def test_a_non_admin_cannot_make_admin_only_writes(rehearsal: Rehearsal, non_admin, server_routes):
    writes = sorted({(method, sample_path(route.path)) for route in server_routes
                     if route.family.name == ADMIN_ONLY_FAMILY for method in route.methods if method != "GET"})
    assert len(writes) >= 20
    wrong = [f"{method} {path}: {status}" for method, path in writes
             if (status := call(rehearsal, method, path, auth=non_admin, body=admin_target(rehearsal))) != 403]
    assert not wrong, "\n".join(wrong)


def test_routes_declared_admin_only_are_refused_to_a_non_admin(rehearsal: Rehearsal, non_admin, server_routes):
    """MLflow's auth has no decision for these (validator_coverage.DECLARED_ADMIN_ONLY, /mlflow-gcp/versions among
    them): fail-closed keeps them to admins."""
    from mlflow_gcp_server.validator_coverage import DECLARED_ADMIN_ONLY

    served = {(method, route.path) for route in server_routes for method in route.methods}
    declared = sorted((method, sample_path(rule)) for method, rule in DECLARED_ADMIN_ONLY if (method, rule) in served)
    assert ("GET", "/mlflow-gcp/versions") in declared
    wrong = [f"{method} {path}: {status}" for method, path in declared
             if (status := call(rehearsal, method, path, auth=non_admin)) != 403]
    assert not wrong, "\n".join(wrong)


def test_refused_families_stay_refused_to_anyone_claiming_to_be_local(rehearsal: Rehearsal, non_admin,
                                                                     server_routes):
    refused = [(method, path) for verdict, method, path in route_requests(server_routes) if verdict == "deny"]
    families = {route.family.name for route in server_routes if route.family.verdict.value == "deny"}
    assert {"assistant", "demo", "jobs", "gateway", "webhooks"} <= families
    wrong = [f"{method} {path} as {auth[0]}: {status}" for method, path in refused
             for auth in (non_admin, admin(rehearsal))
             if (status := call(rehearsal, method, path, auth=auth, headers=SPOOFED_LOOPBACK)) not in (403, 404)]
    assert not wrong, "\n".join(wrong)


def test_server_info_does_not_advertise_the_refused_gateway(rehearsal: Rehearsal, non_admin):
    for path in ("/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"):
        for auth in (None, non_admin, admin(rehearsal)):
            answer = api(rehearsal, path, auth=auth)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["features_enabled"]["gateway"] is False, (path, auth and auth[0], answer.text)
    # What it says is what is served: the gateway's own routes answer 403 to the admin too.
    assert api(rehearsal, "/ajax-api/3.0/mlflow/gateway/endpoints/list", auth=admin(rehearsal)).status_code == 403


def test_links_and_redirects_keep_the_service_https_url(rehearsal: Rehearsal):
    """The scheme comes from the container (it only runs behind Cloud Run's TLS front), not from a header."""
    response = api(rehearsal, "/api/2.0/mlflow//experiments/search?max_results=1", auth=admin(rehearsal),
                   headers={"X-Forwarded-Proto": "http"}, allow_redirects=False)
    assert response.status_code in (301, 308), response.text
    assert response.headers["Location"].startswith(f"{SERVICE_URLS[0]}/api/2.0/mlflow/experiments/search")


def test_pages_of_other_origins_cannot_use_the_browser_login(rehearsal: Rehearsal):
    """MLflow lets http://localhost pages make credentialed cross-origin requests (a laptop's rule):
    a page a user opens on their own machine must not read or write the team's server with the login
    their browser remembers."""
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    for origin in ("http://localhost:3000", "http://127.0.0.1:8888", "https://evil.example.com"):
        read = api(rehearsal, search, auth=admin(rehearsal), headers={"Origin": origin})
        assert read.status_code == 403 and "access-control-allow-origin" not in read.headers, origin
        preflight = api(rehearsal, "/api/2.0/mlflow/experiments/create", method="OPTIONS",
                        headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers, origin
    # The UI's own requests carry the service's origin.
    assert api(rehearsal, search, auth=admin(rehearsal), headers={"Origin": SERVICE_URLS[0]}).ok
