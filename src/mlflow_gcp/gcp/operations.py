"""One waiter for every kind of long-running operation: poll until done, with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from mlflow_gcp.errors import OperationFailedError, OperationTimeoutError
from mlflow_gcp.gcp import retry

T = TypeVar("T")


def poll_delay(elapsed: float) -> float:
    """Short polls at first, then about 4% of the time already waited, so waiting overshoots the
    operation's end by a few percent at most; never more than 10 s between polls."""
    minimum = float(os.environ.get("MLFLOW_GCP_POLL_MIN", "0.25"))
    return min(10.0, max(minimum, elapsed * 0.04))


def wait(
    poll: Callable[[], T],
    *,
    is_done: Callable[[T], bool],
    error_of: Callable[[T], str | None],
    what: str,
    timeout: float,
    first: T | None = None,
) -> T:
    """Poll until is_done; raise OperationFailedError with Google's message, or OperationTimeoutError."""
    start = time.monotonic()
    state = first if first is not None else retry.call(poll)
    while not is_done(state):
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise OperationTimeoutError(
                f"{what} did not finish within {int(timeout)} s.",
                "It may still complete on Google's side: run the same command again later to pick it up.",
            )
        time.sleep(poll_delay(elapsed))
        state = retry.call(poll)
    message = error_of(state)
    if message:
        raise OperationFailedError(f"{what} failed: {message}")
    return state


def wait_gapic(operation, *, what: str, timeout: float):
    """Wait for a google.api_core Operation (google.longrunning) and return its result."""
    wait(lambda: operation.done(retry=None), is_done=bool, error_of=lambda _: None, what=what, timeout=timeout)
    error = operation.exception()
    if error is not None:
        raise OperationFailedError(f"{what} failed: {getattr(error, 'message', None) or error}")
    return operation.result()


def settled(
    get: Callable[[], T | None],
    *,
    busy: Callable[[T], bool],
    what: str,
    timeout: float,
    wait_now: bool = True,
    on_wait: Callable[[T], None] | None = None,
) -> T | None:
    """Read a resource with `get` (None: absent). While it is `busy` (being created, reserved, rolled out) and
    `wait_now` (not in a dry run: a plan shows what is there now), read it again until it is not, or is gone;
    `on_wait(current)` says that it waits."""
    current = get()
    if current is None or not busy(current) or not wait_now:
        return current
    if on_wait is not None:
        on_wait(current)
    return wait(
        get,
        is_done=lambda c: c is None or not busy(c),
        error_of=lambda c: None,
        what=what,
        timeout=timeout,
        first=current,
    )
