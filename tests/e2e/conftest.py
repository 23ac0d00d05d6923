"""Fixtures of the end-to-end rehearsal: MariaDB, fake Google endpoints, the server, the front."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_deployment import (
    SERVICE_URLS,
    Secrets,
    ServerProcess,
    container_env,
    google_endpoints,
    new_password,
    rehearsal_settings,
)
from e2e_fake_google import FakeGoogle
from e2e_front import CloudRunFront
from e2e_mariadb import MariaDB, free_port, missing_binaries, running_mariadb

from mlflow_gcp.config import Settings

# The tests import container/ modules: keep __pycache__ out of the image's build context.
sys.dont_write_bytecode = True

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"
# The client side: no telemetry, no proxy between the tests and 127.0.0.1.
CLIENT_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1,localhost",
              "no_proxy": "127.0.0.1,localhost"}


def server_log_path() -> Path:
    # One file per test session: several sessions may run in the same tree at once.
    return ARTIFACTS_DIR / f"server-{os.getpid()}.log"


@dataclass
class Rehearsal:
    work_dir: Path
    settings: Settings
    mariadb: MariaDB
    google: FakeGoogle
    front: CloudRunFront
    secrets: Secrets
    server: ServerProcess | None = None

    @property
    def tracking_uri(self) -> str:
        return self.front.url

    def server_env(self, secret_values: Secrets) -> dict[str, str]:
        ca = self.mariadb.ca_file if self.mariadb.tls else None
        env = container_env(self.settings, secret_values, self.mariadb.port, SERVICE_URLS, db_ca_file=ca)
        env.update(google_endpoints(self.google.url, self.work_dir))
        env["PORT"] = str(free_port())  # Cloud Run's 8080 may be taken on a CI machine
        return env

    def start_server(self, secret_values: Secrets) -> ServerProcess:
        """A new instance (a new Cloud Run revision) on the same database and bucket."""
        if self.server:
            self.server.stop()
        self.secrets = secret_values
        self.server = ServerProcess(self.server_env(secret_values), server_log_path()).start()
        self.front.backend_port = self.server.port
        return self.server


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    if missing := missing_binaries():
        pytest.skip(f"MariaDB binaries not installed ({', '.join(missing)}): apt-get install mariadb-server")
    with running_mariadb("mlflow-e2e-mariadb-", new_password()) as server:
        yield server


@pytest.fixture(scope="session")
def rehearsal(artifacts_dir: Path, mariadb: MariaDB) -> Iterator[Rehearsal]:
    server_log_path().unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlflow-e2e-") as tmp:
        work_dir = Path(tmp)
        settings = rehearsal_settings()
        secret_values = Secrets(mysql_password=mariadb.root_password, admin_user="admin",
                                admin_password=new_password())
        google = FakeGoogle(work_dir / "gcs", settings.bucket_name, settings.service_account_email,
                            settings.project).start()
        front = CloudRunFront(SERVICE_URLS[0], backend_port=0).start()
        state = Rehearsal(work_dir, settings, mariadb, google, front, secret_values)
        try:
            state.start_server(secret_values)
            yield state
        finally:
            if state.server:
                state.server.stop()
            front.stop()
            google.stop()


@pytest.fixture(scope="session")
def client_env(rehearsal: Rehearsal) -> Iterator[dict[str, str]]:
    """The seed README's client setup: credentials in MLFLOW_TRACKING_USERNAME/PASSWORD."""
    saved = dict(os.environ)
    os.environ.update(CLIENT_ENV)
    os.environ["MLFLOW_TRACKING_USERNAME"] = rehearsal.secrets.admin_user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = rehearsal.secrets.admin_password
    os.environ["MLFLOW_TRACKING_URI"] = rehearsal.tracking_uri
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


# The end-to-end tests that need a MariaDB and a server form two rehearsals, each in a pytest-xdist group of its own:
# under `--dist loadgroup` a group runs on one worker, in order, with that worker's own MariaDB, fake Google, front
# and server (the session fixtures above, temporary directories and free ports of their own), so the two run side by
# side while the rest of the suite spreads over the workers. Balanced by measured time (a serial run of tests/e2e on
# 2026-12-08, load 6-8: about 235 s each, with the ~12 s each group takes to start MariaDB and the server; side by
# side under `-n 3`, 350 s and 340 s at load 8-11, 465 s and 440 s at load 8-15). No file may use what a file of the
# other group made; a new file goes to the first group unless listed here.
SECOND_REHEARSAL = frozenset({
    "test_upgrade_e2e.py",  # ~118 s
    "test_ui_nonadmin_e2e.py",  # ~66 s
    "test_server_e2e.py",  # ~22 s
    "test_credentials_e2e.py",  # ~21 s
})
# The session fixtures that make a rehearsal: a test needing none of them (the image's definition, the entrypoint's
# fail-fast checks, the metadata server) is in no group and runs on any worker.
REHEARSAL_FIXTURES = frozenset({"mariadb", "rehearsal", "client_env"})


def rehearsal_group(item: pytest.Item) -> str | None:
    e2e_dir = Path(__file__).resolve().parent
    path = Path(str(item.fspath)).resolve()
    if e2e_dir not in path.parents or not REHEARSAL_FIXTURES & set(getattr(item, "fixturenames", ())):
        return None
    return "e2e-2" if path.name in SECOND_REHEARSAL else "e2e-1"


# First: pytest-xdist reads the groups in its own hook of the same name, which runs before this one when this file is
# loaded at start-up (`pytest tests/e2e ...` names this directory), and the tests would then go out as singles.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if group := rehearsal_group(item):
            item.add_marker(pytest.mark.xdist_group(group))
