"""State the gateway keeps across requests: key limits, target cooldowns, the response cache.

:class:`State` is the interface; :class:`MemoryState` keeps everything in this process. A Redis-backed
implementation (shared by replicas, SPEC 8.8) implements the same interface with the same algorithm:

* limits are exact sliding windows of 60 s: ``rpm`` counts requests admitted in the last 60 s, ``tpm``
  sums tokens added in the last 60 s; ``retry_after`` is the time until the oldest entry leaves the
  window, rounded up to whole seconds, at least 1;
* ``key`` arguments are gateway key NAMES (never the secret); targets are ``"provider/model"`` strings;
* stored responses (SPEC 9.2.5) live per ``scope`` (the gateway key's name, ``""`` with no keys configured) and
  response id, for a TTL; in memory also bounded in number and in bytes (least recently used first out).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["WINDOW_S", "LimitExceeded", "MemoryState", "State"]

WINDOW_S = 60.0
MAX_CACHE_ENTRY_BYTES = 4 * 1024 * 1024  # an answer larger than this is not cached (both backends)
MAX_CACHE_BYTES = 256 * 1024 * 1024  # in memory: all cached answers together (oldest out first)


class LimitExceeded(Exception):  # noqa: N818 (the name state_api.md fixes)
    """A gateway key is over a limit."""

    def __init__(self, limit: str, retry_after: float) -> None:
        super().__init__(f"over {limit}; retry after {retry_after:g} s")
        self.limit = limit  # "rpm" | "tpm" | "max_concurrent"
        self.retry_after = retry_after  # seconds, > 0, finite


class State(Protocol):
    async def admit(self, key: str, rpm: int | None, tpm: int | None, max_concurrent: int | None) -> str | None:
        """Count one request for gateway key ``key`` (rpm), check tokens of the last 60 s against tpm, and take a
        concurrency slot when max_concurrent is set. Returns the slot id to release (None when no slot was taken).
        Raises LimitExceeded — then nothing was counted or taken."""

    async def release(self, key: str, slot: str) -> None:
        """Give back a slot (finish, error, caller disconnect)."""

    async def add_tokens(self, key: str, tokens: int) -> None:
        """tpm accounting, from the answer's usage."""

    async def cooling(self, target: str) -> float:
        """Seconds left of the target's cooldown; 0.0 if none."""

    async def failed(self, target: str, cooldown_after: int, cooldown_s: float, retry_after: float | None) -> bool:
        """One more failure in a row; starts a cooldown (returns True) after ``cooldown_after`` in a row, or at
        once for ``retry_after`` seconds when the upstream sent one."""

    async def succeeded(self, target: str) -> None:
        """Resets the failure streak."""

    async def rate_limited(self, target: str) -> bool:
        """Whether the target's current cooldown was started by an upstream ``Retry-After`` (a rate limit)."""

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def response_get(self, scope: str, response_id: str) -> bytes | None:
        """A stored response of ``scope``; None when unknown, expired, deleted or another scope's."""

    async def response_put(
        self, scope: str, response_id: str, value: bytes, ttl_s: float, max_entries: int, max_bytes: int | None = None
    ) -> None:
        """Keep a response for ``ttl_s`` seconds; a process keeps at most ``max_entries`` of at most ``max_bytes``
        in all (Redis: TTL only)."""

    async def response_delete(self, scope: str, response_id: str) -> bool:
        """Forget a stored response; False when there was none."""

    async def close(self) -> None: ...


def _wait(seconds: float) -> float:
    return float(max(1, math.ceil(seconds)))


class _KeyUsage:
    __slots__ = ("requests", "slots", "token_total", "tokens")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_total = 0  # the sum of ``tokens``, kept as entries come and go (a check must not sum them)
        self.slots: set[str] = set()


