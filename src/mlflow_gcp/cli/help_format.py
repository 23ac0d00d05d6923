"""How `--help` reads: Click's own plain-text help (no Rich: Typer's Rich help formatter loads Markdown and
traceback rendering and costs more than the whole rest of `mlflow-gcp --help`), with the options and commands
grouped in sections by their `rich_help_panel` ("Options" first), one column width for all sections of a help,
and names and defaults never broken at a hyphen.

Every command and group of the tool is built with these classes (`cls=`); tests/test_startup.py checks it."""

from __future__ import annotations

import textwrap
from gettext import gettext as _

import typer.core

OPTIONS = "Options"
ADVANCED = "Advanced options"
FIRST_COLUMN_MAX = 32  # `--exit-code, --detailed-exitcode`, `--connector-max-instances COUNT` fit beside their help


def _sections(records, first: str = OPTIONS) -> dict[str, list[tuple[str, str]]]:
    """(panel, row) pairs grouped by panel: `first` (no panel) first, the others in order of appearance."""
    sections: dict[str, list[tuple[str, str]]] = {first: []}
    for panel, row in records:
        sections.setdefault(panel or first, []).append(row)
    return {title: rows for title, rows in sections.items() if rows}


def write_sections(formatter, sections: dict[str, list[tuple[str, str]]]) -> None:
    """Each section as Click writes a definition list, with one first-column width for all of them."""
    width = min(max(len(term) for rows in sections.values() for term, _text in rows), FIRST_COLUMN_MAX) + 2
    for title, rows in sections.items():
        with formatter.section(title):
            for term, text in rows:
                _write_row(formatter, term, text, width)


def _write_row(formatter, term: str, text: str, width: int) -> None:
    indent = " " * formatter.current_indent
    lines = textwrap.wrap(
        " ".join(text.split()).replace("[default: ", "[default:\N{NO-BREAK SPACE}"),  # the value stays with it
        max(formatter.width - formatter.current_indent - width, 20),
        break_on_hyphens=False,  # `mlflow-tracking-database`, `europe-west1` stay whole
        break_long_words=False,
    )
    lines = [line.replace("\N{NO-BREAK SPACE}", " ") for line in lines]
    if len(term) + 2 > width:  # a long term on its own line, its help under the column
        formatter.write(f"{indent}{term}\n")
        first, rest = "", lines
    else:
        first, rest = term.ljust(width), lines[:1]
        formatter.write(f"{indent}{first}{rest[0] if rest else ''}".rstrip() + "\n")
        rest = lines[1:]
    for line in rest:
        formatter.write(f"{indent}{' ' * width}{line}\n")


def format_options(command, ctx, formatter) -> None:
    arguments, options = [], []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            if param.param_type_name == "argument":  # by its metavar alone (Typer would add `<str>`)
                arguments.append((param.metavar or param.name.upper(), record[1]))
            else:
                options.append((getattr(param, "rich_help_panel", None), record))
    sections = _sections(options)
    if arguments:
        sections = {_("Arguments"): arguments, **sections}
    if sections:
        write_sections(formatter, sections)


def format_commands(rows, formatter) -> None:
    """`rows`: (panel, name, summary) of each command, in the order they are listed."""
    write_sections(formatter, _sections(((panel, (name, text)) for panel, name, text in rows), first="Commands"))


def summary(command) -> str:
    """What a command list says of a command: its short help, else its help up to the first blank line."""
    return command.short_help or (command.help or "").split("\n\n")[0]


class PanelCommand(typer.core.TyperCommand):
    def format_options(self, ctx, formatter) -> None:
        format_options(self, ctx, formatter)


class PanelGroup(typer.core.TyperGroup):
    def format_options(self, ctx, formatter) -> None:
        format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((getattr(command, "rich_help_panel", None), name, summary(command)))
        if rows:
            format_commands(rows, formatter)
