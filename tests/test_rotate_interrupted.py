"""A rotation that fails or is interrupted leaves nothing that the next `up` deploys by mistake (issue 12).

The version a service uses is the one its user has (recorded on the secret): after `rotate` is stopped at any
stage (SIGINT, SIGKILL) or cannot reach the server, `up` runs the service with the database's password, and
`rotate` again finishes the job.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from mlflow_gcp.config import SECRET_MLFLOW, SECRET_MYSQL
from tests.fake_gcp.server import PROJECT
from tests.helpers import cli, flat
from tests.test_credentials import (
    ROTATE_SECRETS,
    _pinned_value,
    assert_converged,
    credentials,
    db_password,
    pinned,
    team_login_works,
    versions,
)
from tests.test_resume import kill_when


def assert_service_runs_with_the_database_password(fake, double) -> None:
    """The service's MySQL version is the user's password, its admin login is the one `credentials` prints."""
    assert _pinned_value(fake, SECRET_MYSQL) == f"root:{db_password(fake)}"
    assert double.database_ok()
    assert team_login_works()


def assert_nothing_half_made(fake) -> None:
    """No rotation mark is left, and only versions nobody uses stay besides the applied ones (reported by up)."""
    for secret_id in ROTATE_SECRETS:
        secret = fake.state["secrets"][f"projects/demo-project/secrets/{secret_id}"]
        annotations = secret.get("annotations", {})
        assert "mlflow-gcp-rotating-to" not in annotations, (secret_id, annotations)
        assert annotations.get("mlflow-gcp-applied-version") == pinned(fake, secret_id)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- the scenario of the issue: the server cannot be reached -------------------------------------------------
def test_rotate_with_an_unreachable_server_fails_before_changing_anything_and_up_keeps_the_database_password(
    fake, double, monkeypatch
):
    """Issue 20: reachability is checked before the first change, not after two rollouts."""
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "600")  # the check must end because nothing answers, not by time
    old = credentials()
    service = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    reachable = service["uri"]
    service["uri"] = closed_port_url()  # a laptop on a VPN that blocks the URL
    startups = double.startups
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    text = flat(result.stderr)
    assert "cannot be reached from here (connection refused" in text
    assert "Nothing was changed: the old login keeps working" in text
    assert [r for r in fake.mutating_requests() if r.api != "secretmanager" or "versions" in r.path] == []
    assert double.startups == startups  # no rollout
    for secret_id in ROTATE_SECRETS:  # no version added
        assert [n for n, s in versions(fake, secret_id)] == ["1"]

    fake.clear_log()
    up = cli("up")
    assert up.exit_code == 0, up.output
    assert pinned(fake, SECRET_MYSQL) == "1" and pinned(fake, SECRET_MLFLOW) == "1"
    service["uri"] = reachable
    assert credentials() == old
    assert_service_runs_with_the_database_password(fake, double)
    assert_nothing_half_made(fake)

    assert cli("credentials", "rotate").exit_code == 0
    assert_converged(fake, double)


def test_a_server_that_stops_answering_during_the_rotation_is_rolled_back(fake, double, monkeypatch):
    """Reachable at the start, unreachable after the rollout: the new versions are undone, the wait is bounded."""
    monkeypatch.setenv("MLFLOW_GCP_LOGIN_TIMEOUT", "600")
    service = fake.state["run_services"]["projects/demo-project/locations/europe-west1/services/mlflow"]
    reachable, startups, sync = service["uri"], double.startups, double.sync

    def sync_then_block() -> None:  # the new revision starts, and the VPN drops
        sync()
        if double.startups > startups:
            service["uri"] = closed_port_url()

    monkeypatch.setattr(double, "sync", sync_then_block)
    result = cli("credentials", "rotate")
    assert result.exit_code == 1
    text = flat(result.stderr)
    assert "cannot be reached from here (connection refused" in text
    assert "waiting up to 600 s" in text  # the wait is bounded and shown
    assert "destroyed (never used)" in text
    for secret_id in ROTATE_SECRETS:  # `latest` is the applied version again
        assert [n for n, s in versions(fake, secret_id) if s == "ENABLED"] == ["1"]
    service["uri"] = reachable
    assert_service_runs_with_the_database_password(fake, double)
    assert_nothing_half_made(fake)


def test_status_shows_a_rotation_left_unfinished(fake, double):
    from mlflow_gcp.gcp.clients import Clients

    Clients("demo-project").secrets().add_secret_version(
        parent=f"projects/demo-project/secrets/{SECRET_MYSQL}", payload={"data": b"root:added-by-a-rotation"}
    )
    result = cli("status")
    assert result.exit_code == 1
    assert "version 2 added but not applied (rotation unfinished)" in flat(result.stdout)


# -- rotate killed at each stage ----------------------------------------------------------------------------
# A line rotate prints right after each stage (on stderr, merged): killed there, the next stage never starts.
STAGES = {
    "first secret version added": r"mlflow-credentials: added version",
    "second secret version added": r"mysql-credentials: added version",
    "database password set": r"Cloud SQL: the password of the MySQL user",
    "rollout": r"rolled out a revision",
    "login verified": r"the login works against",
    "old versions disabled": r"disabled version",
}


def start_rotate() -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow_gcp", "credentials", "rotate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_rotate_killed_at_any_stage_then_up_then_rotate_again(fake, double, stage, sig):
    process = start_rotate()
    printed = kill_when(process, STAGES[stage], sig)
    assert re.search(STAGES[stage], printed), printed  # it got there
    assert process.returncode != 0 or "The login works" in printed, printed
    # Whatever state it was left in, the service the team uses keeps a login that works ...
    up = cli("up")
    assert up.exit_code == 0, up.output
    assert_service_runs_with_the_database_password(fake, double)
    assert_nothing_half_made(fake)
    # ... and `rotate` again finishes the job.
    again = cli("credentials", "rotate")
    assert again.exit_code == 0, again.output
    assert_converged(fake, double)
    assert_nothing_half_made(fake)


# -- a deployment an older version of the tool left after a failed rotation ----------------------------------
def test_a_failed_rotation_of_an_older_tool_is_not_deployed_by_up(fake, double):
    """Before the record existed, a rotation that failed left version 2 enabled (`latest`) while the service was
    rolled back to version 1 and the users kept version 1's passwords. With no record, the version in use is the
    one the live service pins, not the newest."""
    from mlflow_gcp.gcp.clients import Clients

    client = Clients(PROJECT).secrets()
    old = credentials()
    for secret_id in ROTATE_SECRETS:
        path = f"projects/{PROJECT}/secrets/{secret_id}"
        secret = client.get_secret(name=path)
        client.update_secret(
            secret={"name": path, "annotations": {}, "etag": secret.etag}, update_mask={"paths": ["annotations"]}
        )
        login = old["MLFLOW_TRACKING_USERNAME"] if secret_id == SECRET_MLFLOW else "root"
        client.add_secret_version(parent=path, payload={"data": f"{login}:never-applied".encode()})
    up = cli("up")
    assert up.exit_code == 0, up.output
    assert "version 2 was added by a rotation that did not finish" in flat(up.output)
    assert pinned(fake, SECRET_MYSQL) == "1" and pinned(fake, SECRET_MLFLOW) == "1"
    assert credentials() == old
    assert_service_runs_with_the_database_password(fake, double)
    assert cli("credentials", "rotate").exit_code == 0
    assert_converged(fake, double)


# -- Ctrl-C or SIGTERM while an operation is in flight: undone before the process ends (issue 20) --------------
def read_until_sent(fake, process: subprocess.Popen, request) -> tuple[list[str], threading.Thread]:
    """Read what `process` prints, in a thread, until the fake has received a request `request(r)` selects (a
    minute at most); the process must still run then. Return the lines read (the thread goes on adding) and the
    thread."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    for _ in range(1200):
        if any(request(r) for r in fake.requests(mutating=True)) or process.poll() is not None:
            break
        time.sleep(0.05)
    assert process.poll() is None, "".join(lines)
    return lines, reader


