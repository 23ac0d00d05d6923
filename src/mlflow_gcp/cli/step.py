"""`mlflow-gcp step NAME`: one setup step (its prerequisites are read, not changed)."""

from __future__ import annotations

import typer

from mlflow_gcp.cli.options import (
    ACCEPT_DISRUPTION,
    DRY_RUN,
    JSON_RESULT,
    MOVE_TO_NEW_RESOURCES,
    RESET,
    SKIP_PREFLIGHT,
    WIDE,
    with_settings,
)
from mlflow_gcp.config import Settings
from mlflow_gcp.steps import BY_NAME, COMMAND_STEPS

app = typer.Typer(help="Run one setup step. Steps it needs must have run before.", no_args_is_help=True)


def _command(name: str):
    @with_settings(adopt=True, preflight={"steps": list(COMMAND_STEPS[name])})
    def command(
        settings: Settings,
        resolution,
        dry_run: bool = DRY_RUN,
        yes: bool = ACCEPT_DISRUPTION,
        wide: bool = WIDE,
        skip_preflight: bool = SKIP_PREFLIGHT,
        as_json: bool = JSON_RESULT,
        reset: list[str] = RESET,
        move_to_new_resources: bool = MOVE_TO_NEW_RESOURCES,
    ) -> None:
        from mlflow_gcp.cli.run import run_with_view, show_resolution
        from mlflow_gcp.moves import recorded_data_resources

        show_resolution(resolution)
        run_with_view(
            settings,
            [BY_NAME[n] for n in COMMAND_STEPS[name]],
            dry_run=dry_run,
            yes=yes,
            wide=wide,
            skip_preflight=skip_preflight,
            as_json=as_json,
            existed=recorded_data_resources(resolution),
        )

    command.__doc__ = BY_NAME[name].summary + "."
    return command


for _name in COMMAND_STEPS:
    app.command(_name)(_command(_name))
