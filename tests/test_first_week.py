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


def assert_fits(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long


def test_down_question_is_a_line_per_kind_and_says_what_keeps_billing(fake, narrow, double, monkeypatch):
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
    asked = result.stderr.removeprefix("project: demo-project (from MLFLOW_GCP_PROJECT)\n")  # said first, once
    assert asked.startswith("Delete these 16 resource(s) from demo-project? [y/N]")
    assert fake.mutating_requests() == []


def test_help_is_grouped_with_choices_and_rotate_is_a_subcommand(monkeypatch):
    up_help = cli("up", "--help", env={"COLUMNS": "80"}).stdout
    flat = " ".join(up_help.replace("│", " ").split())
    for panel in ("Network settings", "Database settings", "Deployment settings"):
        assert panel in up_help
    assert "<str>" not in up_help and "<int>" not in up_help and "<bool>" not in up_help
    assert "connector|direct" in up_help and "ENTERPRISE or ENTERPRISE_PLUS" in flat
    for command in ("status", "down"):
        assert "created if it does not exist" not in cli(command, "--help").stdout
    rotate_help = cli("credentials", "rotate", "--help").stdout
    assert "--mlflow" in rotate_help and "--format" not in rotate_help
    assert "rotate" in cli("credentials", "--help").stdout


def completions(words: str) -> list[str]:
    """What bash completion offers for the last word (Click's protocol, as the installed script asks)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "_MLFLOW_GCP_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - 1)
    code = "from mlflow_gcp.cli import app; app(prog_name='mlflow-gcp')"
    answer = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return answer.stdout.split()


def test_settings_choices_are_completed():
    assert completions("mlflow-gcp up --vpc-egress d") == ["direct"]
    assert completions("mlflow-gcp up --secret-replication u") == ["user-managed"]
    assert "db-tier" in completions("mlflow-gcp up --reset db-t")


def test_plan_at_80_columns_piped_names_each_change_and_counts_them(fake, narrow, double):
    result = cli("up", "--dry-run", "--db-tier", "db-g1-small")
    assert result.exit_code == 0, result.output
    # the one-line notice of a change that interrupts the server stays whole (soft-wrapped) by design
    assert_fits("\n".join(line for line in result.stdout.splitlines() if not line.startswith("! ")))
    lines = result.stdout.splitlines()
    # piped: no line per step before the plan (Rich before 15 ends its live display off a terminal with a blank line)
    assert next(line for line in lines if line.strip()) == "Plan", result.stdout
    assert lines.index("Plan") <= 1, result.stdout
    assert "tier (restarts the database" in " ".join(result.stdout.split())
    assert "Plan: 0 to create, 1 to change, 1 to replace/restart." in result.stdout  # + the settings record
    assert sum(line.startswith("database ") for line in lines) == 1  # each step's row once


def test_dry_run_exit_code_says_whether_changes_are_pending(fake, narrow, double):
    unchanged = cli("up", "--dry-run", "--exit-code")
    assert unchanged.exit_code == 0, unchanged.output
    assert "Plan: no changes" in unchanged.stdout
    pending = cli("up", "--dry-run", "--detailed-exitcode", "--min-instances", "1")
    assert pending.exit_code == 2, pending.output
    assert "Plan: 0 to create, 2 to change, 0 to replace/restart." in pending.stdout, pending.stdout
    bad = cli("up", "--dry-run", "--exit-code", "--db-tier", "not a tier")
    assert bad.exit_code == 1, bad.output  # a bad setting is an error (2 means changes pending here)
    assert fake.mutating_requests() == []
