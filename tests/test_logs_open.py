"""`mlflow-gcp logs` (Cloud Logging entries.list through the fake, filtered on the service, --since, --errors,
--follow ended by Ctrl-C, --json, no secret printed) and `mlflow-gcp open` (the URL where there is no browser)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from mlflow_gcp.operate import logs as source
from tests.helpers import ALL_APIS_ENABLED, cli

URL = "https://mlflow-123456789.europe-west1.run.app"


def ago(minutes: float) -> str:
    return source.rfc3339(datetime.now(timezone.utc) - timedelta(minutes=minutes))


@pytest.fixture
def entries(fake):
    fake.add_log_entry(ago(300), "old start-up line")
    fake.add_log_entry(ago(30), "Listening at: http://0.0.0.0:8080")
    fake.add_log_entry(
        ago(20), "Traceback: OperationalError (2003) mysql+pymysql://root:s3cr3t-pw@10.1.2.3/db", severity="ERROR"
    )
    fake.add_log_entry(ago(10), "another service's line", service="other")
    fake.add_log_entry(
        ago(5),
        severity="INFO",
        httpRequest={
            "requestMethod": "GET",
            "requestUrl": "https://mlflow-x.run.app/health?token=abc",
            "status": 200,
            "latency": "0.01s",
        },
    )
    return fake


def test_logs_show_the_services_recent_lines_oldest_first_and_no_secret(entries):
    result = cli("logs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout  # not the 5 h old line, not the other service's
    assert "Listening at" in lines[0] and "ERROR" in lines[1] and "GET https://mlflow-x.run.app/health 200" in lines[2]
    assert "s3cr3t-pw" not in result.output and "root:***@" in result.stdout
    assert "token=abc" not in result.output
    sent = entries.requests(mutating=False)
    listed = [r for r in sent if r.api == "logging"]
    assert listed and all(r.method == "POST" for r in listed)
    assert entries.mutating_requests() == []


def test_logs_errors_since_and_json(entries):
    result = cli("logs", "--errors", "--since", "6h", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [e["severity"] for e in document["entries"]] == ["ERROR"]
    assert "s3cr3t-pw" not in result.stdout
    assert len(json.loads(cli("logs", "--since", "6h", "--json").stdout)["entries"]) == 4
    bad = cli("logs", "--since", "yesterday")
    assert bad.exit_code == 2 and "30s, 10m, 1h or 2d" in bad.stderr and "Traceback" not in bad.output


def test_logs_follow_prints_new_lines_once_and_ctrl_c_ends_cleanly(entries, monkeypatch):
    from mlflow_gcp.cli import logs as command

    polls = []

    def pause(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            entries.add_log_entry(ago(0), "a new line")
        elif len(polls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(command, "_pause", pause)
    result = cli("logs", "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("a new line") == 1 and result.stdout.count("Listening at") == 1
    assert "Stopped." in result.stderr and "Traceback" not in result.stderr
    assert polls == [source.FOLLOW_INTERVAL_SECONDS] * 3


def job_entry(fake, minutes: float, text: str, *, job: str = "mlflow-migrate", severity: str = "DEFAULT") -> None:
    """A line of a Cloud Run job's execution, as Cloud Run writes it (tests/fake_gcp/apis/run_jobs.py)."""
    fake.add_log_entry(
        ago(minutes),
        text,
        severity=severity,
        logName="projects/demo-project/logs/run.googleapis.com%2Fstderr",
        resource={
            "type": "cloud_run_job",
            "labels": {"job_name": job, "location": "europe-west1", "project_id": "demo-project"},
        },
        labels={"run.googleapis.com/execution_name": f"{job}-x7k2p", "run.googleapis.com/task_index": "0"},
    )


def test_logs_show_the_migration_jobs_lines_labelled_among_the_servers(entries):
    """An MLflow upgrade's job (`{service}-migrate`) writes to Cloud Logging as a `cloud_run_job`: its lines are
    shown in time order with the server's, each labelled with its execution; another job's are not."""
    job_entry(entries, 25, "mlflow-gcp: migration result: {\"outcome\": \"failed\", \"error\": \"Table exists\"}")
    job_entry(entries, 24, "Container called exit(1).", severity="ERROR")
    job_entry(entries, 23, "a line of another job", job="nightly")
    result = cli("logs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    assert "Listening at" in lines[0]
    assert "migration job mlflow-migrate-x7k2p: mlflow-gcp: migration result:" in lines[1]
    assert "migration job mlflow-migrate-x7k2p: Container called exit(1)." in lines[2]
    assert "another job" not in result.stdout
    errors = json.loads(cli("logs", "--errors", "--json").stdout)["entries"]
    assert [(e["source"], e["text"]) for e in errors] == [
        ("migration job mlflow-migrate-x7k2p", "Container called exit(1)."),
        ("", "Traceback: OperationalError (2003) mysql+pymysql://root:***@10.1.2.3/db"),
    ]


def test_open_prints_the_url_without_a_terminal_and_says_when_nothing_is_deployed(fake, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: opened.append(url) or True)
    result = cli("open")
    assert result.exit_code == 1 and "Nothing is deployed" in result.stderr
    fake.enabled |= ALL_APIS_ENABLED
    result = cli("open")
    assert result.exit_code == 1 and "up --project demo-project" in result.stderr
    name = "projects/demo-project/locations/europe-west1/services/mlflow"
    fake.state["run_services"][name] = {"name": name, "uri": URL, "urls": [URL], "generation": 1}
    result = cli("open")  # CliRunner's stdout is not a terminal: the URL, no browser
    assert result.exit_code == 0, result.output
    assert result.stdout == URL + "\n" and opened == []
    from mlflow_gcp.cli import open_ui

    monkeypatch.setattr(open_ui, "_terminal", lambda: True)
    result = cli("open")
    assert result.exit_code == 0 and opened == [URL] and result.stdout == ""
    assert f"Opened {URL}" in result.stderr
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: False)  # no browser (a server, SSH)
    assert cli("open").stdout == URL + "\n"
