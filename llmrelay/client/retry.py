"""When the client retries a failed request, and how long it waits.

Retried (only before any output reached the caller): connection errors
(:class:`~llmrelay.errors.ConnectError`, and a connection that broke before the
answer's first event, :class:`~llmrelay.errors.StreamIncompleteError` - but not a
stalled one), HTTP 408, 409, 429 and 5xx, and in-band rate-limit / server errors
that carry no status. Never retried: 400, 401, 403, 404, 422, timeouts while
waiting for an answer, and everything else.

The wait before retry ``n`` (0-based) is the server's ``retry_after`` when it
sent one, else ``min(0.5 * 2**n, 8)`` seconds less up to 25 % jitter. A
``retry_after`` above :data:`MAX_RETRY_AFTER` is not waited for: the error is
raised at once (it carries ``retry_after`` for the caller). A ``retry_after``
that is not a finite number of seconds (``nan``, ``inf``, not a number) is
ignored and the backoff applies, so no wait is ever unbounded.
"""

from __future__ import annotations

import math
import random

from ..errors import ConnectError, RateLimitError, RelayError, ServerError, StreamIncompleteError, TimeoutError

__all__ = [
    "BASE_DELAY",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "backoff",
    "cap_retry_after",
    "is_retryable",
    "retry_delay",
]

BASE_DELAY = 0.5
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset((408, 409, 429))


def is_retryable(error: BaseException) -> bool:
    """True for errors worth sending the same request again for (see the module docstring)."""
    if isinstance(error, ConnectError):
        return True
    if isinstance(error, StreamIncompleteError):  # the client only asks while nothing reached the caller
        return not isinstance(error, TimeoutError)
    if not isinstance(error, RelayError):
        return False
    status = error.status
    if status is not None:
        return status in RETRY_STATUSES or 500 <= status <= 599
    return isinstance(error, (RateLimitError, ServerError))


def backoff(attempt: int) -> float:
    """The jittered exponential wait before retry number ``attempt`` (0-based)."""
    return min(BASE_DELAY * 2**attempt, MAX_DELAY) * (1.0 - 0.25 * random.random())


def retry_delay(
    error: BaseException, attempt: int, max_retries: int, max_retry_after: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait before retrying after ``error`` on attempt ``attempt``; None: do not retry (also when the
    server asked for a wait over ``max_retry_after``)."""
    if attempt >= max_retries or not is_retryable(error):
        return None
    retry_after = _seconds(getattr(error, "retry_after", None))
    if retry_after is not None:
        if retry_after > max_retry_after:
            return None
        return max(retry_after, 0.0)
    return backoff(attempt)


def cap_retry_after(error: BaseException, cap: float) -> None:
    """Lower a server's ``retry_after`` on ``error`` (and on each error of an ``AllProvidersFailedError``) to ``cap``
    seconds: an upstream must not choose how long a gateway leaves a target out, nor what it tells its callers. A
    value that is not a finite number is dropped."""
    for failure in (error, *(item for _, item in getattr(error, "errors", ()))):
        if isinstance(failure, RelayError) and failure.retry_after is not None:
            seconds = _seconds(failure.retry_after)
            failure.retry_after = None if seconds is None else min(max(seconds, 0.0), cap)


def _seconds(value: object) -> float | None:
    """``value`` as a finite number of seconds, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None
