"""Start-up: Typer turns every command's parameters into Click options before it parses anything (about 40
settings on each of 20 commands). A run needs only the command it names; the others keep their name and help
(for `--help`, and for "No such command … Did you mean") but lose their parameters."""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence

import typer


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
