"""The routes of the server this container runs, listed by the process `route_policy.list_server_routes` starts
(`python -m mlflow_gcp_server.route_lister`): it builds the app on a scratch database and prints every route as
JSON, with MLflow's permission decision for each method of a served one."""

from __future__ import annotations

import json
import sys

from mlflow_gcp_server.route_policy import Route, Verdict

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def fastapi_routes(app) -> list[Route]:
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    routes = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            continue  # the Flask app, listed from its own url_map
        endpoint = context.endpoint
        routes.append(Route(context.path, tuple(sorted(set(context.methods or ()) - IGNORED_METHODS)), "fastapi",
                            getattr(endpoint, "__module__", "") or ""))
    return routes


def flask_routes(flask_app) -> list[Route]:
    routes = []
    for rule in flask_app.url_map.iter_rules():
        view = flask_app.view_functions.get(rule.endpoint)
        routes.append(Route(rule.rule, tuple(sorted(set(rule.methods or ()) - IGNORED_METHODS)), "flask",
                            getattr(view, "__module__", "") or ""))
    return routes


def server_routes(app) -> list[Route]:
    """Every route of the server app this container runs (FastAPI routes, then the mounted Flask app's)."""
    from mlflow.server import app as flask_app

    return fastapi_routes(app) + flask_routes(flask_app)


def build_server_app(scratch_dir: str):
    """The app the uvicorn worker serves, built here on a scratch SQLite auth database."""
    import os

    config_path = f"{scratch_dir}/basic_auth.ini"
    with open(config_path, "w") as file:
        file.write(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{scratch_dir}/auth.db\n"
                   "admin_username = route-lister\nadmin_password = route-lister-password-1234\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    os.environ.update({"MLFLOW_AUTH_CONFIG_PATH": config_path, "_MLFLOW_SGI_NAME": "uvicorn",
                       "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or "x" * 32,
                       "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{scratch_dir}/tracking.db"})
    from mlflow_gcp_server.app import create_app

    return create_app()


def main() -> None:
    """Print the server's routes as JSON, one object per route."""
    import logging
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        app = build_server_app(scratch)
        while not hasattr(app, "routes"):  # the ASGI layers of mlflow_gcp_server.app, down to MLflow's FastAPI app
            app = app.app
        routes = server_routes(app)
        from mlflow_gcp_server.validator_coverage import decision

        decisions = [tuple((method, decision(route, method)) for method in route.methods)
                     if route.family is not None and route.family.verdict is Verdict.ALLOW else ()
                     for route in routes]
    json.dump([{"path": route.path, "methods": route.methods, "source": route.source, "module": route.module,
                "decisions": found} for route, found in zip(routes, decisions, strict=True)], sys.stdout)


if __name__ == "__main__":
    main()