def signal_during(fake, process: subprocess.Popen, request, sig: int, *, again: bool = False) -> str:
    """Send `sig` once the fake has received a request `request(r)` selects (its operation then still runs);
    with `again`, a second Ctrl-C once the undoing has started. Return what rotate printed."""
    lines, reader = read_until_sent(fake, process, request)
    process.send_signal(sig)
    if again:
        for _ in range(1200):
            if "undoing the rotation" in "".join(lines) or process.poll() is not None:
                break
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=10)
    return "".join(lines)


def sql_user_update(r) -> bool:
    return r.api == "sqladmin" and r.method == "PUT" and r.path.endswith("/users")


def run_rollout_after_sql_update(fake):
    def select(r) -> bool:
        return r.api == "run" and r.method == "PATCH" and any(sql_user_update(x) for x in fake.requests(mutating=True))

    return select


@pytest.mark.parametrize(
    "stage, sig, again",
    [
        ("the Cloud SQL update", signal.SIGINT, True),
        ("the rollout", signal.SIGINT, False),
        ("the rollout", signal.SIGTERM, False),
    ],
    ids=["SIGINT-sql-update-twice", "SIGINT-rollout", "SIGTERM-rollout"],
)
def test_rotate_interrupted_during_an_operation_undoes_it_before_ending(fake, double, stage, sig, again):
    """Without `up` afterwards: when rotate ends, the service runs with the password its database has."""
    old = credentials()
    fake.clear_log()
    fake.latency["sqladmin.user"] = 1.0  # the operations are still running when the signal comes
    fake.latency["run.deploy"] = 1.0
    select = sql_user_update if stage == "the Cloud SQL update" else run_rollout_after_sql_update(fake)
    printed = flat(signal_during(fake, start_rotate(), select, sig, again=again))
    assert "Nothing is lost" not in printed
    doing = "setting the new MySQL password in Cloud SQL" if "SQL" in stage else "rolling out a revision"
    assert re.search(rf"The rotation stopped: interrupted \((Ctrl-C|SIGTERM)\) while {doing}", printed), printed
    assert "the MySQL user root has its old password again" in printed
    assert "The old login keeps working" in printed or "Not rolled back" not in printed, printed
    if again:
        assert "interrupted again: ignored" in printed
    fake.latency.clear()
    assert credentials() == old
    assert_service_runs_with_the_database_password(fake, double)
    assert_nothing_half_made(fake)
    again_result = cli("credentials", "rotate")
    assert again_result.exit_code == 0, again_result.output
    assert_converged(fake, double)


