"""Logging rate with the login on and off: `log_metric` and `log_batch` calls per second.

- login on: the container's entrypoint (basic-auth, credential cache on), Cloud Run environment;
- login off: plain `mlflow server` on the same MariaDB, one worker, same pool settings.
The real mlflow client logs to each for DURATION seconds, sequentially and from THREADS threads, as the admin of
mlflow-credentials or (--as-user) as a user who is not an admin (MLflow then checks the user's permissions on every
request; the server caches them, see container/mlflow_gcp_server/permission_cache.py).
Target: the rate with login at least 0.9x the rate without (issue 19).

    python benchmarks/server_throughput.py [--duration 8] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from e2e_deployment import (  # noqa: E402
    ENTRYPOINT,
    container_env,
    google_endpoints,
)
from e2e_mariadb import free_port  # noqa: E402
from server_start import Servers, rehearsal_servers  # noqa: E402

BATCH_SIZE = 100


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start; see {log}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def calls_per_second(call, duration: float, threads: int) -> float:
    deadline = time.monotonic() + duration
    counts = [0] * threads

    def worker(index: int) -> None:
        while time.monotonic() < deadline:
            call(index, counts[index])
            counts[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.monotonic() - started)


class Target:
    """One server under test: its client (with or without the login) and a run to log to."""

    def __init__(self, tracking_uri: str, login: tuple[str, str] | None):
        self.tracking_uri = tracking_uri
        self.login = login
        self.local = threading.local()
        experiment_id = self.client().create_experiment(f"throughput-{time.time_ns()}")
        self.run_id = self.client().create_run(experiment_id).info.run_id

    def client(self):
        from mlflow.tracking import MlflowClient

        if not hasattr(self.local, "client"):
            self.local.client = MlflowClient(self.tracking_uri)
        return self.local.client

    def credentials(self):
        # The client reads the login from the environment at each request; set it per target.
        return (
            {"MLFLOW_TRACKING_USERNAME": self.login[0], "MLFLOW_TRACKING_PASSWORD": self.login[1]} if self.login else {}
        )

    def log_metric(self, index: int, step: int) -> None:
        self.client().log_metric(self.run_id, f"metric_{index}", 0.5, step=step)

    def log_batch(self, index: int, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"batch_{index}_{i}", 0.5, now, step) for i in range(BATCH_SIZE)]
        self.client().log_batch(self.run_id, metrics=metrics)


def with_environment(values: dict[str, str]):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(name, None)
    os.environ.update(values)


def measure(targets: dict[str, Target], duration: float, threads: int, rounds: int = 3):
    """Rounds alternate between the servers so that machine noise hits both alike; medians."""
    scenarios = {
        "log_metric 1 thread": ("log_metric", 1),
        f"log_metric {threads} threads": ("log_metric", threads),
        "log_batch(100) 1 thread": ("log_batch", 1),
        f"log_batch(100) {threads} threads": ("log_batch", threads),
    }
    results = {name: {scenario: [] for scenario in scenarios} for name in targets}
    for target in targets.values():  # warm-up: connections, caches
        with_environment(target.credentials())
        calls_per_second(target.log_metric, 1.0, 1)
    for scenario, (method, thread_count) in scenarios.items():
        for _ in range(rounds):
            for name, target in targets.items():
                with_environment(target.credentials())
                rate = calls_per_second(getattr(target, method), duration / rounds, thread_count)
                results[name][scenario].append(rate)
    return {
        name: {scenario: statistics.median(rates) for scenario, rates in by_scenario.items()}
        for name, by_scenario in results.items()
    }


BENCH_USER = ("bench-user", "bench-user-password-1234")


def start_both(servers: Servers, work_dir: Path, as_user: bool = False) -> tuple[list[subprocess.Popen],
                                                                                  dict[str, Target]]:
    login_port, plain_port = free_port(), free_port()
    env = container_env(servers.settings, servers.secrets, servers.mariadb.port, (f"http://127.0.0.1:{login_port}",))
    env.update(google_endpoints(servers.google.url, work_dir), PORT=str(login_port))
    processes = [start([sys.executable, str(ENTRYPOINT)], env, login_port, servers.log)]
    processes.append(start(servers.plain_command(plain_port), servers.plain_env(), plain_port, servers.log))
    login = (servers.secrets.admin_user, servers.secrets.admin_password)
    if as_user:
        created = requests.post(f"http://127.0.0.1:{login_port}/api/2.0/mlflow/users/create", auth=login, timeout=60,
                                json={"username": BENCH_USER[0], "password": BENCH_USER[1]})
        created.raise_for_status()
        login = BENCH_USER
    with_environment({"MLFLOW_TRACKING_USERNAME": login[0], "MLFLOW_TRACKING_PASSWORD": login[1]})
    targets = {"login on": Target(f"http://127.0.0.1:{login_port}", login)}
    with_environment({})
    targets["login off"] = Target(f"http://127.0.0.1:{plain_port}", None)
    return processes, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=9.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--as-user", action="store_true", help="log as a user who is not an admin")
    arguments = parser.parse_args()
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1"})
    with rehearsal_servers() as servers:
        processes = []
        try:
            processes, targets = start_both(servers, servers.work_dir, arguments.as_user)
            results = measure(targets, arguments.duration, arguments.threads)
        finally:
            for process in processes:
                stop(process)
    print(f"{'calls/s (median of 3 rounds)':>30} {'login on':>9} {'login off':>9} {'ratio':>6}")
    for scenario, rate in results["login on"].items():
        off = results["login off"][scenario]
        print(f"{scenario:>30} {rate:9.1f} {off:9.1f} {rate / off:6.2f}x")
    print("target: ratio >= 0.90x")


if __name__ == "__main__":
    main()
