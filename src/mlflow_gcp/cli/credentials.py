"""`mlflow-gcp credentials`: what an MLflow client needs (the only command that prints a secret, on stdout
only), and `credentials rotate`: new passwords, rolled out and verified before the old ones are disabled."""

from __future__ import annotations

import json
import shlex
import sys
from enum import Enum

import typer

from mlflow_gcp.cli.choices import choice, metavar
from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError


class Format(str, Enum):
    env = "env"
    dotenv = "dotenv"
    docker = "docker"
    json = "json"


FORMAT_HELP = (
    "env: `export` lines for eval in sh/bash/zsh. "
    "dotenv: KEY='value' lines, read alike by `set -a; . FILE` in bash and by python-dotenv. "
    "docker: KEY=value lines, verbatim, for `docker run --env-file`. "
    "json: one object."
)


def _dotenv_value(key: str, value: str) -> str:
    """Single quotes: bash takes everything inside literally; python-dotenv does too except that it decodes
    `\\\\` and `\\'` and expands `${NAME}` even there. A value that needs any of those has no form both read alike."""
    if "'" in value or "${" in value or "\\\\" in value or value.endswith("\\"):
        raise ConfigError(
            f"{key} contains characters (' or ${{ or a backslash) that bash and python-dotenv would read "
            "differently in a .env file, so --format dotenv cannot write it exactly.",
            "Use --format env (for a shell), --format json, or --format docker; or get a password without them "
            "with `mlflow-gcp credentials rotate --mlflow`.",
        )
    return f"'{value}'"


def _docker_value(key: str, value: str) -> str:
    """`docker run --env-file` takes everything after the first `=` as is, one line per variable (docker/cli
    opts/file.go parseKeyValueFile): no quotes, so no line breaks."""
    if "\n" in value or "\r" in value:
        raise ConfigError(
            f"{key} contains a line break, which a `docker run --env-file` file cannot hold.",
            "Use --format env or --format json, or pass the variable with `docker run -e`.",
        )
    return value


def render(variables: dict[str, str], fmt: Format) -> str:
    if fmt is Format.json:
        return json.dumps(variables, indent=2) + "\n"
    if fmt is Format.dotenv:
        return "".join(f"{key}={_dotenv_value(key, value)}\n" for key, value in variables.items())
    if fmt is Format.docker:
        return "".join(f"{key}={_docker_value(key, value)}\n" for key, value in variables.items())
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in variables.items())


app = typer.Typer(
    cls=PanelGroup,
    help="Print the login of the MLflow server; `rotate` gives new passwords.", invoke_without_command=True
)


@app.callback()
@with_settings
def credentials(
    settings: Settings,
    fmt: str = typer.Option(
        Format.env.value, "--format", metavar=metavar(Format), callback=choice(Format, "format"), help=FORMAT_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="The same as --format json."),
) -> None:
    """Print MLFLOW_TRACKING_URI, _USERNAME and _PASSWORD: `eval "$(mlflow-gcp credentials || echo false)"`.

    `mlflow-gcp credentials rotate` gives new passwords."""
    from mlflow_gcp.operate.login import current_login
    from mlflow_gcp.service_spec import CLIENT_SETTINGS

    login = current_login(settings)
    variables = {
        "MLFLOW_TRACKING_URI": login.url,
        "MLFLOW_TRACKING_USERNAME": login.username,
        "MLFLOW_TRACKING_PASSWORD": login.password,
        **CLIENT_SETTINGS,
    }
    sys.stdout.write(render(variables, Format.json if as_json else fmt))
    sys.stdout.flush()


@app.command("rotate", cls=PanelCommand)
@with_settings
def rotate(
    settings: Settings,
    mlflow: bool = typer.Option(False, "--mlflow", help="The MLflow admin password."),
    database: bool = typer.Option(False, "--database", help="The MySQL password (Cloud SQL user)."),
) -> None:
    """New passwords as new secret versions, rolled out and verified against the live server; only then the old
    versions are disabled. Neither flag: both.

    A failure midway keeps the old login working; a rerun finishes the job."""
    _rotate(settings, mlflow=mlflow, database=database)


def _rotate(settings: Settings, *, mlflow: bool, database: bool) -> None:
    from rich.markup import escape

    from mlflow_gcp.operate.rotate import rotate

    result = rotate(settings, mlflow=mlflow, database=database, log=lambda m: err.print(f"[dim]rotate:[/] {escape(m)}"))
    for item in result.rotated:
        out.print(f"[green]Rotated[/] {item.secret_id}: version {item.new_version} is in use.")
    if result.disabled:
        out.print(f"Disabled the old versions: {', '.join(result.disabled)}.")
    out.print(f"The login works against {result.url}.")
    if any(i.secret_id == "mlflow-credentials" for i in result.rotated):
        from mlflow_gcp.cli.project import eval_line

        out.print(f"Members get the new login with: [bold]{eval_line()}[/]")
