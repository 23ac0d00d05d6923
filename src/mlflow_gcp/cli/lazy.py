"""Start-up: Typer turns every command's parameters into Click options before it parses anything (about 40
settings on each of 20 commands). A run needs only the command it names; the others keep their name and help
(for `--help`, and for "No such command … Did you mean") but lose their parameters."""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence

import typer
import typer.main


def _stub(info):
    """The command with its name, help and panel, and no parameters."""
    original = info.callback

    def stub() -> None:  # never run: the real command is kept when it is named
        raise AssertionError(f"stub of {getattr(original, '__name__', 'a command')} called")

    stub.__doc__ = inspect.getdoc(original) if original is not None else None
    stubbed = copy.copy(info)
    stubbed.callback = stub
    return stubbed


def trimmed(app: typer.Typer, words: Sequence[str]) -> typer.Typer:
    """A copy of `app` that keeps whole only the command `words` name (the first word at each level of groups)."""
    name = words[0] if words else None
    lean = copy.copy(app)
    lean.registered_commands = [c if c.name == name else _stub(c) for c in app.registered_commands]
    groups = []
    for group in app.registered_groups:
        kept = copy.copy(group)
        kept.typer_instance = trimmed(group.typer_instance, words[1:] if group.name == name else ())
        groups.append(kept)
    lean.registered_groups = groups
    return lean


def for_argv(app: typer.Typer, argv: Sequence[str]) -> typer.Typer:
    """The app to run for these arguments. Shell completion (Click's `_PROG_COMPLETE` variable) reads the words
    from elsewhere and gets the whole app."""
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return app
    return trimmed(app, [arg for arg in argv if not arg.startswith("-")])


def run(app: typer.Typer, argv: Sequence[str]) -> None:
    """Run the command line. The help of a command is printed by that command alone: the options before it
    need no parsing then, and parsing them would cost Typer a pydantic import (a third of `up --help`)."""
    lean = for_argv(app, argv)
    if "--help" in argv or "-h" in argv:
        _without_unused_rich_modules()
        command = typer.main.get_command(lean)
        path: list[str] = []
        for word in (arg for arg in argv if not arg.startswith("-")):
            if not hasattr(command, "commands"):
                break  # a command's argument or option value
            command = command.commands.get(word)
            if command is None:
                break  # not a command: Click says so
            path.append(word)
        if command is not None and path:
            settings = getattr(app.info, "context_settings", None) or {}
            names = settings.get("help_option_names", ["--help"])
            command.main(["--help"], prog_name=" ".join([_program_name(), *path]), help_option_names=names)
            return
    lean()


def _program_name() -> str:
    try:
        from click.utils import _detect_program_name

        return _detect_program_name()
    except ImportError:  # a Click without it: the name of the console script
        return "mlflow-gcp"


class _Unused:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("rich.markdown / rich.traceback are not loaded while help is printed")


def _without_unused_rich_modules() -> None:
    """Typer's help formatter imports rich.markdown (markdown-it) and rich.traceback, which help in "rich" markup
    mode with pretty exceptions off never uses: a third of `--help`. While help is printed (the process then
    ends), they are stand-ins that fail loudly if ever used."""
    import sys
    import types

    for name, attribute in (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback")):
        if name not in sys.modules:
            stand_in = types.ModuleType(name)
            setattr(stand_in, attribute, _Unused)
            sys.modules[name] = stand_in
