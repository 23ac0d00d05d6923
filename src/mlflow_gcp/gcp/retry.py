"""Retry predicates, each named for the Google behaviour it absorbs, and one capped-backoff loop."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from google.api_core import exceptions as gexc

from mlflow_gcp.gcp.errors import error_info, legacy_reason

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


def is_sql_operation_in_progress(exc: BaseException) -> bool:
    """Cloud SQL refuses a second operation on an instance while one runs (409 operationInProgress)."""
    return isinstance(exc, gexc.Conflict) and legacy_reason(exc) == "operationInProgress"


def is_iam_member_not_yet_visible(exc: BaseException) -> bool:
    """A just-created service account is not visible to IAM policies for up to a minute; setIamPolicy
    answers 400 with no reason field, only a message naming the missing member."""
    return isinstance(exc, gexc.BadRequest) and "does not exist" in (exc.message or "")


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


def call(
    fn: Callable[[], T],
    *,
    predicate: Callable[[BaseException], bool] = is_transient,
    deadline: float = 120.0,
    maximum_delay: float = 30.0,
) -> T:
    """Call fn, retrying errors the predicate accepts with capped exponential backoff and full jitter."""
    start = time.monotonic()
    delay = initial_delay()
    while True:
        try:
            return fn()
        except Exception as exc:
            if not predicate(exc) or time.monotonic() - start + delay > deadline:
                raise
        time.sleep(delay * (0.5 + random.random() / 2))
        delay = min(delay * 2, maximum_delay)
