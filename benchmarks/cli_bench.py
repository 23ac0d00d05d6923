"""Figures for issue 2: CLI start time, `up` wall time against its critical path, requests of a no-op `up`.

Run from the repository root: `python benchmarks/cli_bench.py`. Everything runs against the local fake of the
Google APIs (tests/fake_gcp), with simulated operation latencies; nothing leaves this machine.
Targets: help under 0.4 s; `up` within 1.05x of the critical path; a no-op `up` sends 0 mutating and at most
30 requests in all.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

# Simulated latencies (seconds) of the operations, Cloud SQL the longest (in Google's real world it is 10 to 20
# minutes; here everything is scaled down so the benchmark runs in about half a minute).
LATENCIES = {
    "serviceusage.enable": 1.0,
    "compute.addresses": 0.5,
    "servicenetworking.connect": 1.5,
    "sqladmin.create": 8.0,
    "sqladmin.database": 0.3,
    "vpcaccess.create": 3.0,
    "iam.create_service_account": 0.2,
    "storage.bucket_insert": 0.2,
    "artifactregistry.create": 0.5,
    "storage.upload": 0.2,
    "cloudbuild.build": 4.0,
    "run.deploy": 1.5,
}

# The operations each step waits for on a first run, in order; their sum is the step's simulated latency.
STEP_OPERATIONS = {
    "apis": ["serviceusage.enable"],
    "network": ["compute.addresses", "servicenetworking.connect"],
    "database": ["sqladmin.create", "sqladmin.database", "sqladmin.database"],
    "connector": ["vpcaccess.create"],
    "service-account": ["iam.create_service_account"],
    "bucket": ["storage.bucket_insert"],
    "secrets": [],
    "image": ["artifactregistry.create", "storage.bucket_insert", "storage.upload", "cloudbuild.build"],
    # The first deploy rolls out once: the server is told its deterministic URL before the service exists.
    "deploy": ["run.deploy"],
}


def time_command(argv: list[str], runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def startup_figures() -> None:
    # The console script pip installed beside this interpreter (what a user runs; not a pyenv shim).
    script = Path(sysconfig.get_path("scripts")) / "mlflow-gcp"
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "mlflow_gcp"]
    help_time = time_command([*exe, "--help"], runs=15)
    up_help = time_command([*exe, "up", "--help"], runs=15)
    bare = time_command([sys.executable, "-c", "import typer, rich"], runs=15)
    print(f"mlflow-gcp --help              {help_time:6.3f} s   (median of 15; target < 0.4 s)")
    print(f"python -c 'import typer, rich' {bare:6.3f} s")
    print(f"mlflow-gcp up --help           {up_help:6.3f} s   (Typer imports pydantic to parse a command's options)")


def critical_path(durations: dict[str, float]) -> tuple[float, list[str]]:
    from mlflow_gcp.steps import STEPS

    best: dict[str, tuple[float, list[str]]] = {}
    for step in STEPS:  # STEPS is in dependency order
        before = max((best[r] for r in step.requires if r in best), default=(0.0, []), key=lambda item: item[0])
        best[step.name] = (before[0] + durations.get(step.name, 0.0), [*before[1], step.name])
    return max(best.values(), key=lambda item: item[0])


def up_figures() -> None:
    from tests.fake_gcp.server import PROJECT, FakeGoogle

    from mlflow_gcp.config import Settings, validate
    from mlflow_gcp.engine.base import StepContext
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.orchestrator import run_concurrently
    from mlflow_gcp.steps import STEPS

    fake = FakeGoogle()
    fake.latency.update(LATENCIES)
    # Operations are polled at least every 0.25 s, then every 4% of the time already waited. Against Google's
    # minutes-long operations that floor is noise; against these latencies, scaled down about a hundredfold, it
    # is scaled down too, so the figure measures the scheduling, not the compression of time.
    os.environ.setdefault("MLFLOW_GCP_POLL_MIN", "0.05")
    os.environ["MLFLOW_GCP_API_ENDPOINT"] = fake.start()
    os.environ.setdefault("MLFLOW_GCP_CONTAINER_DIR", str(ROOT / "container"))
    settings = validate(Settings(project=PROJECT, region="europe-west1"))

    def up():
        clients = Clients(settings.project)
        clients.prewarm()  # as the CLI does
        return run_concurrently(list(STEPS), StepContext(settings=settings, clients=clients))

    report = up()
    if not report.ok:
        raise SystemExit(f"up failed: {report.first_error()}")
    durations = {name: result.seconds for name, result in report.results.items()}
    simulated = {step: sum(LATENCIES[op] for op in ops) for step, ops in STEP_OPERATIONS.items()}
    critical, path = critical_path(simulated)
    measured, measured_path = critical_path(durations)
    print(f"up (first run) wall time   {report.seconds:6.2f} s")
    print(f"critical path (simulated)  {critical:6.2f} s   ({' -> '.join(path)})")
    print(f"ratio                      {report.seconds / critical:6.3f}    (target <= 1.05)")
    overhead = report.seconds - critical
    print(
        f"fixed overhead             {overhead:6.2f} s   (library imports and first connections on the critical path;"
        f" against a real Cloud SQL creation of ~15 min the ratio would be {(900 + overhead) / 900:.3f})"
    )
    print(
        f"longest chain of measured step times {measured:6.2f} s ({' -> '.join(measured_path)}): "
        f"scheduling overhead {report.seconds - measured:+.2f} s"
    )
    for name, seconds in durations.items():
        print(f"  {name:<16} {seconds:6.2f} s  (simulated operations {simulated.get(name, 0):.1f} s)")

    fake.clear_log()
    start = time.perf_counter()
    again = up()
    elapsed = time.perf_counter() - start
    assert again.ok, again.first_error()
    total = len(fake.requests())
    mutating = len(fake.mutating_requests())
    print(
        f"no-op up                   {elapsed:6.2f} s, {total} requests, {mutating} mutating "
        "(targets: <= 30 requests, 0 mutating)"
    )
    by_api: dict[str, int] = {}
    for request in fake.requests():
        by_api[request.api] = by_api.get(request.api, 0) + 1
    print("  by API: " + ", ".join(f"{api} {count}" for api, count in sorted(by_api.items())))
    fake.stop()


if __name__ == "__main__":
    startup_figures()
    up_figures()
