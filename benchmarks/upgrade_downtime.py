"""How long the server is unavailable during an MLflow upgrade (issue 24), in the simulation.

Run from the repository root: `python benchmarks/upgrade_downtime.py [--scale 60] [--runs 3]`.

A deployment of MLflow 3.17.2 is made with `up` against the local fake of the Google APIs, its server answered by
the stand-in of tests/server_double.py (which serves the maintenance page as the image does). Then the build
context pins 3.18.0 and `up --yes` upgrades it: maintenance revision, on-demand backup, migration job, serving
revision. A client polls an authenticated MLflow API call all along; every answer that is not 200 (503 in
maintenance, or no answer) counts as unavailable. The fake's operations take Google's typical durations divided by
`--scale` (60: a minute lasts a second), and the figures are printed back in Google's time. Nothing leaves this
machine.

Assumed durations (typical, for a small instance such as db-f1-micro with a few GB of data; measure yours with
`gcloud sql operations list` and the Cloud Run console):
- Cloud Run revision rollout, until the new revision serves: 30 s (a small image already in Artifact Registry; the
  old revision serves meanwhile: https://cloud.google.com/run/docs/managing/revisions). The maintenance revision
  and the serving revision each take one.
- Cloud SQL on-demand backup: 120 s (snapshot-based and incremental after the first; Google gives no bound:
  https://cloud.google.com/sql/docs/mysql/backup-recovery/backups. Minutes for a few GB is common; a large first
  backup takes much longer).
- Cloud Run job execution: 20 s to start a task (image pull, VPC egress) plus 40 s for MLflow's migrations on a
  small database (https://cloud.google.com/run/docs/execute/jobs); the migrations' own time grows with the tables
  they rewrite.
- Cloud Run job create/update: 5 s; a log line reaching Cloud Logging: 5 s
  (https://cloud.google.com/logging/docs/view/logs-explorer-interface: "it might take a few minutes").
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

OLD, NEW = "3.17.2", "3.18.0"
DURATIONS = {  # Google's seconds, see the module's docstring
    "run.deploy": 30.0,
    "sqladmin.backup": 120.0,
    "run.execution": 60.0,
    "run.jobs": 5.0,
    "logging.ingest": 5.0,
}
SEARCH = "/api/2.0/mlflow/experiments/search"


def pin(context: Path, version: str) -> None:
    (context / "requirements.txt").write_text(f"mlflow[auth]=={version}\n")


def one_run(scale: float) -> dict[str, float]:
    import json

    from tests.fake_gcp.apis import run
    from tests.fake_gcp.server import FakeGoogle
    from tests.helpers import ALL_APIS_ENABLED
    from tests.server_double import MlflowDouble
    from typer.testing import CliRunner

    from mlflow_gcp.cli import app

    fake = FakeGoogle()
    os.environ["MLFLOW_GCP_API_ENDPOINT"] = fake.start()
    fake.enabled |= ALL_APIS_ENABLED
    double = MlflowDouble(fake)
    run.service_urls = lambda project, location, service: double.urls
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python", "-m", "http.server"]\n')
        pin(context, OLD)
        os.environ["MLFLOW_GCP_CONTAINER_DIR"] = str(context)
        os.chdir(tmp)
        try:
            first = CliRunner().invoke(app, ["up"])
            if first.exit_code != 0:
                raise SystemExit(f"the first up failed: {first.output[-2000:]}")
            fake.sql_set_data("mlflow-tracking-database", {"runs": ["a"], "schema": OLD})

            def migrate(job, execution):
                fake.sql_set_data("mlflow-tracking-database", {"runs": ["a"], "schema": NEW})
                result = {"outcome": "migrated", "mlflow": NEW, "error": None}
                return "succeeded", ["mlflow-gcp: migration result: " + json.dumps(result)]

            fake.run_jobs.outcome = migrate
            fake.latency.update({kind: seconds / scale for kind, seconds in DURATIONS.items()})
            user, password = double.admin
            header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            answers: list[tuple[float, int]] = []
            done = threading.Event()

            def poll() -> None:
                while not done.is_set():
                    answers.append((time.monotonic(), double.answer(SEARCH, header)[0]))
                    time.sleep(0.005)

            poller = threading.Thread(target=poll, daemon=True)
            pin(context, NEW)
            started = time.monotonic()
            poller.start()
            upgrade = CliRunner().invoke(app, ["up", "--yes"])
            ended = time.monotonic()
            done.set()
            poller.join()
            if upgrade.exit_code != 0 or double.mlflow_version != NEW:
                raise SystemExit(f"the upgrade failed: {upgrade.output[-3000:]}")
        finally:
            double.stop()
            fake.stop()
    down = 0.0
    for (at, status), (after, _) in itertools.pairwise(answers):
        if status != 200:
            down += after - at
    return {"unavailable": down * scale, "upgrade": (ended - started) * scale}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=60.0, help="Google seconds per second of the simulation")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    os.environ.setdefault("MLFLOW_GCP_PROJECT", "demo-project")
    os.environ.setdefault("MLFLOW_GCP_REGION", "europe-west1")
    os.environ["MLFLOW_GCP_POLL_MIN"] = str(0.25 / options.scale)  # the tool's first polls, in simulated time
    os.environ["MLFLOW_GCP_RETRY_DELAY"] = "0.01"
    os.environ["MLFLOW_GCP_WAIT_SCALE"] = str(1 / options.scale)
    os.environ["MLFLOW_GCP_LOGIN_TIMEOUT"] = "5"
    os.environ["CLOUDSDK_CONFIG"] = tempfile.mkdtemp()
    print("assumed durations (Google's seconds):", ", ".join(f"{k} {v:g}" for k, v in DURATIONS.items()))
    print(f"simulation: {options.scale:g} Google seconds per second")
    results = [one_run(options.scale) for _ in range(options.runs)]
    for i, r in enumerate(results, 1):
        print(f"run {i}: server unavailable {r['unavailable']:.0f} s of an upgrade of {r['upgrade']:.0f} s")
    down = statistics.median(r["unavailable"] for r in results)
    total = statistics.median(r["upgrade"] for r in results)
    print(f"median: unavailable {down:.0f} s ({down / 60:.1f} min); the whole `up` {total:.0f} s")
    floor = DURATIONS["sqladmin.backup"] + DURATIONS["run.execution"] + DURATIONS["run.deploy"]
    print(f"lower bound from the assumptions alone (backup + job + serving rollout): {floor:.0f} s")


if __name__ == "__main__":
    main()
