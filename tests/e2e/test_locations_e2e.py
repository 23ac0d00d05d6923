"""End-to-end: a caller names no storage address but those the server would have chosen (issue 19).

A non-admin (eve) is denied one experiment of the admin's, which holds a secret artifact. Every request field
through which a caller names where the server reads or writes (container/mlflow_gcp_server/storage_locations.py)
is tried with foreign addresses; the client flows a team uses keep working with the real mlflow client.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from conftest import Rehearsal

pytestmark = pytest.mark.e2e

EVE = ("eve", "eve-password-1234567890")
SECRET = b"the denied experiment's secret"


class AddOne(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input + 1


def api(rehearsal: Rehearsal, path: str, auth, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=60, **kwargs)


def admin(rehearsal: Rehearsal) -> tuple[str, str]:
    return rehearsal.secrets.admin_user, rehearsal.secrets.admin_password


def as_user(monkeypatch, user: tuple[str, str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


class Denied:
    def __init__(self, experiment_id: str, run_id: str, bucket: str):
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.bucket = bucket

    @property
    def secret_path(self) -> str:
        return f"{self.experiment_id}/{self.run_id}/artifacts/secret.txt"

    def foreign_addresses(self) -> list[str]:
        """Addresses eve may not name: the denied experiment's folder in every spelling, other storage."""
        folder = f"gs://{self.bucket}/mlflow-artifacts/{self.experiment_id}"
        return [folder, f"gs://{self.bucket}/mlflow-artifacts", f"gs://{self.bucket}/elsewhere",
                "gs://another-teams-bucket/x", "s3://some-bucket/x", "file:///tmp/eve-planted", "/tmp/eve-planted",
                "eve-relative", f"mlflow-artifacts:/{self.experiment_id}",
                f"mlflow-artifacts:/{self.experiment_id}/{self.run_id}/artifacts",
                f"mlflow-artifacts:/0/../{self.experiment_id}", f"mlflow-artifacts:/0/%2e%2e/{self.experiment_id}",
                f"mlflow-artifacts://127.0.0.1:9/{self.experiment_id}",
                f"https://example.com/api/2.0/mlflow-artifacts/artifacts/{self.experiment_id}"]


@pytest.fixture(scope="module")
def eve(rehearsal: Rehearsal) -> tuple[str, str]:
    created = api(rehearsal, "/api/2.0/mlflow/users/create", admin(rehearsal), "POST",
                  json={"username": EVE[0], "password": EVE[1]})
    assert created.ok or "already exists" in created.text, created.text
    return EVE


