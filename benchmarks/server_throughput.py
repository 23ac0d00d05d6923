"""Logging rate of the guarded server against the same MLflow with the login off and with its own login (issue 19).

Every server is the container's entrypoint on the same MariaDB databases, with the same environment, the same
basic_auth.ini (login cache, admin, default permission) and one worker; they differ only in the app uvicorn serves:
- guarded: `--app-name mlflow-gcp` (login, route policy, storage-location checks, permission cache:
  mlflow_gcp_server.app), the image as deployed;
- open: no `--app-name` (plain `mlflow server`: no login, no permission check), the issue's "login off" baseline:
  what the login and every check cost together;
- stock: `--app-name basic-auth` (MLflow's own login and permission checks, nothing of ours): what our additions cost.
The real mlflow client logs to each, as the admin of mlflow-credentials or (--as-user) as a user who is not an admin
(MLflow then checks the user's permissions on every request; the open server ignores the login). Each round runs
every workload on every server in turn (the order rotating from round to round), so that the load of other work on
the machine hits all alike. The guarded server freezes its start-up objects out of the garbage collector's way (the
image does); MLflow does not, so with the default baselines the ratios are the deployed server's against MLflow as it
ships. `--freeze-baseline` makes the baselines freeze theirs too: the ratios are then those of the checks alone.
Per workload and baseline: the median over the rounds of the per-round ratio guarded / baseline, and its spread
(lowest-highest), for calls per second (wall) and for the servers' CPU time per call (baseline / guarded: above 1 the
guarded server spends less). CPU time per call is the steadier figure on a shared machine. Target: every ratio >=
0.9x.

    python benchmarks/server_throughput.py [--baseline open|stock|both] [--rounds 5] [--seconds 3] [--threads 4]
                                           [--as-user] [--cache-seconds 0] [--freeze-baseline]
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
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

# One batch size and one non-admin for this benchmark and server_instructions.py's calls.
from asgi_calls import BATCH_SIZE  # noqa: E402
from asgi_calls import USER as BENCH_USER  # noqa: E402
from e2e_deployment import (  # noqa: E402
    ENTRYPOINT,
    container_env,
    google_endpoints,
)
from e2e_mariadb import free_port  # noqa: E402
from server_start import Servers, rehearsal_servers  # noqa: E402

GUARDED, OPEN, STOCK = "guarded", "open", "stock"
FREEZE_SITE = REPO_ROOT / "benchmarks" / "freeze_startup"  # its sitecustomize freezes a baseline's start-up objects
TICKS = os.sysconf("SC_CLK_TCK")


# The container's entrypoint, serving MLflow's own basic-auth app instead of ours (the child process's program).
SERVE_STOCK = f"""
import sys
sys.path.insert(0, {str(ENTRYPOINT.parent)!r})
import entrypoint
arguments = entrypoint.server_arguments
entrypoint.server_arguments = lambda config: [
    "basic-auth" if argument == "mlflow-gcp" else argument for argument in arguments(config)]
entrypoint.main()
"""
# The container's entrypoint with the login off: plain `mlflow server`, no `--app-name` (the baseline).
SERVE_OPEN = f"""
import sys
sys.path.insert(0, {str(ENTRYPOINT.parent)!r})
import entrypoint
arguments = entrypoint.server_arguments

def without_app(config):
    result = list(arguments(config))
    index = result.index("--app-name")
    del result[index:index + 2]
    return result

entrypoint.server_arguments = without_app
entrypoint.main()
"""


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            time.sleep(0.1)
    if process.poll() is None:
        stop(process)
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def cpu_seconds(session: int) -> float:
    """User + system CPU time of every live process of a session (the entrypoint and its uvicorn)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # fields after the name: state ppid pgrp session ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def run_calls(call, seconds: float, threads: int) -> tuple[int, float]:
    """(calls made, wall seconds) with `threads` threads calling for `seconds`."""
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def worker(index: int) -> None:
        while time.monotonic() < deadline:
            call(index, counts[index])
            counts[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts), time.monotonic() - started


