"""The project of this run: found (mlflow_gcp.project), and added to the commands the hints suggest when a flag
gave it (a rerun without it would look elsewhere). cli.options says it once on stderr when no flag gave it."""

from __future__ import annotations

import os
import re

from mlflow_gcp.project import FLAG, PROJECT_VARIABLE, ProjectSource, find_project


class _Current:
    source: ProjectSource | None = None


current = _Current()

_COMMAND = re.compile(r"`(mlflow-gcp(?: [^`]*)?)`")


def settle(click_context, given: str) -> ProjectSource | None:
    """This run's project (None when none is found), from the project setting as Typer read it and the rest."""
    from mlflow_gcp import env_file

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


def with_project_flag(text: str) -> str:
    """`mlflow-gcp step apis` → `mlflow-gcp step apis --project ID` in `text` when the project came from a flag
    (a command that names a project already is left alone)."""
    source = current.source
    if source is None or not source.from_flag:
        return text

    def add(match: re.Match) -> str:
        command = match.group(1)
        if "--project" in command or "--help" in command:
            return match.group(0)
        return f"`{command} --project {source.project}`"

    return _COMMAND.sub(add, text)


def command(text: str) -> str:
    """A command line to print (no backticks), with --project when a flag gave the project."""
    return with_project_flag(f"`{text}`")[1:-1]


def eval_line() -> str:
    """The shell line that sets a client's variables. `|| echo false`: when `credentials` fails, stdout is empty
    and `eval ""` would succeed, setting nothing; `eval false` fails instead (a script under `set -e` stops), and
    the error is on the terminal (stderr is not captured)."""
    return f'eval "$({command("mlflow-gcp credentials")} || echo false)"'
