"""Server start time: start to first `/health` 200, the container's entrypoint beside plain `mlflow server`.

All three servers use the same MariaDB (started here, like the e2e tests) and one worker:
- entrypoint: container/entrypoint.py with the Cloud Run environment (login, schema checks, admin sync);
- plain: `mlflow server` on the same database, no login;
- plain basic-auth: `mlflow server --app-name basic-auth` on the same databases.
Each is started once to warm the file cache, then ROUNDS times in turn. The fastest start of each
(the least disturbed by other work on the machine) and the median are printed.
Target: entrypoint within 1.1x of plain.

    python benchmarks/server_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from e2e_deployment import (  # noqa: E402
    ENTRYPOINT,
    Secrets,
    container_env,
    google_endpoints,
    new_password,
    rehearsal_settings,
)
from e2e_fake_google import FakeGoogle  # noqa: E402
from e2e_mariadb import MariaDB, free_port  # noqa: E402

QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "5",
}


def mysql_uri(mariadb: MariaDB, database: str) -> str:
    from urllib.parse import quote

    return f"mysql+pymysql://root:{quote(mariadb.root_password, safe='')}@127.0.0.1:{mariadb.port}/{database}"


def seconds_to_health(command: list[str], env: dict[str, str], port: int, log: Path) -> float:
    started = time.monotonic()
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while process.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{command[1:3]} exited with {process.returncode}; see {log}")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


class Servers:
    def __init__(self, work_dir: Path, mariadb: MariaDB, google: FakeGoogle, secret_values: Secrets):
        self.work_dir, self.mariadb, self.google, self.secrets = work_dir, mariadb, google, secret_values
        self.settings = rehearsal_settings()
        self.log = work_dir / "servers.log"

    def entrypoint(self) -> float:
        port = free_port()
        env = container_env(self.settings, self.secrets, self.mariadb.port, (f"http://127.0.0.1:{port}",))
        env.update(google_endpoints(self.google.url, self.work_dir), PORT=str(port))
        return seconds_to_health([sys.executable, str(ENTRYPOINT)], env, port, self.log)

    def plain_command(self, port: int, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--serve-artifacts",
            "--artifacts-destination",
            f"gs://{self.settings.bucket_name}/mlflow-artifacts",
            *extra,
        ]

    def plain_env(self) -> dict[str, str]:
        env = {**os.environ, **QUIET_ENV, **google_endpoints(self.google.url, self.work_dir)}
        env["MLFLOW_BACKEND_STORE_URI"] = mysql_uri(self.mariadb, self.settings.db_name)
        return env

    def plain(self) -> float:
        port = free_port()
        return seconds_to_health(self.plain_command(port), self.plain_env(), port, self.log)

    def plain_basic_auth(self) -> float:
        config = self.work_dir / "basic_auth.ini"
        auth_uri = mysql_uri(self.mariadb, self.settings.auth_db_name).replace("%", "%%")
        config.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_uri}\n"
            f"admin_username = {self.secrets.admin_user}\n"
        )
        config.chmod(0o600)
        env = {
            **self.plain_env(),
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.flask_key,
        }
        port = free_port()
        return seconds_to_health(self.plain_command(port, "--app-name", "basic-auth"), env, port, self.log)


@contextlib.contextmanager
def rehearsal_servers() -> Iterator[Servers]:
    """A MariaDB and the Google fakes in a temporary directory, stopped on the way out (both benchmarks)."""
    secret_values = Secrets(new_password(), "admin", new_password())
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        work_dir = Path(tmp)
        (work_dir / "mariadb").mkdir()
        mariadb = MariaDB(work_dir / "mariadb", free_port(), secret_values.mysql_password)
        mariadb.start()
        try:
            settings = rehearsal_settings()
            google = FakeGoogle(
                work_dir / "gcs", settings.bucket_name, settings.service_account_email, settings.project
            ).start()
            try:
                yield Servers(work_dir, mariadb, google, secret_values)
            finally:
                google.stop()
        finally:
            mariadb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with rehearsal_servers() as servers:
        candidates = {
            "entrypoint": servers.entrypoint,
            "plain": servers.plain,
            "plain basic-auth": servers.plain_basic_auth,
        }
        for start in candidates.values():  # creates the schemas, warms the page cache
            start()
        timings = {name: [] for name in candidates}
        for _ in range(rounds):
            for name, start in candidates.items():
                timings[name].append(start())
    fastest = {name: min(values) for name, values in timings.items()}
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(
            f"{name:>17}: fastest {fastest[name]:.2f} s, median {medians[name]:.2f} s  "
            f"({', '.join(f'{v:.2f}' for v in values)})"
        )
    for other in ("plain", "plain basic-auth"):
        target = " (target <= 1.10x)" if other == "plain" else ""
        print(
            f"entrypoint / {other:<16}: fastest {fastest['entrypoint'] / fastest[other]:.2f}x, "
            f"median {medians['entrypoint'] / medians[other]:.2f}x{target}"
        )


if __name__ == "__main__":
    main()
