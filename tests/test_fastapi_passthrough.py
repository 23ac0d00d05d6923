"""MLflow's FastAPI permission middleware is skipped only where it would pass the request on unchanged
(container/mlflow_gcp_server/fastapi_passthrough.py): routes served by the Flask mount, which Flask's own checks
authorize. Routes FastAPI serves itself still meet MLflow's middleware (an anonymous OTLP post is refused)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))
# MLflow's middleware and Starlette are the server image's pins (container/requirements.txt), which the README's test
# command installs and CI's lowest-versions run of the tool's floors does not.
pytest.importorskip("mlflow")

import check_mlflow_compat
from mlflow_gcp_server import fastapi_passthrough

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": [(b"host", b"localhost")], "http_version": "1.1", "scheme": "http",
            "server": ("localhost", 80), "client": None}


def answer(app, method: str, path: str) -> tuple[int, bytes]:
    sent = []
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        return body.pop() if body else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope(method, path), receive, send))
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    return status, b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


@pytest.fixture(scope="module")
def wrapped():
    app = check_mlflow_compat.permission_middleware_app()
    assert fastapi_passthrough.install(app)
    middleware = app.build_middleware_stack()
    while not isinstance(middleware, fastapi_passthrough.SkipWhenPassThrough):
        middleware = middleware.app
    return app, middleware


def test_the_pinned_mlflow_has_the_middleware_where_it_is_wrapped():
    check_mlflow_compat.check_fastapi_passthrough()


def test_install_does_nothing_without_mlflows_middleware():
    from flask import Flask
    from mlflow.server.fastapi_app import create_fastapi_app

    assert not fastapi_passthrough.install(create_fastapi_app(Flask("bare")))


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/2.0/mlflow/runs/log-metric"),
                                              ("POST", "/api/2.0/mlflow/runs/log-batch"),
                                              ("GET", "/ajax-api/2.0/mlflow/experiments/get")])
def test_flask_routes_skip_mlflows_middleware(wrapped, method, path):
    assert wrapped[1].passes_through(scope(method, path))


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/traces"), ("POST", "/gateway/x/mlflow/invocations"),
                                              ("GET", "/ajax-api/3.0/jobs/x")])
def test_routes_with_a_fastapi_validator_meet_mlflows_middleware(wrapped, method, path):
    assert not wrapped[1].passes_through(scope(method, path))


def test_a_native_route_still_refuses_an_anonymous_caller(wrapped):
    status, body = answer(wrapped[0], "POST", "/v1/traces")
    assert status == 401
    assert b"not authenticated" in body


PATHS = [("POST", "/api/2.0/mlflow/runs/log-metric"), ("GET", "/api/2.0/mlflow/runs/log-metric"),
         ("POST", "/v1/traces"), ("GET", "/v1/traces"), ("GET", "/ajax-api/3.0/jobs/x"),
         ("POST", "/gateway/x/mlflow/invocations"), ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/a.txt"),
         ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/a.txt"), ("GET", "/health")]


def test_a_remembered_decision_is_the_decision(wrapped):
    middleware = wrapped[1]
    fresh = [middleware.decide(method, path, "") for method, path in PATHS]
    first = [middleware.passes_through(scope(method, path)) for method, path in PATHS]
    hits = middleware._decide.cache_info().hits
    again = [middleware.passes_through(scope(method, path)) for method, path in PATHS]
    assert first == again == fresh
    assert middleware._decide.cache_info().hits >= hits + len(PATHS)


def test_long_paths_and_pathless_requests_are_not_remembered(wrapped):
    middleware = wrapped[1]
    long_path = "/api/2.0/mlflow/runs/log-metric" + "/x" * fastapi_passthrough.CACHED_PATH_LENGTH
    size = middleware._decide.cache_info().currsize
    middleware.passes_through(scope("POST", long_path))
    assert middleware._decide.cache_info().currsize == size
    assert not middleware.passes_through({**scope("POST", "/"), "path": ""})  # MLflow's middleware decides
