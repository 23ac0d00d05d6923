"""The maintenance server: what the service answers while `mlflow-gcp up` backs up and migrates the database.

Started by the entrypoint when MLFLOW_GCP_MAINTENANCE is set (its value is the reason, e.g. `upgrade`). It opens no
database connection and imports no MLflow: `/health` answers 200, so Cloud Run's startup probe passes; every other
request 503 with Retry-After, so no write lands after the backup (a rollback to that backup would lose it). The body
is MLflow's error shape, which the mlflow client shows as is.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAINTENANCE_VAR = "MLFLOW_GCP_MAINTENANCE"
RETRY_AFTER_SECONDS = 60
HEALTH_PATH = "/health"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def unavailable_body(reason: str) -> bytes:
    return json.dumps({
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": f"MLflow is being upgraded (maintenance: {reason}); try again in a few minutes.",
    }).encode()


def handler_class(reason: str) -> type[BaseHTTPRequestHandler]:
    body = unavailable_body(reason)

    class MaintenanceHandler(BaseHTTPRequestHandler):
        server_version = "mlflow-gcp-maintenance"
        sys_version = ""

        def answer(self) -> None:
            if self.path.split("?", 1)[0] == HEALTH_PATH and self.command in ("GET", "HEAD"):
                self.reply(200, b"OK", "text/plain; charset=utf-8")
            else:
                self.reply(503, body, "application/json", {"Retry-After": str(RETRY_AFTER_SECONDS)})

        def reply(self, status: int, content: bytes, content_type: str, headers: dict[str, str] | None = None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        def log_message(self, format, *args):  # Cloud Run logs requests itself
            pass

    for method in METHODS:
        setattr(MaintenanceHandler, f"do_{method}", MaintenanceHandler.answer)
    return MaintenanceHandler


def serve(port: int, reason: str) -> None:
    server = ThreadingHTTPServer(("0.0.0.0", port), handler_class(reason))
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()
