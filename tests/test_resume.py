"""`up` killed at any moment (SIGINT or SIGKILL) and run again converges: nothing duplicated, no password lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from mlflow_gcp.config import SECRET_FLASK_KEY, SECRET_MLFLOW, SECRET_MYSQL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli

STEPS = ["apis", "network", "database", "connector", "service-account", "bucket", "secrets", "image", "deploy"]
PASSWORD_SECRETS = (SECRET_MYSQL, SECRET_MLFLOW, SECRET_FLASK_KEY)


def start_up(fake) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow_gcp", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(process: subprocess.Popen, pattern: str, sig: int, timeout: float = 120) -> str:
    """Send `sig` once a line matching `pattern` is printed; return what was printed."""
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if re.search(pattern, line):
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen.wait(timeout)
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=60)
    reader.join(timeout=10)
    return "".join(lines)


def password_versions(fake) -> dict[str, list[str]]:
    versions = fake.state["secret_versions"]
    return {
        secret: [v["data"].decode() for v in versions.get(f"projects/{PROJECT}/secrets/{secret}", [])]
        for secret in PASSWORD_SECRETS
    }


def run_to_completion() -> str:
    """The rerun: in this process, to keep the suite fast (only the killed run needs its own process)."""
    result = cli("up")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("step", STEPS)
def test_killed_after_a_step_then_rerun_converges(fake, container_dir, step, sig):
    first = start_up(fake)
    printed = kill_when(first, rf"^{re.escape(step)}\s+(created|updated|unchanged)", sig)
    assert first.returncode != 0 or "MLflow is ready" in printed
    before = password_versions(fake)

    run_to_completion()
    after = password_versions(fake)
    for secret in PASSWORD_SECRETS:
        assert len(after[secret]) == 1, (secret, after[secret])
        if before[secret]:
            assert after[secret] == before[secret], f"{secret} changed after the rerun"

    fake.clear_log()
    run_to_completion()
    assert fake.mutating_requests() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_while_cloud_sql_is_being_created(fake, container_dir, sig):
    fake.latency["sqladmin.create"] = 2.0
    first = start_up(fake)
    kill_when(first, "creating Cloud SQL instance", sig)
    time.sleep(0.2)
    run_to_completion()
    assert len(fake.state["sql_instances"]) == 1
    assert len(password_versions(fake)[SECRET_MYSQL]) == 1
