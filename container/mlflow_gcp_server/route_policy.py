"""Which of MLflow's route families this deployment serves, and which it refuses to everyone.

MLflow ships features meant for a server on a laptop, used by the person sitting at it: an AI
assistant that trusts "local" callers, runs tools and installs files; jobs and LLM judges run on
the server; an AI gateway and webhooks that make the server call URLs a caller chose (on Cloud Run:
the metadata server, hence the service account's token). A shared server on the internet serves
none of them. Every route MLflow has must fall in a family below (the image build fails otherwise,
see check_mlflow_compat.py), and at run time a path in no ALLOW family is refused
(mlflow_gcp_server.app), so an MLflow upgrade cannot open a new family without someone classifying it.

Families are path prefixes matched on whole segments, after any `/api/X.Y` or `/ajax-api/X.Y`.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from enum import Enum

API = r"/(?:ajax-)?api/\d+\.\d+"


class Verdict(str, Enum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class RouteFamily:
    name: str
    verdict: Verdict
    prefixes: tuple[str, ...]  # regular expressions, each a path prefix ending at a segment boundary
    reason: str

    @property
    def pattern(self) -> str:
        return f"(?:{'|'.join(self.prefixes)})(?:/|$)"

    def matches(self, path: str) -> bool:
        return re.match(self.pattern, path) is not None


def _deny(name: str, prefixes: tuple[str, ...], reason: str) -> RouteFamily:
    return RouteFamily(name, Verdict.DENY, prefixes, reason)


def _allow(name: str, prefixes: tuple[str, ...], reason: str) -> RouteFamily:
    return RouteFamily(name, Verdict.ALLOW, prefixes, reason)


# First match wins: the denied families come first, so an ALLOW family cannot swallow them.
FAMILIES: tuple[RouteFamily, ...] = (
    _deny("assistant", (f"{API}/mlflow/assistant",),
          "the AI assistant grants loopback callers provider configuration with full access, runs tools "
          "such as Bash on the server and installs skills to a chosen path"),
    _deny("demo", (f"{API}/mlflow/demo",),
          "demo data generation holds the single worker for more than 20 s; demo deletion is its pair"),
    _deny("jobs", (f"{API}/jobs", f"{API}/mlflow/jobs"),
          "runs server-side functions as background jobs"),
    _deny("prompt-optimization", (f"{API}/mlflow/prompt-optimization",),
          "runs prompt optimization jobs that call LLM providers from the server"),
    _deny("judges", (f"{API}/mlflow/scorer/invoke", f"{API}/mlflow/genai/evaluate/invoke",
                     f"{API}/mlflow/issues/invoke", f"{API}/mlflow/scorers/online-configs?"),
          "runs LLM judges and scorers on the server, on demand or on a schedule"),
    _deny("gateway", ("/gateway", f"{API}/mlflow/gateway", f"{API}/mlflow/gateway-proxy"),
          "the AI gateway makes the server call provider URLs a caller configures and stores provider keys"),
    _deny("webhooks", (f"{API}/mlflow/webhooks",),
          "webhooks make the server send requests to a URL a caller chooses"),
    _allow("ui", ("/", "/static-files", "/build", "/favicon.ico", "/signup"),
           "the MLflow UI (a static single-page app; /signup is the admin's user form)"),
    _allow("mlflow-gcp", ("/mlflow-gcp/versions",),
           "this server's MLflow version and schema revisions, read by `mlflow-gcp status` (admins only)"),
    _allow("public", ("/health", "/version", f"{API}/mlflow/server-info"),
           "health check, version and server capabilities (no tenant data)"),
    _allow("tracking", (
        *(f"{API}/mlflow/{name}" for name in (
            "experiments", "runs", "metrics", "logged-models", "datasets", "traces", "unified-traces",
            "get-online-trace-details", "issues", "label-schemas", "review-queues", "scorers", "ui-telemetry")),
        "/graphql", "/v1/traces",
        # MLflow 3.17 declares this rule without the slash after the version (sic).
        r"/(?:ajax-)?api/\d+\.\d+mlflow/experiments/search-datasets",
    ), "experiments, runs, traces, evaluation data: stored, not executed"),
    _allow("registry", (f"{API}/mlflow/registered-models", f"{API}/mlflow/model-versions",
                        f"{API}/mlflow/mcp-servers"), "model and MCP server registry: stored, not executed"),
    _allow("artifacts", (f"{API}/mlflow-artifacts", f"{API}/mlflow/artifacts", f"{API}/mlflow/upload-artifact",
                         f"{API}/mlflow/get-trace-artifact", "/get-artifact", "/model-versions/get-artifact"),
           "artifacts in the bucket, through the server or signed URLs"),
    _allow("access-control", (f"{API}/mlflow/users", f"{API}/mlflow/roles", f"{API}/mlflow/workspaces"),
           "users, roles, permissions (admin-only writes)"),
)

_SLASHES = re.compile(r"/{2,}")
# Every request is classified: one expression, compiled once, with a group per family in FAMILIES' order. At a
# given start, alternatives are tried left to right, so the first family that matches wins, as in FAMILIES.
_FAMILY_PATTERN = re.compile("|".join(f"(?P<f{index}>{family.pattern})" for index, family in enumerate(FAMILIES)))


def normalized(path: str) -> str:
    return _SLASHES.sub("/", path) or "/"


def classify(path: str) -> RouteFamily | None:
    """The family of a request path or route rule; None for a path in no family."""
    found = _FAMILY_PATTERN.match(normalized(path))
    return FAMILIES[int(found.lastgroup[1:])] if found else None


def is_allowed(path: str) -> bool:
    family = classify(path)
    return family is not None and family.verdict is Verdict.ALLOW


@dataclass(frozen=True)
class Route:
    path: str  # the rule as declared: Flask `<name>` or FastAPI `{name}` placeholders
    methods: tuple[str, ...]
    source: str  # "flask" or "fastapi"
    module: str  # where its view function lives
    # (method, MLflow's permission decision) for routes of ALLOW families: mlflow_gcp_server.validator_coverage
    decisions: tuple[tuple[str, str], ...] = ()

    @property
    def family(self) -> RouteFamily | None:
        return classify(self.path)


def list_server_routes() -> list[Route]:
    """The server's routes, listed by a fresh Python process: MLflow reads its auth settings once, at
    import, so the app can be built only in a process that has not imported `mlflow.server.auth`."""
    import os
    import subprocess
    from pathlib import Path

    container_dir = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (container_dir, os.environ.get("PYTHONPATH")))),
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "mlflow_gcp_server.route_lister"], env=env, cwd=container_dir,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"cannot list the server's routes:\n{result.stderr[-3000:]}")
    return [Route(item["path"], tuple(item["methods"]), item["source"], item["module"],
                  tuple(map(tuple, item.get("decisions", ()))))
            for item in json.loads(result.stdout)]
