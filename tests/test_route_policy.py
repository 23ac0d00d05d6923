"""The route policy's classification, compiled once for every request (container/mlflow_gcp_server/route_policy.py),
decides as its families read in order: the first family with a matching prefix. The whole route list of MLflow is
checked by tests/e2e/test_container.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from mlflow_gcp_server.route_policy import API, FAMILIES, classify, is_allowed, normalized


def first_family(path: str):
    path = normalized(path)
    return next((family for family in FAMILIES if any(re.match(f"{prefix}(?:/|$)", path)
                                                      for prefix in family.prefixes)), None)


PATHS = [
    "/", "//", "/health", "/healthz", "/version", "/static-files/js/main.js", "/signup", "/favicon.ico",
    "/api/2.0/mlflow/runs/log-metric", "/ajax-api/2.0/mlflow/runs/log-batch", "/api/3.0/mlflow/traces/x",
    "/api/2.0/mlflow/assistant/chat", "/api/2.0/mlflow/assistantx", "/ajax-api/3.0/mlflow/scorers/online-config",
    "/ajax-api/3.0/mlflow/scorers/online-configs", "/ajax-api/3.0/mlflow/scorers/list", "/gateway/x",
    "/api/2.0/mlflow/gateway-proxy", "/api/2.0/mlflow/webhooks", "/api/2.0/mlflow/jobs/x", "/api/2.0/jobs",
    "/api/2.0mlflow/experiments/search-datasets", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt",
    "/get-artifact", "/model-versions/get-artifact", "/api//2.0//mlflow/assistant", "/api/2.0/mlflow/users/create",
    "/graphql", "/v1/traces", "/v1/tracesx", "/api/2.0/mlflow/demo/generate", "/unknown", "/api/2.0/mlflow/unknown",
    *(concrete + tail for family in FAMILIES for prefix in family.prefixes for tail in ("", "/x", "x")
      for concrete in dict.fromkeys((prefix.replace(API, "/api/2.0"), prefix.replace(API, "/ajax-api/3.0")))
      if "\\" not in concrete),
]


@pytest.mark.parametrize("path", PATHS)
def test_the_compiled_classification_is_the_first_matching_family(path):
    assert classify(path) is first_family(path)


def test_verdicts():
    assert is_allowed("/api/2.0/mlflow/runs/log-metric")
    assert not is_allowed("//api/2.0/mlflow/assistant/chat")
    assert classify("/nowhere") is None
