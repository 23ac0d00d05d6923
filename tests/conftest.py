from __future__ import annotations

import pytest

from tests.fake_gcp.server import PROJECT, FakeGoogle


@pytest.fixture(autouse=True)
def no_gcloud_project(monkeypatch, tmp_path_factory):
    """No test finds a project in this machine's gcloud configuration or its generic variables: a test that wants
    one writes it (tests/test_project.py)."""
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path_factory.getbasetemp() / "no-gcloud-config"))
    for name in ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_ACTIVE_CONFIG_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fresh_run_state():
    """The project and flags of a test's last command (what hints add to the commands they suggest) are not left
    for the next test of the worker: `eval_line()` once carried another test's --project in CI."""
    yield
    from mlflow_gcp.cli.project import forget

    forget()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fresh fake of the Google APIs, with the tool pointed at it."""
    google = FakeGoogle()
    url = google.start()
    monkeypatch.setenv("MLFLOW_GCP_API_ENDPOINT", url)
    monkeypatch.setenv("MLFLOW_GCP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("MLFLOW_GCP_POLL_MIN", "0.01")
    # Waits for Google to catch up (propagation, activation) last a tenth: a minute is 6 s. The fake's catching up
    # is counted (a few refused requests), so these bounds are only reached by a test that proves the give-up; at a
    # hundredth (1.8 s for a new service account) a loaded machine ran out of time between three requests.
    # A test that proves a bound is reached, or models Google's delay in seconds, sets its own scale (wait_scale).
    monkeypatch.setenv("MLFLOW_GCP_WAIT_SCALE", "0.1")
    monkeypatch.setenv("MLFLOW_GCP_PROJECT", PROJECT)
    monkeypatch.setenv("MLFLOW_GCP_REGION", "europe-west1")
    monkeypatch.chdir(tmp_path)
    yield google
    google.stop()


@pytest.fixture
def container_dir(monkeypatch):
    """The server's build context the image step hashes and uploads: the repository's `container/`."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "container"
    monkeypatch.setenv("MLFLOW_GCP_CONTAINER_DIR", str(path))
    return path


@pytest.fixture
def deployed(fake, container_dir):
    """The fake after a plain `up`, its log cleared. A test module with a `deployed` of its own uses that one."""
    from tests.helpers import up_and_clear_log

    return up_and_clear_log(fake)


@pytest.fixture
def short_waits(fake, monkeypatch):
    """Waits for Google to catch up last a hundredth (a minute is 0.6 s): for tests that wait a bound out to its end
    (Google never catches up) or set a fake delay in seconds against the bound. A slow machine only makes such a
    bound end later than Google's delay, never sooner."""
    monkeypatch.setenv("MLFLOW_GCP_WAIT_SCALE", "0.01")
    return fake


@pytest.fixture
def double(fake, tmp_path, monkeypatch):
    """A deployment `up` made in the fake, its service answering through the MLflow double (tests/server_double.py).
    A new login gets 5 s to work after a rollout instead of 120: a test that breaks the server is not kept waiting.
    A test module with a `double` of its own uses that one."""
    from tests.server_double import deploy

    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "5")
    server = deploy(fake, tmp_path, monkeypatch)
    yield server
    server.stop()
