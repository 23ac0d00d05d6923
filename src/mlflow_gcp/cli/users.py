"""`mlflow-gcp users`: the users of the MLflow server and their permissions, as the admin of mlflow-credentials.

A generated password is printed once, alone on stdout (`PASSWORD=$(mlflow-gcp users add alice)` works); every
other message goes to stderr."""

from __future__ import annotations

import sys

import typer

from mlflow_gcp.cli.console import err, out
from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup
from mlflow_gcp.cli.options import with_settings
from mlflow_gcp.config import Settings

app = typer.Typer(
    cls=PanelGroup,help="Users of the MLflow server and their permissions.", no_args_is_help=True)

PASSWORD_STDIN = typer.Option(
    False, "--password-stdin",
    help="Read the password from the first line of stdin instead of generating one (typed twice, not shown, "
         "when stdin is a terminal).",
)


def _server(settings: Settings):
    from mlflow_gcp.gcp.clients import Clients
    from mlflow_gcp.operate.login import current_login
    from mlflow_gcp.operate.users import ServerUsers

    login = current_login(settings, Clients(settings.project))
    return ServerUsers(login.url, login.username, login.password)


def _password(from_stdin: bool) -> str:
    from mlflow_gcp.operate.users import new_password

    if not from_stdin:
        return new_password()
    if sys.stdin.isatty():
        return _typed_password()
    return sys.stdin.readline().rstrip("\r\n")


def _typed_password() -> str:
    """A password typed at the terminal: never echoed (getpass turns echo off), asked twice so a typo is caught."""
    import getpass

    from mlflow_gcp.errors import ConfigError

    first = getpass.getpass("New password: ", stream=sys.stderr)
    if getpass.getpass("Type it again: ", stream=sys.stderr) != first:
        raise ConfigError("The two passwords typed differ; nothing was changed.",
                          "Run the command again and type the same password twice.")
    return first


def _show_password(name: str, password: str, generated: bool) -> None:
    if generated:
        err.print(f"The password of {name}, shown only now:")
        sys.stdout.write(password + "\n")
        sys.stdout.flush()


@app.command("list", cls=PanelCommand)
@with_settings
def list_users(
    settings: Settings,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout, nothing else."),
) -> None:
    """The server's users; the admin of mlflow-credentials is marked."""
    from rich.markup import escape

    server = _server(settings)
    users = server.list()
    if as_json:
        import json

        document = {
            "users": [{"user": u.name, "admin": u.is_admin, "secret_admin": u.name == server.admin} for u in users]
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    out.print(f"[dim]{'USER':<32} ROLE[/]")
    for user in users:
        role = "admin" if user.is_admin else "user"
        if user.name == server.admin:
            role += " (mlflow-credentials)"
        out.print(f"{escape(user.name):<32} {role}")


@app.command("add", cls=PanelCommand)
@with_settings
def add(
    settings: Settings,
    name: str = typer.Argument(..., metavar="NAME", help="The new user's login."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an admin (every permission, user management)."),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Create a user, with a generated password printed once (or --password-stdin)."""
    server = _server(settings)
    password = _password(password_stdin)
    server.add(name, password, admin=admin)
    err.print(f"Created the user {name}" + (" (admin)." if admin else "."))
    _show_password(name, password, generated=not password_stdin)


@app.command("remove", cls=PanelCommand)
@with_settings
def remove(settings: Settings, name: str = typer.Argument(..., metavar="NAME", help="The user to remove.")) -> None:
    """Remove a user (its runs and models stay). The admin of mlflow-credentials cannot be removed."""
    _server(settings).remove(name)
    err.print(f"Removed the user {name}.")


@app.command("password", cls=PanelCommand)
@with_settings
def password(
    settings: Settings,
    name: str = typer.Argument(..., metavar="NAME", help="The user whose password is reset."),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Reset a user's password: a generated one printed once (or --password-stdin)."""
    server = _server(settings)
    new = _password(password_stdin)
    server.set_password(name, new)
    err.print(f"New password set for {name}.")
    _show_password(name, new, generated=not password_stdin)


@app.command("grant", cls=PanelCommand)
@with_settings
def grant(
    settings: Settings,
    name: str = typer.Argument(..., metavar="NAME", help="The user."),
    experiment: str = typer.Option("", "--experiment", help="An experiment, by name or id."),
    model: str = typer.Option("", "--model", help="A registered model, by name."),
    permission: str = typer.Option(..., "--permission", help="READ, EDIT, MANAGE or NO_PERMISSIONS."),
) -> None:
    """Set a user's permission on one experiment or registered model (replacing any earlier one)."""
    from mlflow_gcp.errors import ConfigError
    from mlflow_gcp.operate.users import EXPERIMENT, REGISTERED_MODEL

    if bool(experiment) == bool(model):
        raise ConfigError("Give exactly one of --experiment and --model.", "For example: --experiment my-experiment.")
    kind, target = (EXPERIMENT, experiment) if experiment else (REGISTERED_MODEL, model)
    done = _server(settings).grant(name, kind, target, permission)
    what = "experiment" if done.kind == EXPERIMENT else "registered model"
    ident = f" (id {done.resource_id})" if done.kind == EXPERIMENT else ""
    err.print(f"{name} has {done.permission} on the {what} {done.resource_name}{ident}.")
