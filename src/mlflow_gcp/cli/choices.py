"""Options whose value is one of a few names: a typo is refused with the choices and the closest one, before any
request (Typer's own message for an Enum is "Value error, 'x' is not one of …")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

import typer

from mlflow_gcp.suggest import did_you_mean


def listed(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def choice(values: Sequence[str] | type[Enum], what: str) -> Callable[[str], object]:
    """A callback for a `str` option: the value itself (or the Enum member of that value), else a BadParameter
    naming the choices and the closest one."""
    names = [member.value for member in values] if isinstance(values, type) else list(values)

    def check(value):
        if isinstance(value, Enum):
            value = value.value
        if value not in names:
            raise typer.BadParameter(f"'{value}' is not a {what}: choose {listed(names)}.{did_you_mean(value, names)}")
        return values(value) if isinstance(values, type) else value

    return check


def metavar(values: Sequence[str] | type[Enum]) -> str:
    names = [member.value for member in values] if isinstance(values, type) else list(values)
    return "[" + "|".join(names) + "]"
