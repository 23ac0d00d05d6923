"""Retry predicates, each named for the Google behaviour it absorbs, and one capped-backoff loop.

Some errors are Google catching up (an API being activated, a grant or a new service account propagating):
they go away within a bound Google documents. For those, `PROPAGATION` gives how long to wait and what the
live view says while waiting; a caller opts in by accepting the error in its predicate.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.api_core import exceptions as gexc

from mlflow_gcp.errors import BuildPermissionError
from mlflow_gcp.gcp.errors import error_info, google_status, legacy_reason

T = TypeVar("T")

TRANSIENT_HTTP = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
)


def is_transient(exc: BaseException) -> bool:
    """429 and 5xx, and connections that broke on the way."""
    if isinstance(exc, TRANSIENT_HTTP):
        return True
    if isinstance(exc, ConnectionError):
        return True
    module = type(exc).__module__
    return module.startswith(("requests.", "urllib3.", "httplib2")) and "Connection" in type(exc).__name__


def is_ambiguous(exc: BaseException) -> bool:
    """A failure after which Google may or may not have applied the request: a 5xx, a timeout, a connection that
    broke. (A 429 or any other 4xx is a refusal: nothing was applied.)"""
    return is_transient(exc) and not isinstance(exc, gexc.TooManyRequests)


def is_already_exists(exc: BaseException) -> bool:
    """A create refused because the name is in use: 409 ALREADY_EXISTS, or the v1 reasons of Compute and Cloud
    SQL (`alreadyExists`, `instanceAlreadyExists`) and Storage (`conflict`: "you already own it"). Not the other
    409s: an etag conflict (ABORTED) or Cloud SQL's operationInProgress."""
    if not isinstance(exc, (gexc.Conflict, gexc.AlreadyExists)):
        return False
    status, reason = google_status(exc), legacy_reason(exc)
    if status == "ALREADY_EXISTS" or reason.lower().endswith("alreadyexists") or reason == "conflict":
        return True
    return not status and not reason


# How long a Cloud SQL mutation waits for another operation on the instance (a backup, maintenance, our own update).
SQL_IN_PROGRESS_DEADLINE = 30 * 60.0


def is_sql_operation_in_progress(exc: BaseException) -> bool:
    """Cloud SQL refuses a second operation on an instance while one runs (409 operationInProgress)."""
    return isinstance(exc, gexc.Conflict) and legacy_reason(exc) == "operationInProgress"


def is_iam_member_not_yet_visible(exc: BaseException) -> bool:
    """A just-created service account is not visible to IAM policies for up to a minute; setIamPolicy
    answers 400 with no reason field, only a message naming the missing member."""
    return isinstance(exc, gexc.BadRequest) and "does not exist" in (exc.message or "")


def is_secret_grant_not_yet_applied(exc: BaseException) -> bool:
    """Cloud Run checks, when it creates a revision, that its service account can read each referenced secret;
    a grant made minutes ago may not apply yet (400 "Permission denied on secret ... for Revision service
    account ...")."""
    return isinstance(exc, gexc.BadRequest) and "Permission denied on secret" in (exc.message or "")


def is_build_grant_not_yet_applied(exc: BaseException) -> bool:
    """A build ended in FAILURE because its account was denied reading its source, pushing the image or writing
    its logs: the grants made minutes before may not apply yet. Raised only once the build is known to have failed
    (a build is not idempotent), so retrying starts the next build after the last one ended."""
    return isinstance(exc, BuildPermissionError)


def is_service_activating(exc: BaseException) -> bool:
    """Right after enabling an API, calls can still answer SERVICE_DISABLED for a few minutes (or, from the
    Storage JSON API, the legacy reason accessNotConfigured)."""
    return isinstance(exc, gexc.GoogleAPICallError) and (
        error_info(exc)[0] == "SERVICE_DISABLED" or legacy_reason(exc) == "accessNotConfigured"
    )


def any_of(*predicates: Callable[[BaseException], bool]) -> Callable[[BaseException], bool]:
    return lambda exc: any(p(exc) for p in predicates)


