"""The Rich consoles and how errors are shown."""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

import typer
from rich.console import Console

from mlflow_gcp.errors import MlflowGcpError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class _Debug:
    enabled = os.environ.get("MLFLOW_GCP_DEBUG", "") not in ("", "0", "false")


debug = _Debug()


def interactive() -> bool:
    """Whether a person can answer a question: standard input is a terminal (not CI, a pipe or a cron job)."""
    return sys.stdin.isatty()


def show_error(error: BaseException, step: str | None = None) -> int:
    """Print one paragraph for the error (naming the step it stopped, when given) and return the exit code."""
    if debug.enabled:
        err.print("".join(traceback.format_exception(error)), markup=False, end="")
    where = f" in step {step}" if step else ""
    if isinstance(error, MlflowGcpError):
        from mlflow_gcp.cli.project import with_identity_flags

        err.print(f"[bold red]Error{where}:[/] {with_identity_flags(error.message)}", soft_wrap=False)
        if error.hint:
            err.print(f"[bold]What to do:[/] {with_identity_flags(error.hint)}")
        return error.exit_code
    err.print(f"[bold red]Unexpected error{where}:[/] {type(error).__name__}: {error}", markup=True)
    if not debug.enabled:
        err.print("Run again with --debug to see the traceback, and report it if it persists.")
    return 1


def bullets(console: Console, items: list[str | tuple[str, str]]) -> None:
    """A list whose long items wrap under their own text, not under the bullet. An item may be (text, hint):
    the hint goes under it after "What to do:". No markup is read from the items. The `mlflow-gcp ...` commands
    they suggest get the flags that reach this run's deployment."""
    from rich.table import Table
    from rich.text import Text

    from mlflow_gcp.cli.project import with_identity_flags

    grid = Table.grid()
    grid.add_column(width=4, no_wrap=True)
    grid.add_column(overflow="fold")
    for item in items:
        text, hint = item if isinstance(item, tuple) else (item, "")
        grid.add_row("  - ", Text(with_identity_flags(text)))
        if hint:
            grid.add_row("", Text.assemble(("What to do: ", "bold"), with_identity_flags(hint)))
    console.print(grid)


@contextmanager
def handled_errors():
    """Turn expected errors into a message and an exit code; Ctrl-C says how to resume."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        err.print("\n[yellow]Interrupted.[/] Nothing is lost: run the same command again to resume.")
        sys.stdout.flush()
        raise typer.Exit(130) from None
    except Exception as error:
        raise typer.Exit(show_error(error)) from None
