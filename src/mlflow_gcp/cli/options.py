"""Every setting as a flag and an environment variable, declared once from the Settings dataclass."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import typer

from mlflow_gcp.cli.console import handled_errors
from mlflow_gcp.config import Settings, env_var, flag, setting_fields, validate

_TYPES = {"str": str, "int": int}

WIDE = typer.Option(False, "--wide", "-w", help="Full names and every detail, even if lines wrap.")
JSON_RESULT = typer.Option(
    False, "--json", help="Print the outcome as one JSON document on stdout (full names); progress goes to stderr."
)
SKIP_PREFLIGHT = typer.Option(
    False, "--skip-preflight", help="Do not check credentials, project, billing, permissions and org policies first."
)


def _setting_parameters() -> list[inspect.Parameter]:
    params = []
    for f in setting_fields():
        default = f.default
        option = typer.Option(
            default,
            flag(f.name),
            envvar=env_var(f.name),
            help=f.metadata["help"],
            rich_help_panel=f.metadata["group"] + " settings",
            show_default=bool(default) or isinstance(default, int),
        )
        annotation = _TYPES[f.type] if isinstance(f.type, str) else f.type
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def with_settings(command: Callable) -> Callable:
    """Give `command(settings: Settings, ...)` one option per setting; validate them before it runs, and show
    its errors as a message with an exit code."""
    names = [f.name for f in setting_fields()]
    signature = inspect.signature(command)

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in names}
        with handled_errors():
            return command(settings=validate(Settings(**values)), **kwargs)

    own = [p for p in signature.parameters.values() if p.name != "settings"]
    wrapper.__signature__ = signature.replace(parameters=own + _setting_parameters())
    return wrapper
