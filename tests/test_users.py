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


def test_grant_needs_one_target(fake):
    result = cli("users", "grant", "bob", "--permission", "READ")
    assert result.exit_code == 2 and "exactly one of --experiment and --model" in result.output