class Target:
    """One server under test: its process, its client and a run to log to."""

    def __init__(self, process: subprocess.Popen, tracking_uri: str, login: tuple[str, str]):
        self.process = process
        self.tracking_uri = tracking_uri
        self.login = login
        self.local = threading.local()
        with_login(login)
        experiment_id = self.client().create_experiment(f"throughput-{time.time_ns()}")
        self.run_id = self.client().create_run(experiment_id).info.run_id

    def client(self):
        from mlflow.tracking import MlflowClient

        if not hasattr(self.local, "client"):
            self.local.client = MlflowClient(self.tracking_uri)
        return self.local.client

    def log_metric(self, index: int, step: int) -> None:
        self.client().log_metric(self.run_id, f"metric_{index}", 0.5, step=step)

    def log_batch(self, index: int, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"batch_{index}_{i}", 0.5, now, step) for i in range(BATCH_SIZE)]
        self.client().log_batch(self.run_id, metrics=metrics)

    def measure(self, method: str, seconds: float, threads: int) -> tuple[float, float]:
        """(calls per second, server CPU seconds per call)."""
        with_login(self.login)
        cpu_before = cpu_seconds(self.process.pid)
        calls, wall = run_calls(getattr(self, method), seconds, threads)
        cpu = cpu_seconds(self.process.pid) - cpu_before
        return calls / wall, cpu / max(calls, 1)


def with_login(login: tuple[str, str]) -> None:
    # The client reads the login from the environment at each request.
    os.environ.update({"MLFLOW_TRACKING_USERNAME": login[0], "MLFLOW_TRACKING_PASSWORD": login[1]})


