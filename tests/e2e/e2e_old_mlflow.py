"""An older MLflow in a virtualenv of its own, made once and kept in a cache directory, and its server.

The older release is several schema revisions behind the image's MLflow (3.1.4: 36 tracking revisions and the
user store before its alembic version table, which MLflow 3.6 added). Its server runs as MLflow's plain basic-auth
app on the test's MariaDB, as a team's older server did; the user store is created first with the image's MySQL
foreign-key fix (mlflow_gcp_server.database: MLflow's auth migrations name two foreign keys `fk_user_id`, which
MySQL refuses), as the image that served that MLflow did.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

OLD_MLFLOW = "3.1.4"
# The image's pins of the driver, so both sides connect to MariaDB alike; MLflow 3.1 imports
# sqlalchemy.pool.FallbackAsyncAdaptedQueuePool, which SQLAlchemy 2.1 removed.
REQUIREMENTS = (f"mlflow[auth]=={OLD_MLFLOW}", "sqlalchemy<2.1", "PyMySQL==1.2.4", "cryptography==48.0.0")
INSTALL_TIMEOUT = 1200
HERE = Path(__file__).resolve().parent
CONTAINER_DIR = HERE.parents[1] / "container"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-gcp-e2e"


def old_mlflow_python() -> tuple[Path | None, str]:
    """The older MLflow's interpreter, installing it on first use; (None, why) when pip cannot install it."""
    venv = cache_dir() / f"mlflow-{OLD_MLFLOW}-py{sys.version_info.major}{sys.version_info.minor}"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions on one machine make it once
        if done.exists() and done.read_text() == " ".join(REQUIREMENTS):
            return python, ""
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True,
                           capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.CalledProcessError as error:
            shutil.rmtree(venv, ignore_errors=True)
            output = (error.stderr or error.stdout or "") if isinstance(error.stderr, str) else str(error)
            return None, f"pip cannot install mlflow[auth]=={OLD_MLFLOW} here: {output.strip()[-600:]}"
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"installing mlflow[auth]=={OLD_MLFLOW} took over {INSTALL_TIMEOUT} s"
        done.write_text(" ".join(REQUIREMENTS))
        return python, ""


def write_auth_ini(path: Path, auth_uri: str, admin: tuple[str, str]) -> Path:
    def value(text: str) -> str:
        return text.replace("%", "%%")

    path.write_text("\n".join([
        "[mlflow]", "default_permission = READ", f"database_uri = {value(auth_uri)}",
        f"admin_username = {value(admin[0])}", f"admin_password = {value(admin[1])}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth", "",
    ]))
    path.chmod(0o600)
    return path


CREATE_USER_STORE = """
import os
import sys
sys.path.insert(0, sys.argv[1])
import sqlalchemy as sa
from mlflow.server.auth.db import utils
from mlflow_gcp_server.database import existing_foreign_key_names, unique_foreign_key_names

engine = sa.create_engine(os.environ["AUTH_DATABASE_URI"], poolclass=sa.NullPool)
with unique_foreign_key_names(existing_foreign_key_names(engine)):
    utils.migrate(engine, "head")
"""


@dataclass
class OldServer:
    """`mlflow server --app-name basic-auth` of the older MLflow on the given databases."""

    python: Path
    work_dir: Path
    backend_uri: str
    auth_uri: str
    admin: tuple[str, str]
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work_dir),
                "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_ini(self.work_dir / "basic_auth.ini", self.auth_uri,
                                                              self.admin)),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "e2e-old-server-secret-key", "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

    def create_user_store(self) -> None:
        done = subprocess.run([str(self.python), "-c", CREATE_USER_STORE, str(CONTAINER_DIR)], cwd=self.work_dir,
                              env={**self.env(), "PYTHONDONTWRITEBYTECODE": "1", "AUTH_DATABASE_URI": self.auth_uri},
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"cannot create the user store with MLflow {OLD_MLFLOW}:\n{done.stderr[-3000:]}")

    def start(self, timeout: float = 180) -> OldServer:
        log = (self.work_dir / f"old-server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.python), "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1", "--backend-store-uri", self.backend_uri,
             "--artifacts-destination", (self.work_dir / "artifacts").as_uri()],
            env=self.env(), cwd=self.work_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MLflow {OLD_MLFLOW} server exited:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"the MLflow {OLD_MLFLOW} server is not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "".join(path.read_text(errors="replace")[-3000:] for path in self.work_dir.glob("old-server-*.log"))

    def client_script(self, action: str) -> dict:
        """`e2e_upgrade_data.py fill|read` run by the older MLflow's client against this server."""
        import json

        env = {**self.env(), "MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.admin[0],
               "MLFLOW_TRACKING_PASSWORD": self.admin[1], "PYTHONDONTWRITEBYTECODE": "1"}
        result = subprocess.run([str(self.python), str(HERE / "e2e_upgrade_data.py"), action], env=env,
                                cwd=self.work_dir, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"e2e_upgrade_data.py {action} failed:\n{result.stderr[-3000:]}")
        from e2e_upgrade_data import OUTPUT_PREFIX

        line = next(line for line in result.stdout.splitlines() if line.startswith(OUTPUT_PREFIX))
        return json.loads(line.removeprefix(OUTPUT_PREFIX))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, 15)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