@pytest.fixture(scope="module")
def denied(rehearsal: Rehearsal, client_env, eve) -> Denied:
    """The admin's experiment with a secret artifact and a registered model from it, both denied to eve."""
    client = MlflowClient()
    experiment_id = client.create_experiment("loc-denied")
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, SECRET.decode(), "secret.txt")
    AuthServiceClient(rehearsal.tracking_uri).grant_user_permission(eve[0], "experiment", experiment_id,
                                                                    "DENY")
    assert api(rehearsal, f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", eve).status_code == 403
    return Denied(experiment_id, run.info.run_id, rehearsal.settings.bucket_name)


@pytest.fixture(scope="module")
def own_experiment(rehearsal: Rehearsal, eve) -> str:
    created = api(rehearsal, "/api/2.0/mlflow/experiments/create", eve, "POST", json={"name": "loc-eve"})
    assert created.ok, created.text
    return created.json()["experiment_id"]


def refused(response: requests.Response) -> bool:
    return response.status_code in (400, 403) and ("mlflow-gcp" in response.text or response.status_code == 403)


def test_experiment_artifact_location_is_refused_for_foreign_addresses(rehearsal: Rehearsal, eve, denied,
                                                                      own_experiment):
    wrong = []
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        for number, location in enumerate(denied.foreign_addresses()):
            for user in (eve, admin(rehearsal)):
                response = api(rehearsal, f"{prefix}/mlflow/experiments/create", user, "POST",
                               json={"name": f"loc-{user[0]}-{prefix[1:4]}-{number}", "artifact_location": location})
                if not refused(response):
                    wrong.append(f"{user[0]} {prefix} {location}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    own = api(rehearsal, "/api/2.0/mlflow/experiments/create", eve, "POST",
              json={"name": "loc-own-folder", "artifact_location": f"mlflow-artifacts:/{own_experiment}"})
    assert own.status_code == 400, own.text  # no two experiments share a folder
    message = api(rehearsal, "/api/2.0/mlflow/experiments/create", eve, "POST",
                  json={"name": "loc-message", "artifact_location": "gs://x/y"}).json()["message"]
    assert "Leave it out" in message and "mlflow-artifacts:/<experiment id>" in message


def test_model_version_source_is_refused_for_foreign_addresses(rehearsal: Rehearsal, eve, denied, own_experiment):
    assert api(rehearsal, "/api/2.0/mlflow/registered-models/create", eve, "POST", json={"name": "loc-eve-model"}).ok
    sources = [*denied.foreign_addresses(), f"runs:/{denied.run_id}/artifacts", f"runs://x/{denied.run_id}/a",
               "models:/m-0000000000000000000000000000000/x", "runs:/no-such-run/model"]
    wrong = []
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        for source in sources:
            response = api(rehearsal, f"{prefix}/mlflow/model-versions/create", eve, "POST",
                           json={"name": "loc-eve-model", "source": source})
            if not refused(response):
                wrong.append(f"{prefix} {source}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_the_reviews_read_attack_is_refused(rehearsal: Rehearsal, eve, denied):
    """Issue 19, item 1: a model version whose source is the bucket's root, then get-artifact of a denied file."""
    assert api(rehearsal, "/api/2.0/mlflow/registered-models/create", eve, "POST", json={"name": "m-model"}).ok
    created = api(rehearsal, "/api/2.0/mlflow/model-versions/create", eve, "POST",
                  json={"name": "m-model", "source": f"gs://{denied.bucket}/mlflow-artifacts"})
    assert created.status_code == 400, created.text
    read = api(rehearsal, f"/model-versions/get-artifact?name=m-model&version=1&path={denied.secret_path}", eve)
    assert read.status_code != 200 and SECRET not in read.content


def test_admins_are_held_to_the_same_addresses(rehearsal: Rehearsal, denied):
    as_admin = admin(rehearsal)
    assert api(rehearsal, "/api/2.0/mlflow/registered-models/create", as_admin, "POST",
               json={"name": "loc-admin-model"}).ok
    for source in (f"gs://{denied.bucket}/mlflow-artifacts", "file:///etc", "/etc"):
        response = api(rehearsal, "/api/2.0/mlflow/model-versions/create", as_admin, "POST",
                       json={"name": "loc-admin-model", "source": source})
        assert response.status_code == 400 and "mlflow-gcp" in response.text, (source, response.text)
    # The admin's own addresses: the denied run is theirs.
    response = api(rehearsal, "/api/2.0/mlflow/model-versions/create", as_admin, "POST",
                   json={"name": "loc-admin-model", "source": f"runs:/{denied.run_id}/artifacts",
                         "run_id": denied.run_id})
    assert response.ok, response.text


def test_location_tags_of_traces_are_the_servers(rehearsal: Rehearsal, eve, own_experiment, denied):
    folder = f"mlflow-artifacts:/{denied.experiment_id}/traces"
    started = api(rehearsal, "/api/3.0/mlflow/traces", eve, "POST", json={"trace": {"trace_info": {
        "trace_id": "tr-loc-eve-1", "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                       "mlflow_experiment": {"experiment_id": own_experiment}},
        "request_time": "2026-01-01T00:00:00Z", "state": "OK", "tags": {"mlflow.artifactLocation": folder}}}})
    assert started.status_code == 400 and "set by the server only" in started.text, started.text
    legacy = api(rehearsal, "/api/2.0/mlflow/traces", eve, "POST",
                 json={"experiment_id": own_experiment, "timestamp_ms": 1,
                       "tags": [{"key": "mlflow.trace.archiveLocation", "value": folder}]})
    assert legacy.status_code == 400, legacy.text

    trace_id = mlflow_trace_as(rehearsal, eve, own_experiment)
    for key in ("mlflow.artifactLocation", "mlflow.trace.spansLocation", "mlflow.trace.archiveLocation"):
        for path in (f"/api/3.0/mlflow/traces/{trace_id}/tags", f"/ajax-api/2.0/mlflow/traces/{trace_id}/tags"):
            response = api(rehearsal, path, eve, "PATCH", json={"key": key, "value": folder})
            assert response.status_code == 400, (path, key, response.text)


def mlflow_trace_as(rehearsal: Rehearsal, user, experiment_id: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        as_user(patch, user)

        @mlflow.trace
        def add(a, b):
            return a + b

        mlflow.set_experiment(experiment_id=experiment_id)
        assert add(1, 2) == 3
        trace_id = mlflow.get_last_active_trace_id()
        mlflow.flush_trace_async_logging()
        trace = MlflowClient().get_trace(trace_id)
    assert trace.data.spans[0].name == "add"
    return trace_id


def test_a_non_admins_client_flows_keep_working(rehearsal: Rehearsal, client_env, eve, own_experiment, denied,
                                                tmp_path: Path, monkeypatch):
    import pandas as pd

    as_user(monkeypatch, eve)
    client = MlflowClient()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("a")
    (tmp_path / "one.txt").write_text("one")
    mlflow.set_experiment(experiment_id=own_experiment)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "one.txt"))
        mlflow.log_artifacts(str(tmp_path / "dir"), "dir")
        mlflow.log_metric("m", 1.0)
        mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame({"x": [1]}), source="gs://teams-data/x.csv"),
                         context="training")
        model = mlflow.pyfunc.log_model(name="model", python_model=AddOne(), pip_requirements=["pandas"])
    assert sorted(item.path for item in client.list_artifacts(run.info.run_id)) == ["dir", "one.txt"]
    assert client.get_run(run.info.run_id).inputs.dataset_inputs[0].dataset.source

    from_run = mlflow.register_model(f"runs:/{run.info.run_id}/model", "loc-eve-registered")
    from_model = mlflow.register_model(model.model_uri, "loc-eve-registered")
    from_version = client.create_model_version("loc-eve-registered", "models:/loc-eve-registered/1")
    assert (from_run.version, from_model.version, from_version.version) == ("1", "2", "3")
    loaded = mlflow.pyfunc.load_model("models:/loc-eve-registered/3")
    assert list(loaded.predict(pd.DataFrame({"x": [1]}))["x"]) == [2]

    created = client.create_experiment("loc-eve-created")
    assert client.get_experiment(created).artifact_location == f"mlflow-artifacts:/{created}"

    # The UI's artifact browser, and the model version's files.
    listing = api(rehearsal, f"/ajax-api/2.0/mlflow/artifacts/list?run_uuid={run.info.run_id}&path=dir", eve)
    assert listing.ok and listing.json()["files"][0]["path"] == "dir/a.txt", listing.text
    file = api(rehearsal, f"/get-artifact?path=one.txt&run_uuid={run.info.run_id}", eve)
    assert file.ok and file.text == "one"
    version_file = api(rehearsal, "/model-versions/get-artifact?name=loc-eve-registered&version=1&path=MLmodel", eve)
    assert version_file.ok and b"python_function" in version_file.content

    trace_id = mlflow_trace_as(rehearsal, eve, own_experiment)
    assert api(rehearsal, f"/ajax-api/3.0/mlflow/get-trace-artifact?request_id={trace_id}", eve).ok


