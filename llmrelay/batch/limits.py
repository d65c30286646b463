"""How fast a batch starts requests: AIMD concurrency, one shared pause, ``--rpm`` and ``--tpm`` (SPEC 10.5).

:class:`Limits` is plain state with no I/O, so one instance can serve one process (the local backend) or sit in
the Ray coordinator actor and serve every actor of a cluster (N actors never exceed what one process would):

* concurrency starts at 4 (at most ``max_concurrency``), grows by one after every ``concurrency`` successes in a
  row, up to ``max_concurrency``, and halves on a 429 / 503 / 529 — once per window: a throttled answer to a
  request that started before the last halving does not halve again (the requests of one burst share one cut);
* a ``Retry-After`` pauses every new start until that instant: one shared deadline, extended, never shortened;
* ``rpm``: a token bucket refilled at ``rpm / 60`` per second holding at most ``max(1, rpm / 60)``, so starts are
  evenly spaced; ``tpm``: new starts wait while the tokens reported by the answers of the last 60 s reach ``tpm``.

:class:`Gate` wraps it for one event loop: ``await gate.acquire()`` returns when a request may start (waiters
sleep on one shared wake-up, never one timer each) and ``gate.release(ticket, outcome)`` reports how it went.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["START_CONCURRENCY", "THROTTLE_STATUSES", "WINDOW_S", "Gate", "Limits", "Outcome", "Stopped"]

START_CONCURRENCY = 4
THROTTLE_STATUSES = frozenset((429, 503, 529))
WINDOW_S = 60.0


class Stopped(Exception):  # noqa: N818 (a signal more than an error)
    """The gate was closed (the run is stopping): start nothing more."""


class Outcome:
    """What one attempt came to, as the limits see it."""

    __slots__ = ("retry_after", "success", "throttled", "tokens")

    def __init__(
        self, success: bool = False, throttled: bool = False, retry_after: float | None = None, tokens: int = 0
    ) -> None:
        self.success = success
        self.throttled = throttled
        self.retry_after = retry_after
        self.tokens = tokens

    def to_tuple(self) -> tuple[bool, bool, float | None, int]:
        return self.success, self.throttled, self.retry_after, self.tokens


class Limits:
    """The state behind the rules of the module docstring; every method takes the current time (monotonic s)."""

    def __init__(self, max_concurrency: int, rpm: float | None = None, tpm: int | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be 1 or more")
        self.max_concurrency = max_concurrency
        self.concurrency = min(START_CONCURRENCY, max_concurrency)
        self.in_flight = 0
        self.streak = 0
        self.epoch = 0  # halvings so far: a ticket remembers the epoch its request started in
        self.pause_until = 0.0
        self.rpm = rpm
        self.burst = max(1.0, rpm / 60.0) if rpm else 0.0
        self.bucket = self.burst
        self.refilled_at: float | None = None
        self.tpm = tpm
        self.timed = bool(rpm or tpm)  # a limit that depends on the time besides the pause
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_total = 0
        self.max_seen = 0  # the most requests ever in flight at once
        self.halvings = 0

    # ---------------------------------------------------------------------------- starting

    def wait_time(self, now: float) -> float | None:
        """0 when a request may start now; seconds until a time-based limit lifts; None while the concurrency is
        full (a release wakes the waiters)."""
        if self.in_flight >= self.concurrency:
            return None
        wait = self.pause_until - now
        if self.rpm:
            self._refill(now)
            if self.bucket < 1.0:
                wait = max(wait, (1.0 - self.bucket) * 60.0 / self.rpm)
        if self.tpm:
            self._expire(now)
            if self.token_total >= self.tpm and self.tokens:
                wait = max(wait, self.tokens[0][0] + WINDOW_S - now)
        return max(wait, 0.0)

    def start(self, now: float) -> int:
        """Count a request as started (call after ``wait_time(now) == 0``); returns its ticket (the epoch)."""
        self.in_flight += 1
        if self.in_flight > self.max_seen:
            self.max_seen = self.in_flight
        if self.rpm:
            self.bucket -= 1.0
        return self.epoch

    def _refill(self, now: float) -> None:
        if self.refilled_at is not None and self.rpm:
            self.bucket = min(self.burst, self.bucket + (now - self.refilled_at) * self.rpm / 60.0)
        self.refilled_at = now

    def _expire(self, now: float) -> None:
        tokens = self.tokens
        while tokens and tokens[0][0] <= now - WINDOW_S:
            self.token_total -= tokens.popleft()[1]

    # ---------------------------------------------------------------------------- finishing

    def finish(self, ticket: int, outcome: Outcome, now: float) -> None:
        """Count a request as done and adapt: grow after a streak of successes, halve on a throttle, pause."""
        self.in_flight = max(0, self.in_flight - 1)
        if outcome.success:
            self.streak += 1
            if self.streak >= self.concurrency:
                self.streak = 0
                self.concurrency = min(self.max_concurrency, self.concurrency + 1)
        elif outcome.throttled:
            self.streak = 0
            if ticket == self.epoch:
                self.concurrency = max(1, self.concurrency // 2)
                self.epoch += 1
                self.halvings += 1
        retry_after = outcome.retry_after
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            self.pause_until = max(self.pause_until, now + retry_after)
        if outcome.tokens and self.tpm:
            self.tokens.append((now, outcome.tokens))
            self.token_total += outcome.tokens

    def abandon(self) -> None:
        """A started request that ended without an answer the limits should learn from (cancelled)."""
        self.in_flight = max(0, self.in_flight - 1)


class Gate:
    """:class:`Limits` for one event loop. Waiting for a free slot is a queue (a release wakes as many waiters as
    may start); waiting for time (the pause, rpm, tpm) is one shared future woken by one timer."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._queue: deque[asyncio.Future[None]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.closed = False

    async def acquire(self) -> int:
        """Wait until a request may start, count it as started and return its ticket; :class:`Stopped` once the
        gate is closed."""
        limits = self.limits
        if limits.in_flight < limits.concurrency and not (self.closed or limits.timed or limits.pause_until):
            return limits.start(0.0)  # a free slot and no limit in time (no rpm / tpm, no pause yet): no clock read
        while True:
            if self.closed:
                raise Stopped
            now = self.clock()
            wait = limits.wait_time(now)
            if wait == 0.0:
                return limits.start(now)
            loop = asyncio.get_running_loop()
            if wait is None:
                slot = loop.create_future()
                self._queue.append(slot)
                await slot
                continue
            if self._wake is None or self._wake.done():
                self._wake = loop.create_future()
            self._arm(loop, now + wait)
            await asyncio.shield(self._wake)

    def release(self, ticket: int, outcome: Outcome) -> None:
        self.limits.finish(ticket, outcome, self.clock())
        if self._queue:
            self._wake_slots()

    def abandon(self) -> None:
        self.limits.abandon()
        self._wake_slots()

    def _wake_slots(self) -> None:
        free = self.limits.concurrency - self.limits.in_flight
        queue = self._queue
        while free > 0 and queue:
            slot = queue.popleft()
            if not slot.done():
                slot.set_result(None)
                free -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        """One timer for the earliest instant a time-based limit lifts."""
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_later(max(0.0, at - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def close(self) -> None:
        """Start nothing more: every waiter (now and later) gets :class:`Stopped`."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_timer()
        while self._queue:
            slot = self._queue.popleft()
            if not slot.done():
                slot.set_result(None)
