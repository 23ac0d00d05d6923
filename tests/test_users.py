"""`mlflow-gcp users` before it reaches the server: where the server and its admin login come from, and what is
refused without asking it. The commands themselves run against the real server in tests/e2e/test_users_e2e.py."""

from __future__ import annotations

import pytest

from mlflow_gcp.operate.users import ServerUsers, UserError
from tests.helpers import ALL_APIS_ENABLED, cli

NOWHERE = "http://127.0.0.1:9"  # nothing is asked of it: every case below is refused before


def test_no_deployment_says_to_run_up(fake):
    fake.enabled |= ALL_APIS_ENABLED
    result = cli("users", "list")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "mlflow-gcp up" in result.output
    assert "Traceback" not in result.output
    assert not fake.mutating_requests()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.remove("admin"), "admin of mlflow-credentials"),
        (lambda s: s.set_password("admin", "a-long-enough-password"), "admin of mlflow-credentials"),
        (lambda s: s.grant("admin", "experiment", "Default", "READ"), "admin of mlflow-credentials"),
        (lambda s: s.grant("bob", "experiment", "Default", "OWNER"), "Unknown permission OWNER"),
        (lambda s: s.add("bob", "short"), "too short"),
        (lambda s: s.add("bob:x", "a-long-enough-password"), "not a usable user name"),
    ],
)
def test_refused_before_asking_the_server(call, message):
    with pytest.raises(UserError, match=message):
        call(ServerUsers(NOWHERE, "admin", "admin-password"))


@pytest.mark.parametrize("name", ["ADMIN", "Admin", "admin ", "\u00c1dmin", "a\u0301dmin", "\uff41dmin"])
@pytest.mark.parametrize(
    "call",
    [
        lambda s, name: s.remove(name),
        lambda s, name: s.set_password(name, "a-long-enough-password"),
        lambda s, name: s.grant(name, "experiment", "Default", "READ"),
    ],
)
def test_the_admin_is_protected_under_every_name_mysql_matches_to_it(call, name):
    """MySQL's default collations find `admin` for these names (case, accents, PAD SPACE, width)."""
    with pytest.raises(UserError, match="admin of mlflow-credentials"):
        call(ServerUsers(NOWHERE, "admin", "admin-password"), name)


def test_the_admin_is_protected_under_a_name_the_server_resolves_to_it(monkeypatch):
    """A name the local folding does not match, but the database does: the name the server stored decides."""
    from mlflow_gcp.operate.users import User

    asked = []
    monkeypatch.setattr(ServerUsers, "get", lambda self, name: asked.append(name) or User("admin", True))
    server = ServerUsers(NOWHERE, "admin", "admin-password")
    for call in (lambda: server.remove("adm\u0131n"), lambda: server.set_password("adm\u0131n", "a-long-enough-one")):
        with pytest.raises(UserError, match="admin of mlflow-credentials"):
            call()
    assert asked == ["adm\u0131n", "adm\u0131n"]


def test_other_names_are_not_taken_for_the_admin():
    from mlflow_gcp.operate.users import same_login

    assert not same_login("admin2", "admin") and not same_login(" admin", "admin") and not same_login("adm", "admin")


def test_grant_needs_one_target(fake):
    result = cli("users", "grant", "bob", "--permission", "READ")
    assert result.exit_code == 2 and "exactly one of --experiment and --model" in result.output


TYPED_PASSWORD = "typed-secret-password-42"
READ_PASSWORD = """
import hashlib, sys
from mlflow_gcp.cli.users import _password
from mlflow_gcp.errors import MlflowGcpError
try:
    print("READ", hashlib.sha256(_password(True).encode()).hexdigest(), flush=True)
except MlflowGcpError as e:
    print("REFUSED", e, flush=True)
"""


def typed_at_a_terminal(*lines: str) -> str:
    """Run `_password(True)` with stdin a real terminal (a pty), type `lines`; everything the terminal showed."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", READ_PASSWORD], stdin=follower, stdout=follower,
                               stderr=follower, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    os.close(follower)
    shown, pending = b"", list(lines)
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process ended and closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown.count(b": ") > len(lines) - len(pending):
            os.write(leader, pending.pop(0).encode() + b"\n")
    process.wait(timeout=60)
    os.close(leader)
    return shown.decode()


def test_a_password_typed_at_a_terminal_is_not_shown_and_asked_twice():
    import hashlib

    shown = typed_at_a_terminal(TYPED_PASSWORD, TYPED_PASSWORD)
    assert "New password: " in shown and "Type it again: " in shown
    assert TYPED_PASSWORD not in shown
    assert f"READ {hashlib.sha256(TYPED_PASSWORD.encode()).hexdigest()}" in shown


def test_two_different_passwords_typed_are_refused():
    shown = typed_at_a_terminal(TYPED_PASSWORD, TYPED_PASSWORD + "x")
    assert "REFUSED The two passwords typed differ" in shown and TYPED_PASSWORD not in shown