def test_the_denied_experiments_artifacts_stay_unreadable_by_every_route(rehearsal: Rehearsal, eve, denied):
    run, experiment = denied.run_id, denied.experiment_id
    routes = [
        f"/get-artifact?path=secret.txt&run_uuid={run}",
        f"/get-artifact?path=secret.txt&run_id={run}",
        f"/ajax-api/2.0/mlflow/artifacts/list?run_uuid={run}",
        f"/api/2.0/mlflow/artifacts/list?run_id={run}",
        f"/api/2.0/mlflow-artifacts/artifacts/{denied.secret_path}",
        f"/ajax-api/2.0/mlflow-artifacts/artifacts/{denied.secret_path}",
        f"/api/2.0/mlflow-artifacts/artifacts?path={experiment}/{run}/artifacts",
        f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/../{denied.secret_path}",
        f"/api/2.0/mlflow-artifacts/presigned/{denied.secret_path}",
        "/model-versions/get-artifact?name=m-model&version=1&path=" + denied.secret_path,
    ]
    wrong = []
    for path in routes:
        response = api(rehearsal, path, eve)
        if response.ok or SECRET in response.content:
            wrong.append(f"{path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert os.environ.get("MLFLOW_TRACKING_USERNAME") != EVE[0]


def test_a_trace_location_forged_through_otlp_is_not_read(rehearsal: Rehearsal, client_env, eve, own_experiment,
                                                          denied):
    """OTLP exports set trace tags from `mlflow.traceTag.*` span attributes, in bodies the request check does not
    parse: the server refuses to read a trace's data from a location it did not choose."""
    import json
    import secrets

    # A trace data file in the denied run's folder, as the server would read it.
    planted = {"spans": [{"name": SECRET.decode(), "trace_id": "AAAAAAAAAAAAAAAAAAAAAA==", "span_id": "AAAAAAAAAAA=",
                          "start_time_unix_nano": 1, "end_time_unix_nano": 2, "attributes": {},
                          "status": {"code": "STATUS_CODE_OK"}, "events": []}]}
    MlflowClient().log_text(denied.run_id, json.dumps(planted), "traces.json")
    trace_hex = secrets.token_hex(16)
    forged = f"mlflow-artifacts:/{denied.experiment_id}/{denied.run_id}/artifacts"
    attributes = [{"key": f"mlflow.traceTag.{key}", "value": {"stringValue": value}} for key, value in (
        ("mlflow.artifactLocation", forged), ("mlflow.trace.spansLocation", "ARTIFACT_REPO"))]
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": trace_hex, "spanId": secrets.token_hex(8), "name": "root", "kind": 1,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "attributes": attributes, "status": {"code": 1}}]}]}]}
    exported = api(rehearsal, "/v1/traces", eve, "POST", data=json.dumps(body),
                   headers={"Content-Type": "application/json", "x-mlflow-experiment-id": own_experiment})
    assert exported.ok, exported.text
    trace_id = f"tr-{trace_hex}"
    for path in (f"/ajax-api/3.0/mlflow/get-trace-artifact?request_id={trace_id}",
                 f"/api/3.0/mlflow/traces/{trace_id}", f"/ajax-api/3.0/mlflow/traces/get?trace_id={trace_id}",
                 f"/api/3.0/mlflow/traces/batchGet?trace_ids={trace_id}"):
        response = api(rehearsal, path, eve)
        assert SECRET not in response.content, (path, response.status_code)
