"""Every setting as a flag and an environment variable, declared once from the Settings dataclass."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import typer

from mlflow_gcp.cli.console import err, handled_errors
from mlflow_gcp.cli.help_format import ADVANCED
from mlflow_gcp.config import Settings, env_var, flag, setting_fields, validate

_TYPES = {"str": str, "int": int}
SETTINGS_EPILOG = (
    "\n\nEvery setting is also an environment variable MLFLOW_GCP_<SETTING> (MLFLOW_GCP_DB_TIER for --db-tier) "
    "or a line of .env; settings are remembered with the deployment."
)
CONTEXT = "settings_click_context"  # Typer gives the command's context to a parameter of this type

WIDE = typer.Option(False, "--wide", "-w", help="Full names and every detail, even if lines wrap.")
JSON_RESULT = typer.Option(
    False, "--json", help="Print the outcome as one JSON document on stdout (full names); progress goes to stderr."
)
SKIP_PREFLIGHT = typer.Option(
    False,
    "--skip-preflight",
    help="Do not check credentials, project, billing, permissions and org policies first.",
    rich_help_panel=ADVANCED,
)
# The options of the commands that apply steps (`up`, `step NAME`).
DRY_RUN = typer.Option(False, "--dry-run", help="Show what would change; change nothing.")
ACCEPT_DISRUPTION = typer.Option(
    False, "--yes", "-y", help="Accept changes that restart the database or replace a resource (for scripts)."
)
EXIT_CODE = typer.Option(
    False,
    "--exit-code",
    "--detailed-exitcode",
    help="With --dry-run, for CI: exit 0 when there is nothing to change, 2 when changes are pending, 1 on any "
    "error (as terraform plan -detailed-exitcode).",
    rich_help_panel=ADVANCED,
)
MOVE_TO_NEW_RESOURCES = typer.Option(
    False,
    "--move-to-new-resources",
    help=(
        "Accept that a changed name (--db-instance, --db-name, --auth-db-name, --bucket, --network, --service) "
        "moves the live server to NEW, EMPTY resources; the old ones keep the data and keep billing."
    ),
    rich_help_panel=ADVANCED,
)
RESET = typer.Option(
    [],
    "--reset",
    metavar="SETTING",
    autocompletion=lambda incomplete: [
        name for name in ["all", *(flag(f.name)[2:] for f in setting_fields())] if name.startswith(incomplete)
    ],
    help=(
        "Send a setting back to its default (e.g. --reset db-tier; repeat it, or --reset all, which keeps the names "
        "of the deployment's resources). Settings are remembered with the deployment: a flag changes only what it "
        "names, for good."
    ),
    rich_help_panel=ADVANCED,
)


def _metavar(f) -> str:
    """What the flag expects: its choices (`connector|direct`), its own word, or NAME / COUNT."""
    if f.metadata.get("metavar"):  # long choices: a word, and the help names them
        return f.metadata["metavar"]
    if f.metadata.get("choices"):
        return "|".join(f.metadata["choices"])
    return "COUNT" if f.type in ("int", int) else "NAME"


def _completer(choices: tuple[str, ...]):
    return lambda incomplete: [c for c in choices if c.startswith(incomplete)]


@functools.cache
def _setting_parameters() -> tuple[inspect.Parameter, ...]:
    """Built once, shared by every command (Typer reads them, never changes them): building them for each of
    the ~20 commands was a tenth of the start-up."""
    params = []
    for f in setting_fields():
        default = f.default
        choices = f.metadata.get("choices") or ()
        option = typer.Option(
            default,
            flag(f.name),
            envvar=env_var(f.name),
            help=f.metadata["help"],
            # The project and region come first, with the command's common options; other settings by group.
            rich_help_panel=None if f.metadata["group"] == "Project" else f.metadata["group"] + " settings",
            show_default=bool(default) or isinstance(default, int),
            show_envvar=False,  # one line under the options says it for all: MLFLOW_GCP_<NAME>
            metavar=_metavar(f),
            autocompletion=_completer(choices) if choices else None,
        )
        annotation = _TYPES[f.type] if isinstance(f.type, str) else f.type
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return tuple(params)


def with_settings(
    command: Callable | None = None,
    *,
    adopt: bool = False,
    precheck: Callable[..., None] | None = None,
    preflight: dict | Callable[[Settings, dict], dict] | None = None,
    offline_when: Callable[[str], str] | None = None,
) -> Callable:
    """Give `command(settings: Settings, ...)` one option per setting; resolve them against the settings recorded
    with the deployment (a flag or environment variable changes only what it names; a `reset` parameter of the
    command names settings to send back to their default; with `adopt`, values neither given nor recorded are
    read from the live resources), validate them before it runs, and show its errors as a message with an exit
    code. A command with a `resolution` parameter also gets where each value came from. `precheck(settings,
    **options)` runs before anything is read (e.g. a refusal that must come before any request), with the
    settings as given. `preflight` (arguments of preflight_or_exit) runs the command's preflight before the
    recorded settings are read, and tells the command to skip its own. `offline_when(project)` gives a reason
    for a command with an `offline` option to run as with it (e.g. no credentials): `offline` is then that
    reason."""
    if command is None:
        return functools.partial(
            with_settings, adopt=adopt, precheck=precheck, preflight=preflight, offline_when=offline_when
        )
    names = [f.name for f in setting_fields()]
    signature = inspect.signature(command)
    wants_resolution = "resolution" in signature.parameters

    @functools.wraps(command)
    def wrapper(**kwargs):
        click_context = kwargs.pop(CONTEXT)
        if getattr(click_context, "invoked_subcommand", None):  # a group's own action, and a subcommand named
            return None
        values = {name: kwargs.pop(name) for name in names}
        if kwargs.get("exit_code"):  # 2 means "changes pending" then: every error is 1
            return _errors_as_one(lambda: _run(click_context, values, kwargs))
        return _run(click_context, values, kwargs)

    def _run(click_context, values, kwargs):
        with handled_errors():
            from mlflow_gcp.cli.project import settle
            from mlflow_gcp.remembered import explicit_sources, reset_names, resolve

            # A command run `--offline` sends no request: the recorded settings are not read then.
            online = not kwargs.get("offline", False)
            found = settle(click_context, values)
            if found is not None and not found.from_flag:
                from rich.markup import escape

                err.print(f"[dim]project:[/] {escape(found.project)} (from {escape(found.describe())})", soft_wrap=True)
            values["project"] = found.project if found else ""
            given = validate(Settings(**values), combinations=False)
            if online and offline_when is not None and (reason := offline_when(given.project)):
                online, kwargs["offline"] = False, reason
            reset_names(kwargs.get("reset") or ())  # a misspelt name is refused before any request
            if precheck is not None:
                precheck(given, **kwargs)
            if preflight is not None and online:
                # The recorded settings live in the project: the preflight (credentials, project, billing...) runs
                # first, with the settings as given, and once.
                _preflight(given, preflight, kwargs)
            explicit = explicit_sources(click_context, names)
            resolution = resolve(values, explicit, kwargs.get("reset") or (), adopt=adopt, read=online)
            if "move_to_new_resources" in kwargs:
                _check_moves(resolution, kwargs)
            if wants_resolution:
                kwargs["resolution"] = resolution
            return command(settings=resolution.settings, **kwargs)

    own = [p for p in signature.parameters.values() if p.name not in ("settings", "resolution")]
    context = inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    settings = _setting_parameters()
    # --project, --region: listed first (Typer passes every parameter by name)
    first = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in settings if p.default.rich_help_panel is None]
    rest = [p for p in settings if p.default.rich_help_panel is not None]
    wrapper.__signature__ = signature.replace(parameters=[*first, *own, context, *rest])
    wrapper.__doc__ = inspect.cleandoc(command.__doc__ or "") + SETTINGS_EPILOG
    return wrapper


def _errors_as_one(run: Callable):
    from mlflow_gcp.cli.plan_view import ChangesPending

    try:
        return run()
    except ChangesPending:
        raise
    except typer.Exit as e:
        if e.exit_code not in (0, 1, 130):
            raise typer.Exit(1) from None
        raise


def _check_moves(resolution, kwargs: dict) -> None:
    """A command that applies steps: a changed resource name is said and confirmed, a region change refused,
    before any change is sent."""
    from mlflow_gcp import moves
    from mlflow_gcp.cli.approval import interactive
    from mlflow_gcp.cli.console import err

    def ask(question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    moves.check(
        resolution,
        accepted=kwargs["move_to_new_resources"],
        dry_run=kwargs.get("dry_run", False),
        show=err,
        ask=ask if interactive() else None,
    )


def _preflight(given: Settings, arguments, kwargs: dict) -> None:
    from mlflow_gcp.cli.preflight import preflight_or_exit
    from mlflow_gcp.gcp.clients import Clients

    # A callable builds the arguments from the settings as given and the command's options.
    arguments = dict(arguments(given, kwargs) if callable(arguments) else arguments)
    own = arguments.pop("own", False)  # the command still runs its own preflight too
    if "steps" in arguments:
        arguments["blocking"] = not kwargs.get("dry_run", False)
    preflight_or_exit(given, Clients(given.project), skip=kwargs.get("skip_preflight", False), **arguments)
    if not own:
        kwargs["skip_preflight"] = True
