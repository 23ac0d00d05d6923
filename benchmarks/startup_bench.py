"""Start-up of the CLI against a bare `import typer, rich` (issue 25, point 10).

Run from the repository root: `python benchmarks/startup_bench.py [RUNS]`. Targets: `mlflow-gcp --help` at most
1.5x the bare import, `mlflow-gcp up --help` at most 2.5x (it imports the settings' declarations and builds the
command's ~45 options). The verdict is on the best of RUNS (default 21) of the CPU time (user + system) the
process used, which a shared, loaded machine disturbs far less than wall time; the median CPU time's ratio and
the median wall time are printed too. Bytecode is written first (a warm-up run), as pip does on install: the
environment's PYTHONDONTWRITEBYTECODE would otherwise make every run compile the tool's modules. `python -X
importtime -m mlflow_gcp up --help` shows what is imported.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    return env


def measure(argv: list[str], runs: int) -> tuple[float, float, float]:
    """(best CPU seconds, median CPU seconds, median wall seconds) of `runs` runs, after one warm-up run."""
    env = environment()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    cpu, wall = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(cpu), statistics.median(cpu), statistics.median(wall)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    python = sys.executable
    bare_cpu, bare_median, bare_wall = measure([python, "-c", "import typer, rich"], runs)
    print(f"{'command':34} {'CPU s':>7} {'x bare':>7} {'median x':>8} {'wall s':>7}   target")
    print(f"{'python -c import typer, rich':34} {bare_cpu:7.3f} {1:7.2f} {1:8.2f} {bare_wall:7.3f}")
    for label, args, target in (
        ("mlflow-gcp --help", ["--help"], 1.5),
        ("mlflow-gcp up --help", ["up", "--help"], 2.5),
        ("mlflow-gcp step apis --help", ["step", "apis", "--help"], None),
    ):
        cpu, median, wall = measure([python, "-m", "mlflow_gcp", *args], runs)
        ratio = cpu / bare_cpu
        verdict = "" if target is None else f"<= {target}x {'ok' if ratio <= target else 'MISSED'}"
        print(f"{label:34} {cpu:7.3f} {ratio:7.2f} {median / bare_median:8.2f} {wall:7.3f}   {verdict}")


if __name__ == "__main__":
    main()
