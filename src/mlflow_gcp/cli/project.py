"""The project of this run: found (mlflow_gcp.project), and added to the commands the hints suggest when a flag
gave it (a rerun without it would look elsewhere), with the other flags that say where the deployment is
(--region and the resource names, when given as flags and not at their default). cli.options says the project
once on stderr when no flag gave it.

Every `mlflow-gcp ...` command the CLI prints in backticks goes through `with_identity_flags` (errors, their
hints, status's problems and advice, the lines that end a command), or `command` for a bare command line."""

from __future__ import annotations

import os
import re
import shlex

from mlflow_gcp.project import FLAG, PROJECT_VARIABLE, ProjectSource, find_project


class _Current:
    def __init__(self) -> None:
        self.source: ProjectSource | None = None
        self.flags: dict[str, str] = {}  # --region, --service...: given as flags, not at their default; by setting


current = _Current()

_COMMAND = re.compile(r"`(mlflow-gcp(?: [^`]*)?)`")


def settle(click_context, values: dict) -> ProjectSource | None:
    """This run's project (None when none is found), from the project setting as Typer read it and the rest;
    and the flags a suggested command must repeat to reach the same deployment."""
    from mlflow_gcp import env_file
    from mlflow_gcp.config import setting_fields
    from mlflow_gcp.moves import IDENTITY

    given = values["project"]
    defaults = {f.name: f.default for f in setting_fields()}
    current.flags = {
        name: str(values[name])
        for name in IDENTITY
        if getattr(click_context.get_parameter_source(name), "name", "") == "COMMANDLINE"
        and values[name] != defaults[name]
    }

    kind = getattr(click_context.get_parameter_source("project"), "name", "")
    given_from = {"COMMANDLINE": FLAG, "ENVIRONMENT": PROJECT_VARIABLE}.get(kind)
    found = find_project(
        given if given_from else "",
        given_from,
        os.environ,
        env_file.applied.names,
        str(env_file.applied.path or ".env"),
    )
    current.source = found
    return found


def identity_flags() -> list[tuple[str, str]]:
    """(flag, value) a command suggested to the user needs to reach this run's deployment."""
    from mlflow_gcp.config import flag

    source = current.source
    found = [("--project", source.project)] if source is not None and source.from_flag else []
    return found + [(flag(name), value) for name, value in current.flags.items()]


def with_identity_flags(text: str) -> str:
    """`mlflow-gcp step apis` → `mlflow-gcp step apis --project ID --region R` in `text`, for the flags of
    `identity_flags` (one the command names already is left alone; a `--help` command is left alone)."""
    flags = identity_flags()
    if not flags:
        return text

    def add(match: re.Match) -> str:
        command = match.group(1)
        if "--help" in command:
            return match.group(0)
        named = set(command.split())
        extra = [f"{name} {shlex.quote(value)}" for name, value in flags if name not in named]
        return f"`{' '.join([command, *extra])}`"

    return _COMMAND.sub(add, text)


def command(text: str) -> str:
    """A command line to print (no backticks), with the identity flags it needs."""
    return with_identity_flags(f"`{text}`")[1:-1]


def forget() -> None:
    """A new run (a test's next command in the same process) starts with no project nor flags."""
    current.source, current.flags = None, {}


def eval_line() -> str:
    """The shell line that sets a client's variables. `|| echo false`: when `credentials` fails, stdout is empty
    and `eval ""` would succeed, setting nothing; `eval false` fails instead (a script under `set -e` stops), and
    the error is on the terminal (stderr is not captured)."""
    return f'eval "$({command("mlflow-gcp credentials")} || echo false)"'
