"""What the login costs a logging call, in CPU instructions: the guarded app against the login off (issue 19).

server_throughput.py measures time, which other work on a shared machine disturbs (its rounds spread by ±15%).
Instructions are counted exactly by valgrind's callgrind, whatever else runs: the same calls give the same count
to within 0.2%. Each side serves its ASGI app in its own process (benchmarks/asgi_calls.py) with the environment
of the container's uvicorn worker (copied from an entrypoint started here, on a MariaDB started here) and makes
the calls straight to the app; only those calls are counted:
- guarded: `mlflow_gcp_server.app:create_app()`, what the image serves (`--app-name mlflow-gcp`);
- open: MLflow's app with the login off, the issue's baseline.
uvicorn's HTTP parsing is left out on both sides, so the ratio is a little lower than a served request's.
Needs `valgrind` (Debian package). Target: ratio open / guarded >= 0.9x for every workload.

    python benchmarks/server_instructions.py [--calls 100] [--as-user]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

import server_throughput as throughput  # noqa: E402
from asgi_calls import BATCH_SIZE  # noqa: E402
from server_start import rehearsal_servers  # noqa: E402

WORKLOADS = (("log_metric", 1), (f"log_batch({BATCH_SIZE})", 0.3))  # log_batch: fewer calls


def worker_environment(process: subprocess.Popen) -> dict[str, str]:
    """The environment of the entrypoint's uvicorn worker (the process that serves)."""
    found = subprocess.run(["pgrep", "-s", str(process.pid), "-f", "uvicorn"], capture_output=True, text=True)
    worker = found.stdout.split()[0]
    raw = Path(f"/proc/{worker}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def instructions(side: str, method: str, calls: int, env: dict[str, str], work_dir: Path) -> int:
    out = work_dir / f"callgrind.{side}.{method}"
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                    sys.executable, str(BENCHMARKS / "asgi_calls.py"), side, method, str(calls)],
                   env={**env, "CALLGRIND": "1"}, check=True, capture_output=True)
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="log_metric calls per side (log_batch: 30%% of it)")
    parser.add_argument("--as-user", action="store_true", help="log as a user who is not an admin")
    arguments = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed: apt-get install valgrind")
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "NO_PROXY": "127.0.0.1"})
    with rehearsal_servers() as servers, tempfile.TemporaryDirectory(prefix="mlflow-instructions-") as tmp:
        processes, targets = throughput.start_all(servers, [throughput.GUARDED], as_user=False)
        try:
            target = targets[throughput.GUARDED]
            env = worker_environment(target.process)
        finally:
            for process in processes:
                throughput.stop(process)
        env.update(BENCH_HOST=target.tracking_uri.split("//", 1)[1], BENCH_LOGIN=":".join(target.login),
                   BENCH_AS_USER="1" if arguments.as_user else "")
        print(f"instructions per call (valgrind callgrind); {'a non-admin user' if arguments.as_user else 'the admin'}"
              f"; in-process ASGI calls, no uvicorn")
        print(f"{'workload':>16} {'guarded':>12} {'open':>12} {'ratio':>7}")
        for label, share in WORKLOADS:
            method = label.split("(")[0]
            calls = max(10, int(arguments.calls * share))
            guarded = instructions(throughput.GUARDED, method, calls, env, Path(tmp)) / calls
            open_ = instructions(throughput.OPEN, method, calls, env, Path(tmp)) / calls
            print(f"{label:>16} {guarded / 1e6:11.2f}M {open_ / 1e6:11.2f}M {open_ / guarded:6.3f}x")
    print("ratio: open / guarded (above 1: the guarded app spends fewer). Target: every ratio >= 0.90x")


if __name__ == "__main__":
    main()
