"""What `status`, the summary of `up` and the live view look like on an 80-column terminal: a line per resource
(grants folded in), live checks with a short cause, advice that fits the problem; full names with `--wide`."""

from __future__ import annotations

import socket
import threading
from io import StringIO

import pytest

from mlflow_gcp.cli.console import out
from mlflow_gcp.config import SECRET_MLFLOW
from mlflow_gcp.resources import server_check
from tests.helpers import cli

INSTANCE = "mlflow-tracking-database"
MARKS = ("ok ", "missing ", "drift ", "failed ")


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setattr(out, "width", 80)


def assert_fits(text: str, width: int = 80) -> None:
    """No line is longer than `width`, but a URL alone on its line: cut, it would not open."""
    too_long = [line for line in text.splitlines() if len(line) > width and not line.strip().startswith("https://")]
    assert not too_long, too_long


def marked(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(MARKS)]


def test_a_healthy_deployment_is_a_line_per_resource_with_grants_folded_in(fake, narrow, double):
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    lines = marked(result.stdout)
    assert not any("grant" in line for line in lines)  # folded into the secret, bucket, service account lines
    secrets = [line for line in lines if line.split()[1:3] == ["secret", "mlflow-credentials"]]
    assert len(secrets) == 1 and "version 1" in secrets[0] and "secretAccessor" in secrets[0]
    bucket = next(line for line in lines if line.split()[1] == "bucket")
    assert "objectAdmin" in bucket
    # resources without their grants (encryption and settings record included), the point-in-time window, live
    # checks, the MLflow version and the two schemas (issue 24), the MLflow version recorded on the instance
    assert len(lines) == 22 + 1 + 3 + 3 + 1
    assert all(line.startswith("ok ") for line in lines)


def test_wide_shows_full_names_and_every_grant(fake, narrow, double, monkeypatch):
    monkeypatch.setattr(out, "width", 250)
    result = cli("status", "--wide")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Cloud SQL instance mlflow-tracking-database" in text
    assert "secretmanager.secretAccessor" in text and "deletion protection: on" in text


def test_a_missing_grant_marks_its_resource(fake, narrow, double):
    key = f"projects/demo-project/secrets/{SECRET_MLFLOW}"
    fake.policies[key] = {**fake.policies[key], "bindings": []}
    result = cli("status")
    assert result.exit_code == 1
    assert_fits(result.stdout)
    line = next(line for line in marked(result.stdout) if "secret mlflow-credentials" in line)
    assert line.startswith("missing") and "secretAccessor not granted" in line
    assert "mlflow-gcp up" in result.stdout


def test_an_unreachable_server_is_one_short_cause_per_check_and_network_advice(fake, narrow, double):
    double.stop()
    result = cli("status")
    assert result.exit_code == 1
    assert_fits(result.stdout)
    checks = [line for line in marked(result.stdout) if line.startswith("failed")]
    assert len(checks) == 3 and all(line.rstrip().endswith("connection refused") for line in checks)
    assert "HTTPConnectionPool" not in result.output and "Errno" not in result.output
    assert "check the network" in result.stdout
    assert "mlflow-gcp up" not in result.stdout  # nothing is missing: `up` would not help

    debug = cli("--debug", "status")
    assert "HTTPConnectionPool" in debug.stdout  # the full error, only when asked


def test_an_unhealthy_server_points_at_its_logs(fake, narrow, double):
    fake.sql_users[INSTANCE][0]["password"] = "changed-behind-our-back"
    result = cli("status")
    assert result.exit_code == 1
    assert_fits(result.stdout)
    health = next(line for line in marked(result.stdout) if " health " in line)
    assert health.startswith("failed") and "503, expected 200" in health
    text = " ".join(result.stdout.split())
    assert (
        "    https://console.cloud.google.com/run/detail/europe-west1/mlflow/logs?project=demo-project\n"
        in result.stdout
    )
    assert "gcloud run services logs read mlflow --region europe-west1 --project demo-project" in text
    # The password was changed behind the tool's back: `up` alone would not fix it (it keeps the recorded one), so
    # it is not the advice; rotating the database password is (issue 20).
    assert "Run `mlflow-gcp up`" not in text
    assert "Run `mlflow-gcp credentials rotate --database`" in text


