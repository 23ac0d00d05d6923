"""A throwaway MariaDB server in a temporary directory, listening on 127.0.0.1 only."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

MARIADB_BINARIES = ("mariadb-install-db", "mariadbd")


def missing_binaries() -> list[str]:
    return [name for name in MARIADB_BINARIES if not (shutil.which(name) or Path("/usr/sbin", name).exists())]


def binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MariaDB:
    base_dir: Path
    port: int
    root_password: str
    process: subprocess.Popen | None = None

    @property
    def log_file(self) -> Path:
        return self.base_dir / "mariadb.log"

    def start(self) -> None:
        data_dir = self.base_dir / "data"
        subprocess.run(
            [binary("mariadb-install-db"), "--user=root", f"--datadir={data_dir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )
        self.process = subprocess.Popen(
            [binary("mariadbd"), "--no-defaults", "--user=root", f"--datadir={data_dir}",
             "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={self.base_dir / 'mysqld.sock'}",
             f"--pid-file={self.base_dir / 'mysqld.pid'}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2",
             "--max-connections=300", f"--log-error={self.log_file}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready()
        self._set_root_password()

    def _wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self.log_file.read_text()[-2000:]}")
            try:
                pymysql.connect(unix_socket=str(self.base_dir / "mysqld.sock"), user="root").close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.2)
        raise TimeoutError("mariadbd did not accept connections")

    def _set_root_password(self) -> None:
        connection = pymysql.connect(unix_socket=str(self.base_dir / "mysqld.sock"), user="root")
        with connection.cursor() as cursor:
            # Cloud SQL's root connects over TCP from any host, like the Cloud Run connector does.
            cursor.execute("CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY %s", (self.root_password,))
            cursor.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
            cursor.execute("FLUSH PRIVILEGES")
        connection.close()

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                               password=self.root_password, database=database, autocommit=True)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
