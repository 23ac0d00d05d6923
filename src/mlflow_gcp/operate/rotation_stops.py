"""How `credentials rotate` stops: its errors, the reason it says, and the shield that turns Ctrl-C or SIGTERM
into one stop of the stage in progress, after which the undoing or finishing cannot be cut short."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlflow_gcp.errors import MlflowGcpError

Log = Callable[[str], None]


class RotationError(MlflowGcpError):
    """A rotation stopped midway; the message says what is in place and the hint how to finish."""


class RotationInterrupted(RotationError):
    """Ctrl-C or SIGTERM stopped a rotation; what was in progress has been undone or finished."""

    exit_code = 130


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during a rotation."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Shield:
    """While a rotation runs, SIGINT and SIGTERM stop the stage in progress once (as `Interrupted`); from then on
    (and while the rotation finishes) further signals are ignored with a note, so that the undoing or finishing
    cannot itself be cut short and leave the server and its database disagreeing."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.raised = False  # set once the first signal has been turned into an exception, or by `hold`
        self.note = "interrupted again: ignored until the undoing is done (the server and the database agree then)"

    def _handle(self, signum: int, frame) -> None:
        if self.raised:
            self.log(self.note)
            return
        self.raised = True
        raise Interrupted(signum)

    def hold(self, note: str | None = None) -> None:
        """From now on signals are only noted (with `note`)."""
        self.raised = True
        self.note = note or self.note

    @contextmanager
    def installed(self) -> Iterator[Shield]:
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def reason(error: BaseException) -> str:
    if isinstance(error, Interrupted):
        return f"interrupted ({error.signal_name})"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, MlflowGcpError):
        return error.message.rstrip(".")
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message}".rstrip(".")
