"""`mlflow-gcp up`: every step, each as soon as its inputs are ready."""

from __future__ import annotations

from mlflow_gcp.cli.options import (
    ACCEPT_DISRUPTION,
    DRY_RUN,
    EXIT_CODE,
    JSON_RESULT,
    MOVE_TO_NEW_RESOURCES,
    RESET,
    SKIP_PREFLIGHT,
    WIDE,
    with_settings,
)
from mlflow_gcp.config import Settings
from mlflow_gcp.steps import STEPS


@with_settings(adopt=True, preflight={"steps": [step.name for step in STEPS]})
def up(
    settings: Settings,
    resolution,
    dry_run: bool = DRY_RUN,
    yes: bool = ACCEPT_DISRUPTION,
    wide: bool = WIDE,
    skip_preflight: bool = SKIP_PREFLIGHT,
    as_json: bool = JSON_RESULT,
    reset: list[str] = RESET,
    exit_code: bool = EXIT_CODE,
    move_to_new_resources: bool = MOVE_TO_NEW_RESOURCES,
) -> None:
    """Create or update the whole deployment. Safe to rerun: what exists and matches is left alone."""
    from mlflow_gcp.cli.run import run_with_view, show_resolution
    from mlflow_gcp.moves import recorded_data_resources

    show_resolution(resolution)
    report = run_with_view(
        settings,
        list(STEPS),
        dry_run=dry_run,
        yes=yes,
        wide=wide,
        skip_preflight=skip_preflight,
        as_json=as_json,
        exit_code=exit_code,
        existed=recorded_data_resources(resolution),
    )
    if dry_run:
        from mlflow_gcp.cli.console import err, out
        from mlflow_gcp.cli.cost import dry_run_line

        (err if as_json else out).print(dry_run_line(settings))  # stdout holds the JSON document alone
        from mlflow_gcp.cli.plan_view import ChangesPending, counts

        if exit_code and counts(report).total:
            raise ChangesPending()