def test_drift_fits_and_advises_up(fake, narrow, double):
    fake.sql_instances[INSTANCE]["settings"]["tier"] = "db-g1-small"
    result = cli("status")
    assert_fits(result.stdout)
    line = next(line for line in marked(result.stdout) if f"sql instance {INSTANCE}" in line)
    assert line.startswith("drift") and "tier" in line
    assert "mlflow-gcp up" in result.stdout


def test_up_summary_fits_80_columns_and_wide_has_full_names(fake, narrow, double):
    result = cli("up", "--max-instances", "5")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    summary = result.stdout.split("Summary")[-1]
    assert "~ run service mlflow: scaling" in summary

    wide = cli("up", "--max-instances", "6", "--wide")
    assert wide.exit_code == 0
    assert "Cloud Run service mlflow" in " ".join(wide.stdout.split())


def test_first_up_summary_fits_80_columns(fake, tmp_path, monkeypatch, narrow):
    from tests.helpers import ALL_APIS_ENABLED
    from tests.server_double import MlflowDouble, build_context, forbid_non_loopback, point_service_at

    forbid_non_loopback(monkeypatch)
    build_context(tmp_path, monkeypatch)
    fake.enabled |= ALL_APIS_ENABLED
    double = MlflowDouble(fake)
    point_service_at(monkeypatch, double)
    try:
        result = cli("up")
        assert result.exit_code == 0, result.output
        assert_fits(result.stdout)
        summary = result.stdout.split("Summary")[-1].splitlines()
        steps = [line for line in summary if line.split()[:1] and line.split()[0] in ("database", "secret-access")]
        assert len(steps) == 2 and all("+ " in line for line in steps)  # one line each, however many changes
    finally:
        double.stop()


@pytest.mark.parametrize("width", [100, 80])
def test_live_view_keeps_the_time_whole(width):
    from rich.console import Console

    from mlflow_gcp.cli.progress import StepView
    from mlflow_gcp.engine.base import Event, Status
    from mlflow_gcp.steps import STEPS

    terminal = Console(file=StringIO(), width=width, force_terminal=True, color_system=None)
    view = StepView(list(STEPS), console=terminal)
    view.on_event(Event("database", "status", status=Status.RUNNING))
    view.on_event(Event("database", "log", "waiting for the Cloud SQL instance mlflow-tracking-database (10-20 min)"))
    view.on_event(Event("service-account", "status", status=Status.RUNNING))
    view.on_event(Event("service-account", "status", status=Status.UNCHANGED))
    screen = Console(file=StringIO(), width=width, color_system=None)
    screen.print(view._progress.get_renderable())
    text = screen.file.getvalue()
    assert_fits(text, width)
    database = next(line for line in text.splitlines() if " database " in line)
    assert "0:00:0" in database and "service-account unchanged  0:00:0" in text
    assert "…" not in database.split("0:00:0")[0]


# -- short causes of a check without an answer -----------------------------------------------------------------
def test_a_host_that_does_not_resolve(monkeypatch):
    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    check = server_check.check_health("https://mlflow-abc-ew.a.run.app")
    assert (check.ok, check.status, check.detail) == (False, None, "cannot resolve host")
    assert "Name or service not known" in check.error


def test_a_server_that_never_answers_times_out(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    monkeypatch.setattr(server_check, "TIMEOUT", 0.5)
    try:
        check = server_check.check_health(f"http://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert (check.ok, check.status, check.detail) == (False, None, "timed out after 0.5 s")


def test_a_tls_failure():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_in_plain_text() -> None:
        connection, _ = listener.accept()
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        connection.close()

    threading.Thread(target=answer_in_plain_text, daemon=True).start()
    try:
        check = server_check.check_health(f"https://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert (check.ok, check.status, check.detail) == (False, None, "TLS error")


def test_up_json_has_full_names_on_stdout_and_nothing_else(fake, narrow, double):
    import json

    result = cli("up", "--max-instances", "5", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["url"] == double.urls[1]
    steps = {s["step"]: s for s in document["steps"]}
    assert steps["deploy"]["result"] == "updated"
    [change] = steps["deploy"]["changes"]
    assert change["resource"] == "Cloud Run service mlflow" and change["fields"] == ["scaling"]
    assert steps["apis"] == {
        "step": "apis",
        "result": "unchanged",
        "seconds": steps["apis"]["seconds"],
        "changes": [],
        "error": None,
    }
