"""End-to-end: the container's server behind a Cloud Run-like front, used with the real mlflow client."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from conftest import Rehearsal
from mlflow_gcp.service_spec import CLIENT_SETTINGS

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
CLOUD_RUN_MAX_REQUEST_BYTES = 32 * MiB
# The client settings `mlflow-gcp credentials` prints (README section "Large artifacts").
LARGE_ARTIFACT_CLIENT_ENV = CLIENT_SETTINGS

# The client example at the end of the seed README, verbatim but for the three placeholders.
SEED_README_EXAMPLE = textwrap.dedent('''
    import mlflow
    import os

    os.environ["MLFLOW_TRACKING_USERNAME"] = "<my_username>"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "<my_password>"

    mlflow.set_tracking_uri("<my_server_url>")

    if not mlflow.get_experiment_by_name("test_experiment"):
        mlflow.create_experiment(name="test_experiment")
    experiment = mlflow.get_experiment_by_name("test_experiment")

    with mlflow.start_run(experiment_id=experiment.experiment_id):
        mlflow.log_param("param1", 23)
        mlflow.log_param("param2", "smth")
        mlflow.log_metric("accuracy", 0.95)
''')


class AddN(mlflow.pyfunc.PythonModel):
    def __init__(self, n):
        self.n = n

    def predict(self, context, model_input, params=None):
        return model_input.apply(lambda column: column + self.n)


def api(rehearsal: Rehearsal, path: str, auth=None, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, f"{rehearsal.tracking_uri}{path}", auth=auth, timeout=30, **kwargs)


def run_seed_example(rehearsal: Rehearsal, client_env: dict[str, str]) -> None:
    code = (SEED_README_EXAMPLE.replace("<my_username>", rehearsal.secrets.admin_user)
            .replace("<my_password>", rehearsal.secrets.admin_password)
            .replace("<my_server_url>", rehearsal.tracking_uri))
    # The credentials are in the script, as in the README; the child reads it from stdin, not argv.
    env = {key: value for key, value in client_env.items() if not key.startswith("MLFLOW_TRACKING_")}
    result = subprocess.run([sys.executable, "-"], input=code, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_login_is_required(rehearsal: Rehearsal):
    assert api(rehearsal, "/health").status_code == 200
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert api(rehearsal, search).status_code == 401
    assert api(rehearsal, search, auth=(rehearsal.secrets.admin_user, "wrong-password-123")).status_code == 401
    assert api(rehearsal, search, auth=(rehearsal.secrets.admin_user, rehearsal.secrets.admin_password)).ok


def test_foreign_host_is_refused(rehearsal: Rehearsal):
    """MLflow's host-header protection is on, for the service's own URLs only."""
    response = requests.get(
        f"http://127.0.0.1:{rehearsal.server.port}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Host": "evil.example.com"}, auth=(rehearsal.secrets.admin_user, rehearsal.secrets.admin_password),
        timeout=30,
    )
    assert response.status_code == 403
    # Cloud Run's startup probe reaches /health with the container's address as Host.
    probe = requests.get(f"http://127.0.0.1:{rehearsal.server.port}/health", headers={"Host": "169.254.8.1:8080"},
                         timeout=30)
    assert probe.status_code == 200


def test_seed_readme_example(rehearsal: Rehearsal, client_env):
    run_seed_example(rehearsal, client_env)
    run_seed_example(rehearsal, client_env)  # the second time the experiment already exists

    experiment = mlflow.get_experiment_by_name("test_experiment")
    runs = MlflowClient().search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert runs[0].data.params == {"param1": "23", "param2": "smth"}
    assert runs[0].data.metrics == {"accuracy": 0.95}


def test_artifact_model_and_registry(rehearsal: Rehearsal, client_env, tmp_path: Path):
    import pandas as pd

    mlflow.set_experiment("test_experiment")
    with mlflow.start_run() as run:
        mlflow.log_text("hello from the e2e test", "notes/hello.txt")
        model_info = mlflow.pyfunc.log_model(name="model", python_model=AddN(5), pip_requirements=["pandas"])

    experiment_id = run.info.experiment_id
    blob = f"mlflow-artifacts/{experiment_id}/{run.info.run_id}/artifacts/notes/hello.txt"
    assert rehearsal.google.object_bytes(blob) == b"hello from the e2e test"
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="notes/hello.txt",
                                                     dst_path=str(tmp_path))
    assert Path(downloaded).read_text() == "hello from the e2e test"

    model = mlflow.pyfunc.load_model(model_info.model_uri)
    prediction = model.predict(pd.DataFrame({"x": [1, 2]}))
    assert list(prediction["x"]) == [6, 7]

    version = mlflow.register_model(model_info.model_uri, "e2e-add-n")
    assert version.version == "1"
    registered = mlflow.pyfunc.load_model("models:/e2e-add-n/1")
    assert list(registered.predict(pd.DataFrame({"x": [0]}))["x"]) == [5]


def test_non_admin_cannot_create_users(rehearsal: Rehearsal, client_env):
    AuthServiceClient(rehearsal.tracking_uri).create_user("alice", "alice-password-123456")
    response = api(rehearsal, "/api/2.0/mlflow/users/create", auth=("alice", "alice-password-123456"),
                   method="POST", json={"username": "mallory", "password": "mallory-password-123456"})
    assert response.status_code == 403
    assert api(rehearsal, "/api/2.0/mlflow/experiments/search?max_results=1",
               auth=("alice", "alice-password-123456")).ok


def test_large_artifact_round_trip_under_cloud_run_limits(rehearsal: Rehearsal, client_env, tmp_path, monkeypatch):
    for name, value in LARGE_ARTIFACT_CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(100 * MiB))
    rehearsal.front.stats.reset()

    mlflow.set_experiment("test_experiment")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(large), "data")
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="data/large.bin", dst_path=str(tmp_path / "download")
    )

    assert hashlib.sha256(Path(downloaded).read_bytes()).digest() == hashlib.sha256(large.read_bytes()).digest()
    stats, google = rehearsal.front.stats, rehearsal.google.state
    assert stats.refused == 0
    assert stats.max_request_body < CLOUD_RUN_MAX_REQUEST_BYTES
    assert stats.max_response_body < CLOUD_RUN_MAX_REQUEST_BYTES
    assert len(google.part_uploads) >= 10 and max(google.part_uploads) < CLOUD_RUN_MAX_REQUEST_BYTES
    assert google.sign_blob_calls > 0 and google.rejected_signed_requests == 0
    blob = f"mlflow-artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts/data/large.bin"
    assert blob in google.completed_multipart_uploads


def test_front_refuses_bodies_over_32_mib(rehearsal: Rehearsal):
    """The rehearsal's front enforces Cloud Run's limit, so the test above proves something."""
    response = api(rehearsal, "/api/2.0/mlflow-artifacts/artifacts/too-big.bin", method="PUT",
                   auth=(rehearsal.secrets.admin_user, rehearsal.secrets.admin_password),
                   data=b"0" * (CLOUD_RUN_MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413


def test_no_secret_in_argv_or_logs(rehearsal: Rehearsal):
    secret_values = rehearsal.secrets.values()
    for pid in rehearsal.server.process_ids():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert not any(value in cmdline for value in secret_values), f"secret in argv of {pid}"
    log = rehearsal.server.log_path.read_text(errors="replace")
    assert not any(value in log for value in secret_values)


def test_new_instance_keeps_users_and_applies_rotated_admin_secret(rehearsal: Rehearsal, client_env):
    old = rehearsal.secrets
    rehearsal.start_server(old.rotated())
    new = rehearsal.secrets
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert api(rehearsal, search, auth=(new.admin_user, new.admin_password)).ok
    assert api(rehearsal, search, auth=(old.admin_user, old.admin_password)).status_code == 401
    assert api(rehearsal, search, auth=("alice", "alice-password-123456")).ok
    os.environ["MLFLOW_TRACKING_PASSWORD"] = new.admin_password  # restored by client_env at the end
    assert mlflow.get_experiment_by_name("test_experiment") is not None
    log = rehearsal.server.log_path.read_text(errors="replace")
    assert "password rotated" in log
    assert not any(value in log for value in (*old.values(), *new.values()))
