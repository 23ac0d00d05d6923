"""Start-up: the commands are registered by name, module and summary, and a command's module is imported (and its
~40 parameters built) only when that command runs, its help is asked for, or shell completion needs it.
`mlflow-gcp --help` imports none of them (Click's "lazy group" pattern)."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import typer
import typer.main

from mlflow_gcp.cli.help_format import PanelCommand, PanelGroup, format_commands, summary


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attribute" under mlflow_gcp.cli: a command function or a typer.Typer group
    panel: str
    summary: str  # the command's help up to its first blank line (test_startup checks they agree)


def build(entry: Entry):
    """The Click command of `entry`, built as Typer would build it inside the root group."""
    module, attribute = entry.target.split(":")
    target = getattr(importlib.import_module(f"mlflow_gcp.cli.{module}"), attribute)
    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    holder.callback()(_nothing)  # a group, so that the command keeps its name
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=entry.name, rich_help_panel=entry.panel)
    else:
        holder.command(entry.name, rich_help_panel=entry.panel, cls=PanelCommand)(target)
    return typer.main.get_group(holder).commands[entry.name]


def _nothing() -> None:
    pass


class LazyGroup(PanelGroup):
    """The root group: its commands come from `entries`, built on first use (a command registered on the Typer
    app as usual is built at once, and listed after them)."""

    entries: tuple[Entry, ...] = ()

    def list_commands(self, ctx) -> list[str]:
        names = [entry.name for entry in self.entries]
        return names + [name for name in self.commands if name not in names]

    def get_command(self, ctx, name: str):
        if name not in self.commands:
            entry = next((entry for entry in self.entries if entry.name == name), None)
            if entry is None:
                return None
            self.commands[name] = build(entry)
        return self.commands[name]

    def resolve_command(self, ctx, args):
        """As Typer's, whose "Did you mean" looks only at the commands built already."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.list_commands(ctx) and not ctx.resilient_parsing:
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            guess = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{guess}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter) -> None:
        rows = [(entry.panel, entry.name, entry.summary) for entry in self.entries]
        listed = {entry.name for entry in self.entries}
        for name, command in self.commands.items():
            if name not in listed and not command.hidden:
                rows.append((getattr(command, "rich_help_panel", None), name, summary(command)))
        format_commands(rows, formatter)


def print_help_directly(app: typer.Typer, argv: Sequence[str]) -> bool:
    """`mlflow-gcp [GROUP] COMMAND --help`: print the help of the command the words name, by that command alone,
    and return True. The options before it are not parsed: Typer coerces even the unset `--help` of the root
    group with pydantic, whose import would be a third of `up --help`. False when the words name no command
    (Click then parses all and says what is wrong)."""
    if "--help" not in argv and "-h" not in argv:
        return False
    command, path = typer.main.get_command(app), []
    for word in (arg for arg in argv if not arg.startswith("-")):
        if not hasattr(command, "get_command"):
            break  # a command's argument or option value
        command = command.get_command(None, word)  # a group's commands need no context to be found
        if command is None:
            return False  # not a command: Click says so
        path.append(word)
    if not path:
        return False
    settings = app.info.context_settings or {}  # what the root's context would pass down: -h, the width
    command.main(["--help"], prog_name=" ".join([program_name(), *path]), **settings)
    return True


def program_name() -> str:
    """As Click names the program in its usage line: `python -m PACKAGE`, or the script's file name."""
    package = getattr(sys.modules.get("__main__"), "__package__", None)
    return f"python -m {package}" if package else os.path.basename(sys.argv[0])
