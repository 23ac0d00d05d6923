"""The commands the CLI suggests carry the flags that reach the same deployment (issue 25, point 1): `--project`
when a flag gave it, and `--region` and the resource names when given as flags and not at their default."""

from __future__ import annotations

import re

import pytest

from mlflow_gcp.cli import project as run_state
from mlflow_gcp.cli.console import out
from mlflow_gcp.project import FLAG, ProjectSource
from tests.helpers import ALL_APIS_ENABLED, cli, run_steps

COMMAND = re.compile(r"`(mlflow-gcp [^`]*)`")


@pytest.fixture
def wide_console(monkeypatch):
    monkeypatch.setattr(out, "width", 200)  # advice lines whole, so each command is read in one piece


def suggested(text: str) -> list[str]:
    return COMMAND.findall(" ".join(text.split()))


def test_with_identity_flags_adds_what_is_missing_and_leaves_help_alone():
    run_state.current.source = ProjectSource("p-1", FLAG)
    run_state.current.flags = {"region": "us-east1", "db_instance": "my db"}
    text = "Run `mlflow-gcp step apis`, `mlflow-gcp up --db-instance old` or `mlflow-gcp up --help`; `gcloud x`."
    assert run_state.with_identity_flags(text) == (
        "Run `mlflow-gcp step apis --project p-1 --region us-east1 --db-instance 'my db'`, "
        "`mlflow-gcp up --db-instance old --project p-1 --region us-east1` or `mlflow-gcp up --help`; `gcloud x`."
    )
    assert run_state.command("mlflow-gcp credentials") == (
        "mlflow-gcp credentials --project p-1 --region us-east1 --db-instance 'my db'"
    )
    run_state.forget()
    assert run_state.with_identity_flags(text) == text


def test_status_on_an_empty_project_suggests_up_with_the_region_given(fake):
    result = cli("status", "--project", "demo-project", "--region", "us-east1")
    assert result.exit_code == 3, result.output
    assert suggested(result.stdout) == ["mlflow-gcp up --project demo-project --region us-east1"]


def test_status_advice_carries_the_flags_that_found_the_deployment(fake, wide_console):
    """A disabled API makes a step unreadable: its hint (`mlflow-gcp step apis`) and the other advice name the
    project, region and service the user gave; the default region given as a flag is not repeated."""
    fake.enabled |= ALL_APIS_ENABLED
    run_steps("service-account")
    fake.enabled.discard("run.googleapis.com")
    result = cli("status", "--project", "demo-project", "--region", "europe-west1", "--service", "ml2")
    assert result.exit_code == 1, result.output
    commands = suggested(result.stdout)
    assert any(c.startswith("mlflow-gcp step apis ") for c in commands), result.stdout
    assert any(c.startswith("mlflow-gcp up ") for c in commands), result.stdout
    for command in commands:
        assert command.endswith("--project demo-project --service ml2"), (command, result.stdout)
    assert "--region" not in " ".join(commands)


def test_without_flags_the_suggested_commands_are_as_written(fake, wide_console):
    """MLFLOW_GCP_PROJECT (the fake's environment) finds the project again on the next run: nothing is added."""
    fake.enabled |= ALL_APIS_ENABLED
    run_steps("service-account")
    result = cli("status")
    assert result.exit_code == 1, result.output
    assert "mlflow-gcp up" in suggested(result.stdout), result.stdout
    assert "--project" not in " ".join(suggested(result.stdout))
