"""One side of server_instructions.py: the server's ASGI app in this process, N logging calls made straight to it.

    python benchmarks/asgi_calls.py guarded|open log_metric|log_batch N

The environment is the container's uvicorn worker's (server_instructions.py copies it from a running entrypoint):
guarded is `mlflow_gcp_server.app:create_app()` (what `--app-name mlflow-gcp` serves), open is MLflow's own
`mlflow.server.fastapi_app:app` (no `--app-name`: the login off). BENCH_HOST and BENCH_LOGIN ("user:password") say
what the calls carry; BENCH_AS_USER=1 logs as a user who is not an admin. With CALLGRIND=1 (under valgrind's
callgrind, started with --instr-atstart=no) only the N measured calls are counted. Prints one line:
`calls=N cpu_ms_per_call=...`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time

USER = ("bench-user", "bench-user-password-1234")
BATCH_SIZE = 100
WARM_UP_CALLS = 30


def load_app(side: str):
    if side == "guarded":
        from mlflow_gcp_server.app import create_app

        return create_app()
    from mlflow.server.fastapi_app import app

    return app


class Caller:
    def __init__(self, app, host: str, login: str):
        self.app = app
        self.host = host.encode()
        self.authorization = b"Basic " + base64.b64encode(login.encode())

    async def post(self, path: str, body: dict, accepted: tuple[int, ...] = (200,)) -> dict:
        data = json.dumps(body).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", self.host), (b"authorization", self.authorization),
                             (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
        received = False

        async def receive():
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects

        answer = {"status": 0, "body": b""}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        if answer["status"] not in accepted:
            raise SystemExit(f"{path}: {answer['status']} {answer['body'][:300]!r}")
        return json.loads(answer["body"] or b"{}")


def callgrind(switch: str) -> None:
    if os.environ.get("CALLGRIND"):
        subprocess.run(["callgrind_control", "--instr=" + switch, str(os.getpid())], capture_output=True, check=True)


async def measure(side: str, method: str, calls: int) -> None:
    caller = Caller(load_app(side), os.environ["BENCH_HOST"], os.environ["BENCH_LOGIN"])
    if os.environ.get("BENCH_AS_USER"):
        if side == "guarded":  # one auth database: the user then exists for every side (the open one ignores it)
            await caller.post("/api/2.0/mlflow/users/create", {"username": USER[0], "password": USER[1]},
                              accepted=(200, 400))
        caller = Caller(caller.app, os.environ["BENCH_HOST"], ":".join(USER))
    experiment = await caller.post("/api/2.0/mlflow/experiments/create", {"name": f"calls-{side}-{time.time_ns()}"})
    run = await caller.post("/api/2.0/mlflow/runs/create", {"experiment_id": experiment["experiment_id"]})
    run_id, now = run["run"]["info"]["run_id"], int(time.time() * 1000)

    def request(step: int) -> tuple[str, dict]:
        if method == "log_metric":
            return "/api/2.0/mlflow/runs/log-metric", {"run_id": run_id, "key": "m", "value": 0.5, "timestamp": now,
                                                       "step": step}
        return "/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": [
            {"key": f"b{index}", "value": 0.5, "timestamp": now, "step": step} for index in range(BATCH_SIZE)]}

    for step in range(WARM_UP_CALLS):
        await caller.post(*request(step))
    callgrind("on")
    started = time.process_time()
    for step in range(WARM_UP_CALLS, WARM_UP_CALLS + calls):
        await caller.post(*request(step))
    cpu = time.process_time() - started
    callgrind("off")
    print(f"calls={calls} cpu_ms_per_call={cpu / calls * 1000:.3f}")


if __name__ == "__main__":
    asyncio.run(measure(sys.argv[1], sys.argv[2], int(sys.argv[3])))