def initial_delay() -> float:
    """First backoff delay in seconds; MLFLOW_GCP_RETRY_DELAY shortens it for tests and emulators."""
    return float(os.environ.get("MLFLOW_GCP_RETRY_DELAY", "1.0"))


def scaled(seconds: float) -> float:
    """A wait for Google to catch up, in seconds; MLFLOW_GCP_WAIT_SCALE shortens every such wait in tests
    (0.01 makes a minute 0.6 s)."""
    return seconds * float(os.environ.get("MLFLOW_GCP_WAIT_SCALE", "1.0"))


@dataclass(frozen=True)
class Propagation:
    """An error that goes away once Google has caught up, how long that can take, and what we wait for."""

    matches: Callable[[BaseException], bool]
    seconds: float
    waiting_for: str
    source: str


PROPAGATION = (
    Propagation(
        is_service_activating,
        300.0,
        "an API just enabled to become usable (SERVICE_DISABLED can last a few minutes)",
        "https://cloud.google.com/service-usage/docs/enable-disable",
    ),
    Propagation(
        is_iam_member_not_yet_visible,
        180.0,
        "the new service account to become visible to IAM",
        "https://github.com/GoogleCloudPlatform/magic-modules/pull/10813",
    ),
    Propagation(
        is_secret_grant_not_yet_applied,
        420.0,
        "the secret accessor grants to apply (IAM changes take up to 7 minutes)",
        "https://cloud.google.com/iam/docs/access-change-propagation",
    ),
    Propagation(
        is_build_grant_not_yet_applied,
        420.0,
        "the build account's grants to apply before building again (IAM changes take up to 7 minutes)",
        "https://cloud.google.com/iam/docs/access-change-propagation",
    ),
)

_reporter = threading.local()


def report_waits_to(log: Callable[[str], None] | None) -> None:
    """Where this thread's retries say what they wait for (the step's live view); None: nowhere."""
    _reporter.log = log


def say_waiting(message: str) -> None:
    log = getattr(_reporter, "log", None)
    if log is not None:
        log(message)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def wait_message(waiting_for: str, seconds: float) -> str:
    return f"waiting for {waiting_for} (at most {minutes(seconds)})"


# Tries made before a deadline is allowed to end a retry loop.
MIN_ATTEMPTS = 3


def call(
    fn: Callable[[], T],
    *,
    predicate: Callable[[BaseException], bool] = is_transient,
    deadline: float = 120.0,
    maximum_delay: float = 30.0,
    also: tuple[Propagation, ...] = (),
    applied: Callable[[], T | None] | None = None,
) -> T:
    """Call fn, retrying errors the predicate accepts with capped exponential backoff and full jitter, until
    `deadline` seconds have passed; the last attempt is made at the deadline. An accepted error of a known
    propagation (PROPAGATION, or `also`, accepted whatever the predicate) sets the deadline to that
    propagation's bound and says in the live view what it waits for.

    `applied` makes a request that is not idempotent (a secret version, a build, a user) take effect once: after
    an ambiguous failure, where Google may have applied it and lost the answer, it reads the state back and returns
    what it finds instead of sending again; it returns None when the request left no trace."""
    start = time.monotonic()
    delay = initial_delay()
    announced: set[str] = set()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as exc:
            if not predicate(exc) and not any(p.matches(exc) for p in also):
                raise
            for propagation in (*also, *PROPAGATION):
                if propagation.matches(exc):
                    deadline = scaled(propagation.seconds)  # its own bound, not the caller's
                    if propagation.waiting_for not in announced:
                        announced.add(propagation.waiting_for)
                        say_waiting(wait_message(propagation.waiting_for, propagation.seconds))
            remaining = deadline - (time.monotonic() - start)
            # A bound in time alone would let a slow machine or network give up after a single try.
            if remaining <= 0 and attempts >= MIN_ATTEMPTS:
                raise
            if applied is not None and is_ambiguous(exc):
                found = call(applied, predicate=predicate, deadline=deadline, maximum_delay=maximum_delay)
                if found is not None:
                    return found
        time.sleep(max(0.0, min(delay * (0.5 + random.random() / 2), remaining)))
        delay = min(delay * 2, scaled(maximum_delay))
