"""Shared test helpers: run steps against the fake through the real engine and client libraries."""

from __future__ import annotations

from dataclasses import replace

from mlflow_gcp.config import Settings, validate
from mlflow_gcp.engine.base import Mode, Status, StepContext, StepResult
from mlflow_gcp.engine.loop import run_step
from mlflow_gcp.gcp.clients import Clients
from mlflow_gcp.steps import BY_NAME, load_prerequisites
from mlflow_gcp.steps.apis import REQUIRED_APIS
from tests.fake_gcp.server import PROJECT

ALL_APIS_ENABLED = set(REQUIRED_APIS)


def settings(**overrides) -> Settings:
    return validate(replace(Settings(project=PROJECT, region="europe-west1"), **overrides))


def run_steps(*names: str, mode: Mode = Mode.APPLY, prerequisites: bool = True, **overrides) -> list[StepResult]:
    """Run the named steps in order (after reading their prerequisites), as `mlflow-gcp step` does."""
    config = settings(**overrides)
    ctx = StepContext(settings=config, clients=Clients(config.project), mode=mode)
    if prerequisites:
        load_prerequisites(names, ctx)
    return [run_step(BY_NAME[name], ctx) for name in names]


def assert_rerun_sends_nothing(fake, step: str, **overrides) -> StepResult:
    """`step` run again (the fake's log cleared first) finds nothing to do and sends no change."""
    fake.clear_log()
    [again] = run_steps(step, **overrides)
    assert again.status is Status.UNCHANGED, again
    sent = fake.mutating_requests()
    assert sent == [], sent
    return again


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    """Run the CLI in this process (the fake fixture has set the environment); `input` is typed on stdin."""
    from typer.testing import CliRunner

    from mlflow_gcp.cli import app

    return CliRunner().invoke(app, list(args), env=env, input=input, catch_exceptions=False)


def up_and_clear_log(fake, *flags: str):
    """`up` with these flags succeeded in the fake, whose log is then cleared: a test sees only its own requests."""
    result = cli("up", *flags)
    assert result.exit_code == 0, result.output
    fake.clear_log()
    return fake


def flat(text: str) -> str:
    """The output on one line, as a sentence can be searched in it whatever the terminal's width wrapped."""
    return " ".join(text.split())


def refused_with_yes_and_dry_run(fake, *command: str) -> list[str]:
    """`mlflow-gcp COMMAND --yes`, then `--dry-run`: each refused (non-zero) with no mutating request sent; their
    outputs, flat."""
    outputs = []
    for mode in ("--yes", "--dry-run"):
        result = cli(*command, mode)
        assert result.exit_code != 0, result.output
        assert fake.mutating_requests() == []
        outputs.append(flat(result.output))
    return outputs