@dataclass
class Figures:
    """Per side, one figure per round."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, side: str, rate: float, cpu: float) -> None:
        self.rates.setdefault(side, []).append(rate)
        self.cpu.setdefault(side, []).append(cpu)

    def rate_ratios(self, baseline: str) -> list[float]:
        return [g / b for g, b in zip(self.rates[GUARDED], self.rates[baseline], strict=True)]

    def cpu_ratios(self, baseline: str) -> list[float]:
        return [b / g for g, b in zip(self.cpu[GUARDED], self.cpu[baseline], strict=True)]


def workloads(threads: int) -> dict[str, tuple[str, int]]:
    return {
        "log_metric 1 thread": ("log_metric", 1),
        f"log_metric {threads} threads": ("log_metric", threads),
        f"log_batch({BATCH_SIZE}) 1 thread": ("log_batch", 1),
        f"log_batch({BATCH_SIZE}) {threads} threads": ("log_batch", threads),
    }


def measure(targets: dict[str, Target], rounds: int, seconds: float, threads: int) -> dict[str, Figures]:
    for target in targets.values():  # warm-up: connections, caches, code paths
        for method in ("log_metric", "log_batch"):
            target.measure(method, seconds, threads)
    results = {name: Figures() for name in workloads(threads)}
    sides = list(targets)
    for round_number in range(rounds):
        shift = round_number % len(sides)  # each side goes first, second, ... in turn
        order = sides[shift:] + sides[:shift]
        if round_number // len(sides) % 2:
            order.reverse()
        for name, (method, thread_count) in workloads(threads).items():
            for side in order:
                results[name].add(side, *targets[side].measure(method, seconds, thread_count))
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    return results


COMMANDS = {
    GUARDED: [sys.executable, str(ENTRYPOINT)],
    OPEN: [sys.executable, "-c", SERVE_OPEN],
    STOCK: [sys.executable, "-c", SERVE_STOCK],
}


def start_all(servers: Servers, sides: list[str], as_user: bool, cache_seconds: str | None = None,
              freeze_baseline: bool = False) -> tuple[list[subprocess.Popen], dict[str, Target]]:
    processes, urls = {}, {}
    try:
        for side in sides:
            command = COMMANDS[side]
            port = free_port()
            env = container_env(servers.settings, servers.secrets, servers.mariadb.port,
                                (f"http://127.0.0.1:{port}",))
            env.update(google_endpoints(servers.google.url, servers.work_dir), PORT=str(port))
            if cache_seconds is not None:
                env["MLFLOW_GCP_PERMISSION_CACHE_SECONDS"] = cache_seconds
            if freeze_baseline and side != GUARDED:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(FREEZE_SITE), env.get("PYTHONPATH"))))
                env["MLFLOW_GCP_BENCH_FREEZE"] = "1"
            processes[side] = start(command, env, port, servers.log)
            urls[side] = f"http://127.0.0.1:{port}"
    except BaseException:
        for process in processes.values():
            stop(process)
        raise
    login = (servers.secrets.admin_user, servers.secrets.admin_password)
    if as_user:  # one auth database: the user exists on every server
        created = requests.post(f"{urls[GUARDED]}/api/2.0/mlflow/users/create", auth=login, timeout=60,
                                json={"username": BENCH_USER[0], "password": BENCH_USER[1]})
        created.raise_for_status()
        login = BENCH_USER
    # The experiments are created by the login that logs (a non-admin gets MANAGE on what they create).
    return list(processes.values()), {side: Target(processes[side], urls[side], login) for side in processes}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f}x ({min(values):.2f}-{max(values):.2f})"


BASELINE_TITLES = {
    OPEN: "open: the same `mlflow server` with the login off (no --app-name)",
    STOCK: "stock: MLflow's own `--app-name basic-auth`",
}


def report(results: dict[str, Figures], baselines: list[str], rounds: int, as_user: bool,
           cache_seconds: str | None, freeze_baseline: bool) -> None:
    cache = "" if cache_seconds is None else f", permission cache {cache_seconds} s"
    cache += "; the baselines freeze their start-up objects too" if freeze_baseline else ""
    print(f"guarded (mlflow-gcp app{cache}); same entrypoint, environment, MLflow, MariaDB, one worker; "
          f"{'a non-admin user' if as_user else 'the admin'}; median of {rounds} interleaved rounds (spread)")
    for baseline in baselines:
        print(f"\nguarded vs {BASELINE_TITLES[baseline]}")
        print(f"{'workload':>28} {'calls/s guarded':>15} {baseline:>7} {'ratio':>22}   "
              f"{'CPU ms/call guarded':>19} {baseline:>6} {'ratio':>22}")
        for name, figures in results.items():
            print(f"{name:>28} {statistics.median(figures.rates[GUARDED]):15.1f} "
                  f"{statistics.median(figures.rates[baseline]):7.1f} {spread(figures.rate_ratios(baseline)):>22}   "
                  f"{statistics.median(figures.cpu[GUARDED]) * 1000:19.2f} "
                  f"{statistics.median(figures.cpu[baseline]) * 1000:6.2f} {spread(figures.cpu_ratios(baseline)):>22}")
    print("\nratios: calls/s guarded / baseline; CPU baseline / guarded. Target: every ratio >= 0.90x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", choices=("open", "stock", "both"), default="both",
                        help="open: the login off (the issue's baseline); stock: MLflow's own basic-auth app")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per workload, server and round")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--as-user", action="store_true", help="log as a user who is not an admin")
    parser.add_argument("--cache-seconds", help="the guarded server's permission cache (0: off; default: the image's)")
    parser.add_argument("--freeze-baseline", action="store_true",
                        help="the baselines freeze their start-up objects as the guarded server does (checks alone)")
    arguments = parser.parse_args()
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1"})
    baselines = [OPEN, STOCK] if arguments.baseline == "both" else [arguments.baseline]
    with rehearsal_servers() as servers:
        processes = []
        try:
            processes, targets = start_all(servers, [GUARDED, *baselines], arguments.as_user, arguments.cache_seconds,
                                           arguments.freeze_baseline)
            results = measure(targets, arguments.rounds, arguments.seconds, arguments.threads)
        finally:
            for process in processes:
                stop(process)
    report(results, baselines, arguments.rounds, arguments.as_user, arguments.cache_seconds, arguments.freeze_baseline)


if __name__ == "__main__":
    main()