class MemoryState:
    """Everything in this process (one worker). ``clock`` is monotonic seconds (tests may pass their own)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_cache_entries: int = 10_000,
        max_cache_entry_bytes: int = MAX_CACHE_ENTRY_BYTES,
        max_cache_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyUsage] = {}
        self._streaks: dict[str, int] = {}
        self._cool_until: dict[str, float] = {}
        self._told: set[str] = set()  # targets whose cooldown an upstream's Retry-After started
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._max_cache = max_cache_entries
        self._max_cache_entry = max_cache_entry_bytes  # as Redis's: a larger answer is not cached
        self._max_cache_bytes = max_cache_bytes  # all cached answers together
        self._cache_bytes = 0
        self._responses: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._response_bytes = 0  # the sum of the stored responses' sizes
        self._slot_ids = itertools.count(1)

    # ---------------------------------------------------------------- key limits

    def _usage(self, key: str, now: float) -> _KeyUsage:
        usage = self._keys.get(key)
        if usage is None:
            usage = self._keys[key] = _KeyUsage()
        start = now - WINDOW_S
        requests, tokens = usage.requests, usage.tokens
        while requests and requests[0] <= start:
            requests.popleft()
        while tokens and tokens[0][0] <= start:
            usage.token_total -= tokens.popleft()[1]
        return usage

    async def admit(self, key: str, rpm: int | None, tpm: int | None, max_concurrent: int | None) -> str | None:
        if rpm is None and tpm is None and max_concurrent is None:
            return None
        now = self._clock()
        usage = self._usage(key, now)
        if rpm is not None and len(usage.requests) >= rpm:
            # The request that lets one more in is the (len - rpm + 1)-th oldest.
            oldest = usage.requests[len(usage.requests) - rpm] if rpm > 0 else now
            raise LimitExceeded("rpm", _wait(oldest + WINDOW_S - now))
        if tpm is not None and usage.tokens and usage.token_total >= tpm:
            raise LimitExceeded("tpm", _wait(usage.tokens[0][0] + WINDOW_S - now))
        if max_concurrent is not None and len(usage.slots) >= max_concurrent:
            raise LimitExceeded("max_concurrent", 1.0)
        if rpm is not None:
            usage.requests.append(now)
        if max_concurrent is None:
            return None
        slot = str(next(self._slot_ids))
        usage.slots.add(slot)
        return slot

    async def release(self, key: str, slot: str) -> None:
        usage = self._keys.get(key)
        if usage is not None:
            usage.slots.discard(slot)

    async def add_tokens(self, key: str, tokens: int) -> None:
        if tokens > 0:
            now = self._clock()
            usage = self._usage(key, now)
            usage.tokens.append((now, tokens))
            usage.token_total += tokens

    # ----------------------------------------------------------------- cooldowns

    async def cooling(self, target: str) -> float:
        until = self._cool_until.get(target)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._cool_until[target]
            return 0.0
        return left

    async def failed(self, target: str, cooldown_after: int, cooldown_s: float, retry_after: float | None) -> bool:
        streak = self._streaks.get(target, 0) + 1
        self._streaks[target] = streak
        if retry_after is not None and retry_after > 0:
            self._cool_until[target] = self._clock() + retry_after
            self._streaks[target] = 0
            self._told.add(target)
            return True
        if streak >= cooldown_after:
            self._cool_until[target] = self._clock() + cooldown_s
            self._streaks[target] = 0
            self._told.discard(target)
            return True
        return False

    async def succeeded(self, target: str) -> None:
        self._streaks.pop(target, None)

    async def rate_limited(self, target: str) -> bool:
        return target in self._told and await self.cooling(target) > 0

    # --------------------------------------------------------------------- cache

    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._cache_drop(key)
            return None
        return entry[1]

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0 or len(value) > self._max_cache_entry:
            return
        self._cache_drop(key)
        cache, size = self._cache, len(value)
        if len(cache) >= self._max_cache or self._cache_bytes + size > self._max_cache_bytes:
            now = self._clock()
            for stale in [name for name, (until, _) in cache.items() if until <= now]:
                self._cache_drop(stale)
            while cache and (len(cache) >= self._max_cache or self._cache_bytes + size > self._max_cache_bytes):
                self._cache_drop(next(iter(cache)))  # still full: drop the oldest insertions
        cache[key] = (self._clock() + ttl_s, value)
        self._cache_bytes += size

    def _cache_drop(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._cache_bytes -= len(entry[1])

    # --------------------------------------------------------------- stored responses

    async def response_get(self, scope: str, response_id: str) -> bytes | None:
        name = (scope, response_id)
        entry = self._responses.get(name)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._response_pop(name)
            return None
        self._responses.move_to_end(name)
        return entry[1]

    async def response_put(
        self, scope: str, response_id: str, value: bytes, ttl_s: float, max_entries: int, max_bytes: int | None = None
    ) -> None:
        name = (scope, response_id)
        self._response_pop(name)
        if ttl_s <= 0 or max_entries <= 0 or (max_bytes is not None and len(value) > max_bytes):
            return
        responses = self._responses
        responses[name] = (self._clock() + ttl_s, value)
        self._response_bytes += len(value)
        while len(responses) > max_entries or (max_bytes is not None and self._response_bytes > max_bytes):
            self._response_pop(next(iter(responses)))  # least recently used first

    def _response_pop(self, name: tuple[str, str]) -> tuple[float, bytes] | None:
        entry = self._responses.pop(name, None)
        if entry is not None:
            self._response_bytes -= len(entry[1])
        return entry

    async def response_delete(self, scope: str, response_id: str) -> bool:
        entry = self._response_pop((scope, response_id))
        return entry is not None and entry[0] > self._clock()

    async def close(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0
        self._responses.clear()
        self._response_bytes = 0
