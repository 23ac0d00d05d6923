"""A rehearsal of the Cloud Run deployment on this machine: the container's entrypoint started with
the environment that `mlflow_gcp.service_spec` gives it, secrets resolved from test values."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from mlflow_gcp.config import SECRET_ENV, SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL, Settings
from mlflow_gcp.service_spec import (
    ServiceInputs,
    build_service,
    container_environment,
    render_env_file,
    server_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "container" / "entrypoint.py"
PROJECT = "mlflow-e2e-rehearsal"
SERVICE_URLS = ("https://mlflow-abc123xyz-ew.a.run.app", "https://mlflow-123456789012.europe-west1.run.app")


@dataclass(frozen=True)
class Secrets:
    mysql_password: str
    admin_user: str
    admin_password: str
    flask_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def rotated(self) -> Secrets:
        return replace(self, admin_password=new_password())

    def values(self) -> tuple[str, ...]:
        return (self.mysql_password, self.admin_password, self.flask_key)


def new_password() -> str:
    # Characters that need URL and ini escaping, as token_urlsafe never produces them.
    return secrets.token_urlsafe(18) + "%:/@#"


def rehearsal_settings() -> Settings:
    return Settings(project=PROJECT, bucket=f"{PROJECT}-artifacts")


def container_env(settings: Settings, secret_values: Secrets, db_port: int, service_urls=SERVICE_URLS,
                  db_ca_file: Path | None = None):
    ca = base64.b64encode(db_ca_file.read_bytes()).decode("ascii") if db_ca_file else ""
    env_file = server_settings(settings, "127.0.0.1", ca)
    env_file["DB_PORT"] = str(db_port)  # the test database listens on a free port, not 3306
    resolved = {
        SECRET_ENV: render_env_file(env_file),
        SECRET_MYSQL: f"root:{secret_values.mysql_password}",
        SECRET_MLFLOW: f"{secret_values.admin_user}:{secret_values.admin_password}",
        SECRET_FLASK_KEY: secret_values.flask_key,
    }
    service = build_service(
        settings,
        ServiceInputs(image="local", connector="projects/p/locations/r/connectors/c", service_urls=service_urls),
    )
    return container_environment(service, lambda secret, version: resolved[secret])


def google_endpoints(fake_google_url: str, work_dir: Path) -> dict[str, str]:
    """What the test adds to Cloud Run's environment: Google endpoints pointed at the local fakes."""
    host = fake_google_url.removeprefix("http://")
    gcloud_dir = work_dir / "gcloud-config"
    gcloud_dir.mkdir(exist_ok=True)
    return {
        "STORAGE_EMULATOR_HOST": fake_google_url,
        "GCE_METADATA_HOST": host,
        "GCE_METADATA_IP": host,
        "MLFLOW_GCP_API_ENDPOINT": fake_google_url,
        "CLOUDSDK_CONFIG": str(gcloud_dir),  # no gcloud credentials of this machine
        "HOME": str(work_dir),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


@dataclass
class ServerProcess:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.env["PORT"])

    def start(self, timeout: float = 240) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def process_ids(self) -> list[int]:
        """The entrypoint and its descendants (the uvicorn worker)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, pending = [], [self.process.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(children.get(pid, []))
        return found

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def own_databases(monkeypatch, user: str, name: str, auth_name: str) -> None:
    """`mlflow-gcp` (through the fake Google APIs) deploys a server that names this MySQL user and these databases:
    a test file's own, not the rehearsal's, as they share one MariaDB server."""
    monkeypatch.setenv("MLFLOW_GCP_DB_USER", user)
    monkeypatch.setenv("MLFLOW_GCP_DB_NAME", name)
    monkeypatch.setenv("MLFLOW_GCP_AUTH_DB_NAME", auth_name)
