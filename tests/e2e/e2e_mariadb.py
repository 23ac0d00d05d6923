"""A throwaway MariaDB server in a temporary directory, listening on 127.0.0.1 only."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pymysql

MARIADB_BINARIES = ("mariadb-install-db", "mariadbd")


def missing_binaries() -> list[str]:
    return [name for name in MARIADB_BINARIES if not (shutil.which(name) or Path("/usr/sbin", name).exists())]


def binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


PORT_BASE, PORT_SPAN = 20000, 1000
_next_port: Iterator[int] | None = None


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port for a server that binds it later (MariaDB, the MLflow server). Not a port-0 pick: the kernel hands
    out ports of its ephemeral range to every port-0 bind and outgoing connection (the other xdist group's fakes,
    its MLflow client), so one could take ours before our server binds it. Instead each xdist worker owns
    PORT_SPAN ports below that range, taken in turn from a random start (other test runs on the machine rarely
    meet) and bind-checked; our own fakes bind port 0 and keep the socket, so they never collide."""
    global _next_port
    if _next_port is None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1".. under xdist
        slots = max(1, (_ephemeral_low() - PORT_BASE) // PORT_SPAN)
        slot = (int(worker[2:]) + 1 if worker[2:].isdigit() else 0) % slots
        start = random.randrange(PORT_SPAN)
        _next_port = (PORT_BASE + slot * PORT_SPAN + (start + i) % PORT_SPAN for i in itertools.count())
    for _ in range(PORT_SPAN):
        port = next(_next_port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in this worker's range of {PORT_SPAN} from {PORT_BASE}")


def write_tls_files(directory: Path) -> None:
    """A CA and a server certificate it signed, like Cloud SQL's per-instance CA: the server certificate names
    the instance, not the address clients connect to (so clients check the CA, not the host name)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Google, Inc"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(name("Google Cloud SQL Server CA")).issuer_name(
        name("Google Cloud SQL Server CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(name("demo-project:mlflow-tracking-database")).issuer_name(
        ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server-cert.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server-key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))


@dataclass
class MariaDB:
    base_dir: Path
    port: int
    root_password: str
    process: subprocess.Popen | None = None
    # With TLS, the server accepts only encrypted connections (Cloud SQL's sslMode ENCRYPTED_ONLY).
    tls: bool = False

    @property
    def ca_file(self) -> Path:
        return self.base_dir / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "mariadb.log"

    def start(self) -> None:
        data_dir = self.base_dir / "data"
        # Each server its own temporary directory: two installs bootstrapping at once in the shared /tmp (the two
        # e2e groups start their MariaDB together) sometimes fail on each other's temporary table
        # ("Could not remove temporary table: '/tmp/#sql-temptable-…'", then "Unknown table 'mysql.tmp_user_sys'").
        temporary = self.base_dir / "tmp"
        temporary.mkdir(exist_ok=True)
        install = subprocess.run(
            [binary("mariadb-install-db"), "--user=root", f"--datadir={data_dir}", f"--tmpdir={temporary}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120,
        )
        if install.returncode:  # say why: a bare CalledProcessError hides the output
            raise RuntimeError(f"mariadb-install-db exited with {install.returncode}:\n"
                               f"{(install.stdout + install.stderr)[-3000:]}")
        tls_flags = []
        if self.tls:
            write_tls_files(self.base_dir)
            tls_flags = [f"--ssl-ca={self.ca_file}", f"--ssl-cert={self.base_dir / 'server-cert.pem'}",
                         f"--ssl-key={self.base_dir / 'server-key.pem'}", "--require-secure-transport=ON"]
        self.process = subprocess.Popen(
            [binary("mariadbd"), "--no-defaults", "--user=root", f"--datadir={data_dir}", f"--tmpdir={temporary}",
             *tls_flags,
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
        ssl = {"ca": str(self.ca_file), "check_hostname": False} if self.tls else None
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                               password=self.root_password, database=database, autocommit=True, ssl=ssl)

    def execute(self, database: str | None, *statements: str) -> list[tuple]:
        """Run the statements as root in one connection; the rows of the last one."""
        connection = self.connect(database)
        try:
            rows: list[tuple] = []
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                    rows = list(cursor.fetchall())
            return rows
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_mariadb(prefix: str, root_password: str) -> Iterator[MariaDB]:
    """A MariaDB server in a temporary directory of its own, accepting only encrypted connections like the Cloud SQL
    instance `up` makes (sslMode ENCRYPTED_ONLY); stopped and removed at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = MariaDB(Path(tmp), free_port(), root_password, tls=True)
        server.start()
        try:
            yield server
        finally:
            server.stop()
