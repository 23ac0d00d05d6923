"""The image build refuses an ALLOWed route without a permission decision in MLflow's auth
(container/mlflow_gcp_server/validator_coverage.py, run by container/check_mlflow_compat.py). The check against the
pinned MLflow itself runs in tests/e2e/test_container.py::test_compat_check_passes_for_the_pinned_mlflow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

import check_mlflow_compat
from mlflow_gcp_server import route_policy
from mlflow_gcp_server.validator_coverage import DECLARED_ADMIN_ONLY, sample_path, undecided


def route(path: str, *decisions: tuple[str, str]) -> route_policy.Route:
    return route_policy.Route(path, tuple(method for method, _ in decisions), "flask", "mlflow.server.handlers",
                              decisions)


VALIDATED = route("/api/2.0/mlflow/runs/log-metric", ("POST", "validator"))
UNDECIDED = route("/api/2.0/mlflow/runs/new-thing", ("GET", "validator"), ("POST", ""))


def test_an_allowed_route_without_a_decision_is_reported_with_its_method():
    assert undecided([VALIDATED, UNDECIDED]) == ["POST /api/2.0/mlflow/runs/new-thing"]


def test_declared_admin_only_and_refused_routes_are_not_reported():
    (method, path), _ = next(iter(DECLARED_ADMIN_ONLY.items()))
    refused = route("/ajax-api/3.0/mlflow/assistant/config", ("GET", ""))
    assert undecided([route(path, (method, "")), refused]) == []


def test_every_declared_route_has_a_reason():
    assert all(reason.strip() for reason in DECLARED_ADMIN_ONLY.values())


def test_the_image_build_fails_on_an_undecided_route(monkeypatch):
    # The check reads MLflow's own route table: the server image's pins (container/requirements.txt), which the
    # README's test command installs and CI's lowest-versions run of the tool's floors does not.
    pytest.importorskip("mlflow")
    monkeypatch.setattr(route_policy, "list_server_routes", lambda: [VALIDATED])
    assert "every served one with a permission decision" in check_mlflow_compat.check_route_policy()
    monkeypatch.setattr(route_policy, "list_server_routes", lambda: [VALIDATED, UNDECIDED])
    with pytest.raises(check_mlflow_compat.CompatibilityError, match=r"POST /api/2\.0/mlflow/runs/new-thing"):
        check_mlflow_compat.check_route_policy()


def test_sample_paths_fill_flask_and_fastapi_placeholders():
    assert sample_path("/api/3.0/mlflow/workspaces/<workspace_name>") == "/api/3.0/mlflow/workspaces/1"
    assert sample_path("/get-artifact/<path:p>/{trace_id}") == "/get-artifact/1/1"
