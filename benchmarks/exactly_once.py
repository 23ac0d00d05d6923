"""Exactly once under random faults (issue 8): `up` against the fake with random transient errors (429/500/503,
nothing applied) and lost answers (a mutating request applied, then a 503 or a reset connection) over many seeds.

Run from the repository root: `python benchmarks/exactly_once.py [--seeds 50] [--transient 0.05] [--lost 0.1]`.
For each seed it checks that `up` exits 0 with one Cloud SQL instance, one version per secret, one build, each
MySQL user once, and that a second `up` (without faults) sends no mutating request; it prints one line per
failing seed and the totals. Odd seeds use a MySQL user of their own (`--db-user mlflow`) so users.insert is
exercised too. Everything runs against the local fake; nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

BUILDS_ROUTE = "/v1/projects/{project}/locations/{location}/builds"


def one_seed(seed: int, transient: float, lost: float) -> tuple[list[str], dict[str, float]]:
    from tests.fake_gcp.chaos import Chaos
    from tests.fake_gcp.server import FakeGoogle
    from typer.testing import CliRunner

    from mlflow_gcp.cli import app

    fake = FakeGoogle()
    os.environ["MLFLOW_GCP_API_ENDPOINT"] = fake.start()
    chaos = fake.chaos = Chaos(seed, transient_rate=transient, lost_rate=lost)
    args = ["up"] + (["--db-user", "mlflow"] if seed % 2 else [])
    problems: list[str] = []
    started = time.perf_counter()
    try:
        first = CliRunner().invoke(app, args)
        seconds = time.perf_counter() - started
        if first.exit_code != 0:
            tail = " ".join(first.output.split())[-300:]
            problems.append(f"up exited {first.exit_code}: ...{tail}")
        if len(fake.state.get("sql_instances", {})) != 1:
            problems.append(f"{len(fake.state.get('sql_instances', {}))} Cloud SQL instances")
        for secret, versions in fake.state.get("secret_versions", {}).items():
            if len(versions) != 1:
                problems.append(f"{len(versions)} versions of {secret.rsplit('/', 1)[-1]}")
        builds = [r for r in fake.mutating_requests() if r.api == "cloudbuild" and r.route == BUILDS_ROUTE]
        applied_builds = [r for r in builds if r.status < 400 or r.lost]
        if len(applied_builds) != 1:
            problems.append(f"{len(applied_builds)} builds started")
        for instance, users in fake.state.get("sql_users", {}).items():
            names = [u["name"] for u in users]
            if len(names) != len(set(names)):
                problems.append(f"duplicate MySQL users on {instance}: {names}")
        fake.chaos = None
        if not problems:
            fake.clear_log()
            second = CliRunner().invoke(app, args)
            if second.exit_code != 0:
                problems.append(f"second up exited {second.exit_code}")
            mutating = [f"{r.method} {r.path}" for r in fake.mutating_requests()]
            if mutating:
                problems.append(f"second up sent {len(mutating)} mutating requests: {mutating[:3]}")
    finally:
        fake.stop()
    return problems, {"seconds": seconds, "transient": chaos.transient, "lost": chaos.lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--transient", type=float, default=0.05, help="share of requests refused before applying")
    parser.add_argument("--lost", type=float, default=0.1, help="share of applied writes whose answer is lost")
    options = parser.parse_args()

    os.environ.update(
        MLFLOW_GCP_RETRY_DELAY="0.01",
        MLFLOW_GCP_POLL_MIN="0.01",
        MLFLOW_GCP_PROJECT="demo-project",
        MLFLOW_GCP_REGION="europe-west1",
        MLFLOW_GCP_CONTAINER_DIR=str(ROOT / "container"),
        COLUMNS="200",
    )
    os.chdir(tempfile.mkdtemp(prefix="exactly-once-"))
    failed, times, transient, lost = 0, [], 0, 0
    seeds = range(options.first_seed, options.first_seed + options.seeds)
    for seed in seeds:
        problems, figures = one_seed(seed, options.transient, options.lost)
        times.append(figures["seconds"])
        transient += int(figures["transient"])
        lost += int(figures["lost"])
        if problems:
            failed += 1
            print(f"seed {seed}: FAILED: " + "; ".join(problems), flush=True)
    print(
        f"exactly_once: {len(seeds) - failed}/{len(seeds)} seeds converged with no duplicate "
        f"(transient rate {options.transient}, lost-answer rate {options.lost}); "
        f"faults injected: {transient} transient errors, {lost} lost answers; "
        f"up took median {statistics.median(times):.2f} s, max {max(times):.2f} s"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
