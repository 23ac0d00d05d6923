"""Figures for issue 9: how long the preflight of `up` takes when all is well, in a fresh process.

Run from the repository root: `python benchmarks/preflight_bench.py`. The preflight runs against the local fake of
the Google APIs, each request delayed by a simulated round trip to Google (80 ms by default; `--rtt 0.15` for a
slower link). Target: well under a second; its requests run at once, so it costs about one round trip plus the
client set-up, not one round trip per request. The import of the client libraries is shown apart: `up` pays it
whether or not the preflight runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

CHILD = """
import time
t0 = time.perf_counter()
from mlflow_gcp.config import Settings, validate
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.preflight import run_preflight
from mlflow_gcp.steps import STEPS
# The Google client libraries the preflight uses; `up` imports them anyway (its steps need them).
import google.api_core.exceptions, googleapiclient.discovery, google.auth.transport.requests  # noqa: E401
t1 = time.perf_counter()
settings = validate(Settings(project="demo-project", region="europe-west1"))
report = run_preflight(settings, Clients(settings.project), steps=[s.name for s in STEPS])
t2 = time.perf_counter()
assert report.findings == [], report.findings
print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt", type=float, default=0.08, help="simulated round trip to Google, seconds")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from tests.fake_gcp.server import FakeGoogle
    from tests.helpers import ALL_APIS_ENABLED

    fake = FakeGoogle(enabled=set(ALL_APIS_ENABLED))
    handle = fake.handle

    def slow_handle(*a, **k):
        time.sleep(args.rtt)
        return handle(*a, **k)

    fake.handle = slow_handle
    url = fake.start()
    env = {**os.environ, "MLFLOW_GCP_API_ENDPOINT": url, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    imports, checks = [], []
    try:
        for _ in range(args.runs):
            fake.clear_log()
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            a, b = (float(x) for x in out.stdout.split())
            imports.append(a)
            checks.append(b)
        requests = len(fake.log)
    finally:
        fake.stop()
    print(f"simulated round trip       {args.rtt * 1000:.0f} ms per request")
    print(f"requests of one preflight  {requests} (sent at once, after the credentials)")
    print(f"preflight, median of {args.runs}    {statistics.median(checks):.3f} s  (max {max(checks):.3f} s)")
    print(f"  if sent one by one       >= {requests * args.rtt:.3f} s")
    print(f"imports before it          {statistics.median(imports):.3f} s  (the client libraries `up` needs anyway)")


if __name__ == "__main__":
    main()
