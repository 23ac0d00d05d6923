"""A new user's first week (issue 25): `status` on an empty project, each resource once; the commands read at
80 columns and piped."""

from __future__ import annotations

import json
import re

import pytest

from mlflow_gcp.cli.console import out
from tests.helpers import ALL_APIS_ENABLED, cli, run_steps

MARKS = ("ok ", "missing ", "drift ", "failed ", "unknown ")
NOTHING = "Nothing is deployed in demo-project (region europe-west1): run `mlflow-gcp up --project demo-project`"


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setattr(out, "width", 80)


@pytest.mark.parametrize("apis_enabled", [False, True], ids=["apis-disabled", "apis-enabled"])
def test_status_on_an_empty_project_is_one_line_and_exit_code_3(fake, narrow, apis_enabled):
    if apis_enabled:
        fake.enabled |= ALL_APIS_ENABLED
    result = cli("status")
    assert result.exit_code == 3, result.output
    assert result.stdout.strip() == NOTHING
    assert "unreadable" not in result.output and "problem" not in result.output
    document = json.loads(cli("status", "--json").stdout)
    assert document["deployed"] is False
    assert fake.mutating_requests() == []


def test_status_lists_each_resource_once(fake, narrow):
    """`mysql-credentials` is read by the database step (its owner) and checked by the secrets step: one line."""
    fake.enabled |= ALL_APIS_ENABLED
    run_steps("service-account")
    result = cli("status")
    assert result.exit_code == 1, result.output
    names = [re.split(r"\s{2,}", line[8:])[0] for line in result.stdout.splitlines() if line.startswith(MARKS)]
    assert names.count("secret mysql-credentials") == 1, result.stdout
    assert len(names) == len(set(names)), result.stdout
