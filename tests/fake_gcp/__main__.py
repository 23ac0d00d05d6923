"""Serve the fake Google APIs on a port, to try the CLI by hand:

python -m tests.fake_gcp --port 8090 --latency sqladmin.create=20
MLFLOW_GCP_API_ENDPOINT=http://127.0.0.1:8090 mlflow-gcp up --project demo-project
"""

from __future__ import annotations

import argparse
import time

from tests.fake_gcp.server import FakeGoogle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency", action="append", default=[], help="KIND=SECONDS, e.g. sqladmin.create=20")
    args = parser.parse_args()
    fake = FakeGoogle()
    for item in args.latency:
        kind, _, seconds = item.partition("=")
        fake.latency[kind] = float(seconds)
    print(f"Fake Google APIs on {fake.start(args.port)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