# -- two rotations at once: the second fails fast, the first finishes (issue 20) -------------------------------
def lease_annotation(fake) -> str | None:
    secret = fake.state["secrets"][f"projects/{PROJECT}/secrets/{SECRET_MLFLOW}"]
    return secret.get("annotations", {}).get("mlflow-gcp-rotation-lease")


def test_a_second_rotation_while_one_runs_fails_fast_naming_the_first(fake, double):
    fake.latency["sqladmin.user"] = 3600  # the first is still setting the password until the second has ended
    first = start_rotate()
    printed, reader = read_until_sent(fake, first, sql_user_update)
    second = cli("credentials", "rotate")
    with fake.lock:  # the first one's operation completes now
        fake._due = [(0.0, action) for _, action in fake._due]
    assert second.exit_code == 1, second.output
    text = flat(second.output)
    assert "Another rotation of this deployment is running" in text
    assert f"(pid {first.pid})" in text and "Nothing was changed" in text
    assert first.wait(timeout=120) == 0, "".join(printed)
    reader.join(timeout=10)
    fake.latency.clear()
    assert lease_annotation(fake) is None  # released
    for secret_id in ROTATE_SECRETS:  # one rotation, one new version: the second added none
        assert [n for n, _ in versions(fake, secret_id)] == ["1", "2"]
    assert_converged(fake, double)
    assert_nothing_half_made(fake)


def test_a_stale_lease_is_taken_over(fake, double):
    import json

    from mlflow_gcp.gcp.clients import Clients

    client = Clients(PROJECT).secrets()
    path = f"projects/{PROJECT}/secrets/{SECRET_MLFLOW}"
    secret = client.get_secret(name=path)
    stale = {
        "who": "ana",
        "host": "ana-laptop",
        "pid": 4242,
        "since": "2020-01-01T10:00:00+00:00",
        "until": "2020-01-01T11:00:00+00:00",
        "token": "0123456789abcdef",
    }
    annotations = {**secret.annotations, "mlflow-gcp-rotation-lease": json.dumps(stale)}
    client.update_secret(
        secret={"name": path, "annotations": annotations, "etag": secret.etag}, update_mask={"paths": ["annotations"]}
    )
    result = cli("credentials", "rotate")
    assert result.exit_code == 0, result.output
    assert "taking over a stale rotation lease (ana on ana-laptop (pid 4242)" in flat(result.output)
    assert lease_annotation(fake) is None
    assert_converged(fake, double)
