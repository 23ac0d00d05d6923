"""`mlflow-gcp credentials`: what an MLflow client needs (the only command that prints a secret, on stdout
only), and `credentials rotate`: new passwords, rolled out and verified before the old ones are disabled."""

from __future__ import annotations

import json
import re
import shlex
import sys
from enum import Enum

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings
from mlflow_gcp.errors import ConfigError


class Format(str, Enum):
    env = "env"
    dotenv = "dotenv"
    json = "json"


_BARE = re.compile(r"^[A-Za-z0-9_.@+:/,=%-]*$")


def _dotenv_value(value: str) -> str:
    if _BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(variables: dict[str, str], fmt: Format) -> str:
    if fmt is Format.json:
        return json.dumps(variables, indent=2) + "\n"
    if fmt is Format.dotenv:
        return "".join(f"{key}={_dotenv_value(value)}\n" for key, value in variables.items())
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in variables.items())


@with_settings
def credentials(
    settings: Settings,
    action: str = typer.Argument(
        "", metavar="[rotate]", help="`rotate`: new passwords, rolled out and verified, old versions disabled."
    ),
    fmt: Format = typer.Option(Format.env, "--format", help="env (for eval), dotenv or json."),
    mlflow: bool = typer.Option(False, "--mlflow", help="rotate: the MLflow admin password."),
    database: bool = typer.Option(False, "--database", help="rotate: the MySQL password (Cloud SQL user)."),
) -> None:
    """Print MLFLOW_TRACKING_URI, _USERNAME and _PASSWORD: `eval "$(mlflow-gcp credentials)"`.

    `credentials rotate [--mlflow] [--database]` (neither flag: both) gives new passwords.

    A failure midway keeps the old login working; a rerun finishes the job."""
    if action == "rotate":
        _rotate(settings, mlflow=mlflow, database=database)
        return
    if action:
        raise ConfigError(f"Unknown action '{action}': `mlflow-gcp credentials` or `mlflow-gcp credentials rotate`.")
    if mlflow or database:
        raise ConfigError("--mlflow and --database go with `mlflow-gcp credentials rotate`.")
    from mlflow_gcp.operate.login import current_login
    from mlflow_gcp.service_spec import CLIENT_SETTINGS

    login = current_login(settings)
    variables = {
        "MLFLOW_TRACKING_URI": login.url,
        "MLFLOW_TRACKING_USERNAME": login.username,
        "MLFLOW_TRACKING_PASSWORD": login.password,
        **CLIENT_SETTINGS,
    }
    sys.stdout.write(render(variables, fmt))
    sys.stdout.flush()


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
        out.print('Members get the new login with: [bold]eval "$(mlflow-gcp credentials)"[/]')
