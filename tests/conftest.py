from __future__ import annotations

import pytest

from tests.fake_gcp.server import PROJECT, FakeGoogle


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fresh fake of the Google APIs, with the tool pointed at it."""
    google = FakeGoogle()
    url = google.start()
    monkeypatch.setenv("MLFLOW_GCP_API_ENDPOINT", url)
    monkeypatch.setenv("MLFLOW_GCP_RETRY_DELAY", "0.01")
    monkeypatch.setenv("MLFLOW_GCP_POLL_MIN", "0.01")
    # Waits for Google to catch up (propagation, activation) last a hundredth: a minute is 0.6 s.
    monkeypatch.setenv("MLFLOW_GCP_WAIT_SCALE", "0.01")
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
