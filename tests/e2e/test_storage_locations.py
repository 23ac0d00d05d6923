"""The classification of request fields that name a storage address (container/mlflow_gcp_server/storage_locations.py),
on the MLflow the image pins; no server needed."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from e2e_deployment import ENTRYPOINT

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ENTRYPOINT.parent))
sys.dont_write_bytecode = True

from mlflow_gcp_server import storage_locations as locations  # noqa: E402
from mlflow_gcp_server import trace_locations  # noqa: E402


def test_every_address_like_request_field_and_location_tag_of_mlflow_is_classified():
    summary = locations.check_classification()
    assert "5 checked locations" in summary and "3 tags" in summary
    found = locations.location_like_fields()
    for field in (("mlflow.CreateExperiment", "artifact_location"), ("mlflow.CreateModelVersion", "source"),
                  ("mlflow.Dataset", "source"), ("mlflow.TraceArchivalConfig", "location")):
        assert field in found
    assert locations.location_tags_of_mlflow() == locations.LOCATION_TAGS


def test_an_mlflow_upgrade_adding_an_unclassified_field_or_tag_fails_the_build(monkeypatch):
    sys.path.insert(0, str(ENTRYPOINT.parent))
    import check_mlflow_compat

    # The trace guard's part of the check patches MLflow's modules: run by the image's compat check only
    # (test_container.py), in a process of its own.
    monkeypatch.setattr(trace_locations, "check_trace_guard", lambda: "")
    without_source = {key: value for key, value in locations.FIELDS.items()
                      if key != ("mlflow.CreateModelVersion", "source")}
    with monkeypatch.context() as patch:
        patch.setattr(locations, "FIELDS", without_source)
        with pytest.raises(check_mlflow_compat.CompatibilityError, match=r"mlflow\.CreateModelVersion\.source"):
            check_mlflow_compat.check_storage_locations()
    with monkeypatch.context() as patch:
        patch.setattr(locations, "LOCATION_TAGS", locations.LOCATION_TAGS - {"mlflow.artifactLocation"})
        with pytest.raises(locations.ClassificationError, match=r"mlflow\.artifactLocation"):
            locations.check_classification()
    with monkeypatch.context() as patch:
        patch.setattr(locations, "CHECKS", {key: check for key, check in locations.CHECKS.items()
                                            if key != "mlflow.CreateExperiment"})
        with pytest.raises(locations.ClassificationError, match="does not check"):
            locations.check_classification()
    assert "checked locations" in check_mlflow_compat.check_storage_locations()


def test_only_create_and_update_requests_with_a_location_are_checked():
    routes = {(path, method): request.DESCRIPTOR.full_name for (path, method), request in
              locations.checked_routes().items()}
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        assert routes[(f"{prefix}/mlflow/experiments/create", "POST")] == "mlflow.CreateExperiment"
        assert routes[(f"{prefix}/mlflow/model-versions/create", "POST")] == "mlflow.CreateModelVersion"
        assert routes[(f"{prefix}/mlflow/traces/<request_id>/tags", "PATCH")] == "mlflow.SetTraceTag"
    assert routes[("/api/3.0/mlflow/traces", "POST")] == "mlflow.StartTraceV3"
    assert routes[("/api/3.0/mlflow/traces/<trace_id>/tags", "PATCH")] == "mlflow.SetTraceTagV3"
    assert not [path for path, _ in routes if "log-metric" in path or "log-batch" in path]
    assert all(method in ("POST", "PATCH", "PUT") for _, method in routes)


@pytest.mark.parametrize("value", [
    "gs://bucket/mlflow-artifacts/2", "s3://b/x", "file:///etc", "/etc/passwd", "relative/path", "", " runs:/a/b",
    "mlflow-artifacts:", "mlflow-artifacts:/", "mlflow-artifacts://host:9/1", "mlflow-artifacts:/1/../2",
    "mlflow-artifacts:/1/./x", "mlflow-artifacts:/1/%2e%2e/2", "mlflow-artifacts:/1?x=y", "mlflow-artifacts:/1#x",
    "mlflow-artifacts:/1\\..\\2", "https://host/api/2.0/mlflow-artifacts/artifacts/1", "runs://host/abc/model",
    "RUNS:", "dbfs:/x",
])
def test_addresses_the_server_never_chooses_are_refused(value):
    with pytest.raises(locations.Refused):
        locations.parse_address(value)


def test_the_servers_own_addresses_parse():
    assert locations.parse_address("mlflow-artifacts:/3/abc/artifacts/model") == locations.Address(
        "mlflow-artifacts", ("3", "abc", "artifacts", "model"))
    assert locations.parse_address("runs:/abc/model").parts == ("abc", "model")
    assert locations.parse_address("models:/m-123").scheme == "models"


class FakeCaller:
    """May edit experiment 1, read run r1, logged model m-1 and registered model 'mine'."""

    is_admin = False

    def may_update_experiment(self, experiment_id):
        return experiment_id == "1"

    def may_read_run(self, run_id):
        return run_id == "r1"

    def may_read_logged_model(self, model_id):
        return model_id == "m-1"

    def may_read_registered_model(self, name):
        return name == "mine"


@pytest.mark.parametrize("source, allowed", [
    ("runs:/r1/model", True), ("runs:/r2/model", False), ("models:/m-1", True), ("models:/m-2", False),
    ("models:/mine/1", True), ("models:/mine@champion", True), ("models:/theirs/1", False),
    ("mlflow-artifacts:/1/r1/artifacts/model", True), ("mlflow-artifacts:/2/r2/artifacts/model", False),
    ("gs://bucket/mlflow-artifacts", False),
])
def test_a_model_version_source_is_one_the_caller_may_use(source, allowed):
    message = SimpleNamespace(source=source)
    if allowed:
        locations.check_model_version(message, FakeCaller())
    else:
        with pytest.raises(locations.Refused, match="Allowed: "):
            locations.check_model_version(message, FakeCaller())


def test_experiments_take_no_location_and_trace_location_tags_are_the_servers():
    locations.check_experiment(SimpleNamespace(artifact_location=""), FakeCaller())
    with pytest.raises(locations.Refused, match="Leave it out"):
        locations.check_experiment(SimpleNamespace(artifact_location="mlflow-artifacts:/1"), FakeCaller())
    with pytest.raises(locations.Refused, match="set by the server only"):
        locations.check_trace_tag(SimpleNamespace(key="mlflow.artifactLocation"), FakeCaller())
    locations.check_trace_tag(SimpleNamespace(key="team"), FakeCaller())


def test_reading_a_trace_whose_location_tag_a_caller_chose_is_refused(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers
    from mlflow.tracing.utils import artifact_utils

    store = SimpleNamespace(get_experiment=lambda experiment_id: SimpleNamespace(
        artifact_location=f"mlflow-artifacts:/{experiment_id}"))
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda: store)
    reader = trace_locations.guarded(artifact_utils.get_artifact_uri_for_trace)

    def trace(location):
        return SimpleNamespace(trace_id="tr-1", experiment_id="5", tags={"mlflow.artifactLocation": location})

    assert reader(trace("mlflow-artifacts:/5/traces/tr-1/artifacts")) == "mlflow-artifacts:/5/traces/tr-1/artifacts"
    for foreign in ("mlflow-artifacts:/2/traces/tr-9/artifacts", "gs://bucket/mlflow-artifacts/2",
                    "mlflow-artifacts:/5/traces/tr-1/artifacts/../../../../2", "file:///etc"):
        with pytest.raises(MlflowException, match="not the one the server chose"):
            reader(trace(foreign))
