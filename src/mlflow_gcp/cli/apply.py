"""The commands that apply steps (`up`, `step NAME`): their options and their run, declared once."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

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


def apply_command(step_names: Sequence[str], doc: str, *, whole: bool = False):
    """The command that applies the steps `step_names` (in that order), with the settings' options. `whole`
    (the whole deployment, `up`): a dry run also says the monthly cost, and `--exit-code` tells CI whether
    changes are pending."""

    def command(
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
        from mlflow_gcp.cli.run import run_with_view, show_resolution
        from mlflow_gcp.moves import recorded_data_resources
        from mlflow_gcp.steps import BY_NAME

        exit_code = whole and exit_code  # a command without the option gets its declaration as the value
        show_resolution(resolution)
        report = run_with_view(
            settings,
            [BY_NAME[name] for name in step_names],
            dry_run=dry_run,
            yes=yes,
            wide=wide,
            skip_preflight=skip_preflight,
            as_json=as_json,
            exit_code=exit_code,
            existed=recorded_data_resources(resolution),
        )
        if whole and dry_run:
            from mlflow_gcp.cli.console import err, out
            from mlflow_gcp.cli.cost import dry_run_line

            (err if as_json else out).print(dry_run_line(settings))  # stdout holds the JSON document alone
            from mlflow_gcp.cli.plan_view import ChangesPending, counts

            if exit_code and counts(report).total:
                raise ChangesPending()

    command.__doc__ = doc
    if not whole:
        signature = inspect.signature(command)
        command.__signature__ = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != "exit_code"]
        )
    wrapped = with_settings(adopt=True, preflight={"steps": list(step_names)})(command)
    if not whole:
        wrapped.__doc__ = doc  # as `step NAME` always showed it: its summary alone, without the settings' epilog
    return wrapped
