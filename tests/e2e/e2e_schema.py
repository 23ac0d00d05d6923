"""The image's entrypoint on a pair of databases of its own (tracking and user store) of the session's MariaDB:
serving (`ServerProcess`), or the migration job (`entrypoint.py migrate`) and its result line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from e2e_deployment import ENTRYPOINT, Secrets, ServerProcess, container_env, google_endpoints, new_password
from e2e_mariadb import free_port

from conftest import Rehearsal, server_log_path
from mlflow_gcp.service_spec import SERVICE_URLS_VAR

sys.path.insert(0, str(ENTRYPOINT.parent))
from mlflow_gcp_server import database
from mlflow_gcp_server.config import Credentials

RESULT_PREFIX = "mlflow-gcp: migration result: "
# Hang guard only (a migration of some forty revisions, MLflow imported in a fresh process, on a loaded machine).
ENTRYPOINT_HANG_GUARD = 600


@dataclass
class Databases:
    """Two databases of the session's MariaDB, served by the image's entrypoint as Cloud Run would."""

    rehearsal: Rehearsal
    runs: str
    auth: str
    secrets: Secrets

    @classmethod
    def fresh(cls, rehearsal: Rehearsal, prefix: str) -> Databases:
        found = cls(rehearsal, f"{prefix}_runs", f"{prefix}_auth",
                    Secrets(rehearsal.mariadb.root_password, "admin", new_password()))
        found.drop()
        return found

    @property
    def admin(self) -> tuple[str, str]:
        return self.secrets.admin_user, self.secrets.admin_password

    def uri(self, name: str) -> str:
        mariadb = self.rehearsal.mariadb
        return database.mysql_uri(Credentials("root", mariadb.root_password), "127.0.0.1", mariadb.port, name,
                                  str(mariadb.ca_file))

    def execute(self, name: str | None, *statements: str) -> list[tuple]:
        return self.rehearsal.mariadb.execute(name, *statements)

    def drop(self) -> None:
        self.execute(None, *(f"DROP DATABASE IF EXISTS `{name}`" for name in (self.runs, self.auth)))

    def create(self) -> None:
        self.execute(None, *(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4" for name in (self.runs, self.auth)))

    def tables(self, name: str) -> list[str]:
        return sorted(row[0] for row in self.execute(name, "SHOW TABLES"))

    def env(self, port: int = 0, db_port: int = 0, **extra: str) -> dict[str, str]:
        settings = replace(self.rehearsal.settings, db_name=self.runs, auth_db_name=self.auth)
        env = container_env(settings, self.secrets, db_port or self.rehearsal.mariadb.port,
                            db_ca_file=self.rehearsal.mariadb.ca_file)
        env.update(google_endpoints(self.rehearsal.google.url, self.rehearsal.work_dir))
        port = port or free_port()
        env[SERVICE_URLS_VAR] = f"http://127.0.0.1:{port}"
        env["PORT"] = str(port)
        return {**env, **extra}

    def run_entrypoint(self, *args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ENTRYPOINT), *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=ENTRYPOINT_HANG_GUARD)

    def migrate(self, **extra: str) -> tuple[int, dict, str]:
        """(exit code, the result line's JSON, stderr) of `entrypoint.py migrate`."""
        done = self.run_entrypoint("migrate", **extra)
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        assert last.startswith(RESULT_PREFIX), done.stderr[-3000:]
        assert not any(value in done.stderr + done.stdout for value in self.secrets.values())
        return done.returncode, json.loads(last.removeprefix(RESULT_PREFIX)), done.stderr

    def serve(self, **extra: str) -> tuple[ServerProcess, str]:
        env = self.env(**extra)
        return ServerProcess(env, server_log_path()).start(), env[SERVICE_URLS_VAR]

    def dump(self, directory: Path) -> dict[str, Path]:
        """A dump of each database: it stands for the Cloud SQL backup `mlflow-gcp up` takes first."""
        from e2e_mariadb import binary

        dumps = {}
        for name in (self.runs, self.auth):
            path = dumps[name] = directory / f"{name}.sql"
            with path.open("wb") as out:
                subprocess.run([binary("mariadb-dump"), *self.socket_args(), name], stdout=out, check=True,
                               timeout=300)
        return dumps

    def restore(self, dumps: dict[str, Path]) -> None:
        from e2e_mariadb import binary

        self.drop()
        self.create()
        for name, path in dumps.items():
            with path.open("rb") as dumped:
                subprocess.run([binary("mariadb"), *self.socket_args(), name], stdin=dumped, check=True, timeout=300)

    def socket_args(self) -> list[str]:
        return [f"--socket={self.rehearsal.mariadb.base_dir / 'mysqld.sock'}", "--user=root"]


def heads() -> dict[str, str]:
    from mlflow_gcp_server import schema

    return schema.heads()
