"""A new user's first week (issue 25): `status` on an empty project, each resource once; the commands read at
80 columns and piped."""

from __future__ import annotations

import json
import re

import pytest

from mlflow_gcp.cli.console import out
from tests.helpers import ALL_APIS_ENABLED, cli, run_steps
from tests.server_double import deploy

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


@pytest.fixture
def deployed(fake, tmp_path, monkeypatch, narrow):
    double = deploy(fake, tmp_path, monkeypatch)
    yield double
    double.stop()


def assert_fits(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long


def test_down_question_is_a_line_per_kind_and_says_what_keeps_billing(fake, deployed, monkeypatch):
    from mlflow_gcp.cli import console

    monkeypatch.setattr(console, "interactive", lambda: True)
    result = cli("down", input="n\n")
    assert result.exit_code == 1, result.output
    assert_fits(result.stdout)
    lines = result.stdout.splitlines()
    assert len(lines) <= 25, result.stdout
    assert lines[0].startswith("`down` deletes ") and "and keeps" in lines[0]
    assert any(line.startswith("  delete  ") and "grants:" in line for line in lines), result.stdout
    assert any(line.startswith("  keep    sql instance") or "Cloud SQL instance" in line for line in lines)
    billing = " ".join(result.stdout.split())
    assert "The kept Cloud SQL instance goes on billing (about $" in billing and "/month" in billing
    # the question comes last, after the whole plan
    assert result.stderr.startswith("Delete these 16 resource(s) from demo-project? [y/N]")
    assert fake.mutating_requests() == []
