"""Which permission decision MLflow's auth makes for each route this deployment serves (build-time check).

With MLFLOW_BASIC_AUTH_FAIL_CLOSED (set by the image, see entrypoint.SECURITY_SETTINGS) MLflow refuses a
non-admin a route for which its auth has no decision. That is safe, but a route the route policy ALLOWs and MLflow
has no decision for is then either useless to non-admins or, if the setting were lost, open to every logged-in
user. So the image build lists, for every route of an ALLOW family and each of its methods, the decision MLflow's
auth makes for a non-admin, the way `mlflow.server.auth._before_request` and its FastAPI middleware find it:

- "public": MLflow answers it without a login (health, static files, server-info);
- "validator": a permission validator (Flask before-request, artifact proxy, or FastAPI);
- "self-authorizing": the handler or a response filter decides per caller (runs/search, graphql, list filters);
- "": none. With fail-closed, MLflow refuses it to every non-admin: the route serves admins only.
  check_mlflow_compat.py fails the build unless it is in DECLARED_ADMIN_ONLY below, with the reason that is right.
"""

from __future__ import annotations

import re


def _both_apis(method: str, rule: str, reason: str) -> dict[tuple[str, str], str]:
    return {(method, f"/{api}{rule}"): reason for api in ("api", "ajax-api")}


# ALLOWed routes MLflow's auth has no decision for (MLflow 3.17.2), which fail-closed therefore keeps to admins:
# (method, rule as declared) -> why admins only is right. A new one fails the image build until it is decided here
# (admins only, or DENY in route_policy.py).
DECLARED_ADMIN_ONLY: dict[tuple[str, str], str] = {
    ("GET", "/build/<path:filename>"): "Flask's own static route for the UI bundle; the UI loads the same files "
                                        "from /static-files, which MLflow serves to everyone",
    ("POST", "/api/2.0/mlflow/users/create-ui"): "the admin's form that creates users",
    ("GET", "/mlflow-gcp/versions"): "this deployment's own route: the MLflow version and schema revisions, for "
                                     "`mlflow-gcp status` (mlflow_gcp_server.versions)",
    **_both_apis("POST", "/2.0mlflow/experiments/search-datasets",
                 "a rule MLflow declares without the slash (sic); the real route has a validator"),
    # The OSS UI calls neither: tests/e2e/test_ui_nonadmin_e2e.py walks its pages as a non-admin.
    **_both_apis("GET", "/2.0/mlflow/unified-traces", "Databricks' unified trace search (not used by the OSS UI)"),
    **_both_apis("GET", "/2.0/mlflow/get-online-trace-details", "Databricks' online traces (not used by the OSS UI)"),
    **{key: reason for method in ("GET", "PATCH", "DELETE") for key, reason in _both_apis(
        method, "/3.0/mlflow/workspaces/<workspace_name>",
        "workspaces, off on this deployment (MLFLOW_ENABLE_WORKSPACES), are the admin's").items()},
}

PUBLIC, VALIDATOR, SELF_AUTHORIZING, NONE = "public", "validator", "self-authorizing", ""
_PLACEHOLDER = re.compile(r"<(?:[^<>:]+:)?[^<>]+>|\{[^{}:]+(?::[^{}]+)?\}")
SAMPLE = "1"


def sample_path(rule: str) -> str:
    """A concrete path for a route rule: every `<name>` or `{name}` placeholder given a sample value."""
    return _PLACEHOLDER.sub(SAMPLE, rule)


def flask_decision(flask_app, rule: str, method: str) -> str:
    import mlflow.server.auth as auth
    from flask import request

    path = sample_path(rule)
    with flask_app.test_request_context(path, method=method):
        if auth.is_unprotected_route(request.path):
            return PUBLIC
        if auth._find_validator(request) is not None:
            return VALIDATOR
        if auth._is_proxy_artifact_path(request.path):
            found = auth._get_proxy_artifact_validator(request.method, request.view_args)
            return VALIDATOR if found is not None else NONE
        if auth._authorized_outside_before_request(request):
            return SELF_AUTHORIZING
    return NONE


def fastapi_decision(rule: str, method: str) -> str:
    import mlflow.server.auth as auth

    path = sample_path(rule)
    if auth.is_unprotected_route(path):
        return PUBLIC
    return VALIDATOR if auth._find_fastapi_validator(path, method) is not None else NONE


def decision(route, method: str) -> str:
    """MLflow's decision for a route_policy.Route (in the process that built the server app)."""
    if route.source == "fastapi":
        return fastapi_decision(route.path, method)
    from mlflow.server import app as flask_app

    return flask_decision(flask_app, route.path, method)


def undecided(routes) -> list[str]:
    """`METHOD path` of every ALLOWed route MLflow has no decision for and this deployment has not declared."""
    from mlflow_gcp_server.route_policy import Verdict

    return sorted({
        f"{method} {route.path}"
        for route in routes if route.family is not None and route.family.verdict is Verdict.ALLOW
        for method, found in route.decisions
        if found == NONE and (method, route.path) not in DECLARED_ADMIN_ONLY
    })
