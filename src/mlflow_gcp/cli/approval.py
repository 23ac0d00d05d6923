"""Whether a change that restarts or replaces something may go ahead: `--yes`, else a question on a terminal,
else a clear error before the change is sent."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from mlflow_gcp.engine.base import Change
from mlflow_gcp.errors import ChangeNotAcceptedError


def interactive() -> bool:
    """A person can answer: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def what_it_does(change: Change) -> str:
    return "; ".join(f"{field}: {effect.note}" for field, effect in change.disruptive)


class Approval:
    """`StepContext.approve` for the CLI. Steps run in threads: one question at a time."""

    def __init__(
        self,
        *,
        yes: bool,
        ask: Callable[[str], bool] | None = None,
        pause: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.yes = yes
        self.ask = ask
        self.pause = pause
        self._lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        if self.yes:
            return
        effects = what_it_does(change)
        if self.ask is None:
            raise ChangeNotAcceptedError(
                f"Changing {change.resource} interrupts the server ({effects}); nothing was sent for it, since "
                "there is no terminal to ask and --yes was not given.",
                "Run the same command with --yes to accept it (at a quiet time), or on a terminal to be asked; "
                "`mlflow-gcp up --dry-run` lists every change first.",
            )
        with self._lock, self.pause():
            accepted = self.ask(f"{change.resource}: {effects}. Go ahead?")
        if not accepted:
            raise ChangeNotAcceptedError(
                f"The change of {change.resource} was declined ({effects}); nothing was sent for it.",
                "Run again when the interruption is acceptable, or give the live value back as a setting "
                "(see `mlflow-gcp status`).",
            )


def cli_approval(*, yes: bool, pause: Callable[[], AbstractContextManager]) -> Approval:
    import typer

    def ask(question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    return Approval(yes=yes, ask=ask if interactive() else None, pause=pause)
