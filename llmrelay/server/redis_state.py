"""Gateway state shared by replicas through Redis (SPEC 8.8), with a per-process fallback while Redis is away.

Same interface and algorithm as :class:`~llmrelay.server.state.MemoryState` (exact 60 s sliding windows),
kept in Redis so every replica pointing at the same Redis counts together:

* ``rpm``: a list per key of the times requests were admitted, oldest first, at most rpm long (see ``_ADMIT``);
* ``tpm``: a sorted set per key of ``id:tokens`` entries plus a running sum (entries leaving the window are
  subtracted as they are trimmed, so a check never adds up the whole window);
* ``max_concurrent``: a sorted set per key of slot ids scored by their expiry. The replica holding a slot
  renews it every ``slot_ttl_s / 3``; the slots of a replica that died without releasing them (kill -9)
  stop being counted at most ``slot_ttl_s`` after its last renewal;
* cooldowns: a key per target with a PX expiry; failure streaks: a counter per target;
* the response cache: one key per entry with the route's TTL, entries larger than ``max_cache_entry_bytes``
  are not stored;
* stored responses (SPEC 9.2.5): one key per scope and response id with the TTL; no count bound, none larger
  than ``max_bytes`` (Redis's ``maxmemory`` bounds them all).

Each operation is one round trip: the checks that read and write (admit, add_tokens, failed, slot renewal)
are Lua scripts, atomic in Redis, timed by Redis's clock so replicas with skewed clocks agree. A request's
limits cost it one round trip: admit waits for Redis's answer; the release (with the request's tokens) and tpm
accounting are written on the same pipelined connection without waiting (:mod:`.redis_pipe`), so they reach Redis
before this process's next admit, and a failure is counted and falls back like any other.

Every call has a short timeout (``timeout_s``). When a call fails, the outage is logged (one line, not one per
request), counted (``on_error``, wired to ``llmrelay_redis_errors_total``), and from then on every call goes to an
in-process :class:`MemoryState` until a background probe sees Redis take a write again; then Redis is used again
(logged too). Every outage and recovery is logged, at most five outages a minute (the rest are counted in the next
line), so a flapping Redis cannot flood the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .state import WINDOW_S, LimitExceeded, MemoryState, State, _wait

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError

    from .redis_pipe import Pipe, bulk, pack
except ImportError:  # the optional extra is not installed: RedisState says so when it is built
    aioredis = None  # type: ignore[assignment]

__all__ = ["RedisState", "RedisUnavailable", "check_redis", "safe_url"]

log = logging.getLogger("llmrelay.server.redis")

T = TypeVar("T")

WINDOW_MS = int(WINDOW_S * 1000)
_LIMITS = {1: "rpm", 2: "tpm", 3: "max_concurrent"}
_STREAK_TTL_MS = 24 * 3600 * 1000
# Each outage and each recovery is logged, up to _LOG_MAX outages per _LOG_WINDOW_S; past that an outage is only
# counted (and its recovery not logged), and the next logged outage says how many were not.
_LOG_WINDOW_S = 60.0
_LOG_MAX = 5

# Shared Lua: Redis time in ms, the token count of a tpm entry, and trimming a tpm window (returns its sum).
_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end
local function trim_tokens(zkey, sumkey, cutoff, ttl)
  local used = tonumber(redis.call('GET', sumkey) or '0')
  local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff)
  if #old > 0 then
    for _, member in ipairs(old) do used = used - tokens_of(member) end
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', cutoff)
    if redis.call('ZCARD', zkey) == 0 or used < 0 then
      used = 0
      redis.call('DEL', sumkey)
    else
      redis.call('SET', sumkey, used, 'PX', ttl)
    end
  end
  return used
end
local function add_tokens(zkey, sumkey, member, tokens, window)
  local now = now_ms()
  trim_tokens(zkey, sumkey, now - window, window + 1000)
  redis.call('ZADD', zkey, now, member .. ':' .. tokens)
  redis.call('INCRBY', sumkey, tokens)
  redis.call('PEXPIRE', zkey, window + 1000)
  redis.call('PEXPIRE', sumkey, window + 1000)
end
"""

# KEYS: rpm log, tpm zset, tpm sum, slots zset. ARGV: rpm, tpm, max_concurrent (0 = none), slot lease ms, window
# ms, slot id. Returns {0, 0} when admitted, else {limit number, ms until it lets one more in}; a refused request
# leaves everything as it was.
#
# The rpm log is a list of the times requests were admitted, oldest first, kept to at most rpm entries. A request
# is admitted when fewer than rpm were admitted in the window before it: when the log holds fewer than rpm
# entries, or when the rpm-th most recent one has left the window (then so have all older ones). That is exact,
# whatever else is trimmed: entries are only ever dropped from the old end, and only when more than rpm are kept
# or when they have left the window. Every 64th entry also drops those that left the window (a log under its rpm
# would otherwise keep them until the key expires). A request is counted first (RPUSH returns the length) and
# taken back (RPOP) when a check refuses it: the script is atomic, no other command sees it in between.
# Slots: a sorted set of slot ids scored by their lease's end; only leases that have not ended count.
_ADMIT = (
    _LUA_COMMON
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, mc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local cutoff = now - window
local function refuse(limit, ms)
  if rpm > 0 then redis.call('RPOP', KEYS[1]) end
  return {limit, ms}
end
if rpm > 0 then
  local n = redis.call('RPUSH', KEYS[1], now)
  if n > rpm then
    local oldest = tonumber(redis.call('LINDEX', KEYS[1], -rpm - 1))
    if oldest > cutoff then return refuse(1, oldest + window - now) end
    redis.call('LTRIM', KEYS[1], -rpm, -1)
  elseif n % 64 == 0 then
    local gone = 0
    for _, at in ipairs(redis.call('LRANGE', KEYS[1], 0, 63)) do
      if tonumber(at) > cutoff then break end
      gone = gone + 1
    end
    if gone > 0 then redis.call('LTRIM', KEYS[1], gone, -1) end
  end
end
if tpm > 0 then
  local used = trim_tokens(KEYS[2], KEYS[3], cutoff, window + 1000)
  if used >= tpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    if #oldest > 0 then return refuse(2, tonumber(oldest[2]) + window - now) end
  end
end
if mc > 0 then
  redis.call('ZADD', KEYS[4], now + lease, ARGV[6])
  if redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf') > mc then
    redis.call('ZREM', KEYS[4], ARGV[6])
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    return refuse(3, 1000)
  end
  if now % 64 == 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) end
  redis.call('PEXPIRE', KEYS[4], lease + 1000)
end
if rpm > 0 then redis.call('PEXPIRE', KEYS[1], window + 1000) end
return {0, 0}
"""
)

# KEYS: tpm zset, tpm sum. ARGV: member id, tokens, window ms.
_ADD_TOKENS = (
    _LUA_COMMON
    + """
add_tokens(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 0
"""
)

# KEYS: slots zset, tpm zset, tpm sum. ARGV: slot id, member id, tokens, window ms. A slot given back together
# with the tokens its request used: one round trip at the end of a request instead of two.
_RELEASE_WITH_TOKENS = (
    _LUA_COMMON
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
add_tokens(KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
return 0
"""
)

# KEYS: the slots zsets of the keys this replica holds slots of. ARGV[1]: slot ttl ms; ARGV[1 + i]: the
# space-separated slot ids held in KEYS[i]. Re-adds them (also after Redis lost them) with a fresh expiry, and
# drops the slots whose lease ended (a dead replica's).
_RENEW = (
    _LUA_COMMON
    + """
local now, lease = now_ms(), tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  for id in string.gmatch(ARGV[i + 1], '%S+') do redis.call('ZADD', key, now + lease, id) end
  redis.call('PEXPIRE', key, lease + 1000)
end
return 0
"""
)

# KEYS: cooldown, failure streak. Returns {ms of cooldown left (<= 0: none), 1 when a failure streak exists}.
_COOLING = """
return {redis.call('PTTL', KEYS[1]), redis.call('EXISTS', KEYS[2])}
"""

# KEYS: failure streak, cooldown. ARGV: cooldown_after, cooldown ms, retry-after ms (0 = none), streak ttl ms.
# Returns 1 when a cooldown started. The cooldown's value says why: 'r' after an upstream Retry-After, else '1'.
_FAILED = """
local streak = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local retry_after = tonumber(ARGV[3])
if retry_after > 0 then
  redis.call('SET', KEYS[2], 'r', 'PX', retry_after)
  redis.call('DEL', KEYS[1])
  return 1
end
if streak >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisUnavailable(Exception):  # noqa: N818 (reads better at the call site than ...Error)
    """Redis cannot be used: unreachable at start, or the ``redis`` package is missing. One line, no password."""


def safe_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host:port/0``), for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable redis_url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def _setting(name: str, default: float) -> float:
    """A tuning value from the environment (documented in docs/scale-out.md): a positive number of seconds."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < math.inf):
        raise RedisUnavailable(f"{name} must be a positive number of seconds, not {text!r}")
    return value


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RedisState:
    """:class:`State` in Redis at ``url``; falls back to ``inner`` (a fresh :class:`MemoryState`) while Redis fails.

    ``timeout_s`` (each Redis call; default ``LLMRELAY_REDIS_TIMEOUT_S``, else 0.1) and ``slot_ttl_s`` (how long
    a dead replica's slots keep counting; default ``LLMRELAY_REDIS_SLOT_TTL_S``, else 30).

    ``connect()`` (on the serving event loop) checks Redis answers and raises :class:`RedisUnavailable`
    otherwise. ``on_error`` is called once per failed Redis call (the gateway counts them in
    ``llmrelay_redis_errors_total``).
    """

    def __init__(
        self,
        url: str,
        *,
        inner: State | None = None,
        timeout_s: float | None = None,
        slot_ttl_s: float | None = None,
        probe_interval_s: float = 0.5,
        max_cache_entry_bytes: int = 4 * 1024 * 1024,
        prefix: str = "llmrelay:",
        on_error: Callable[[], None] | None = None,
    ) -> None:
        if aioredis is None:
            raise RedisUnavailable("redis_url needs the redis package: pip install 'llmrelay[redis]'")
        self.url = safe_url(url)
        timeout_s = _setting("LLMRELAY_REDIS_TIMEOUT_S", 0.1) if timeout_s is None else timeout_s
        slot_ttl_s = _setting("LLMRELAY_REDIS_SLOT_TTL_S", 30.0) if slot_ttl_s is None else slot_ttl_s
        self.inner: State = inner if inner is not None else MemoryState()
        self.on_error = on_error
        self.timeout_s = timeout_s
        self.slot_ttl_ms = _ms(slot_ttl_s)
        self.probe_interval_s = probe_interval_s
        self.max_cache_entry_bytes = max_cache_entry_bytes
        self.prefix = prefix
        try:
            # One immediate retry on a connection error only (a pooled connection the server closed, e.g. after
            # a Redis restart); never on a timeout: a slow Redis falls back to memory at once.
            pool = aioredis.ConnectionPool.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
        except ValueError as error:
            raise RedisUnavailable(f"redis_url {self.url!r} is not a Redis URL: {error}") from None
        self._redis = aioredis.Redis(connection_pool=pool)
        self._pipe = Pipe(pool, timeout_s)  # admit, release and tpm accounting: one connection, pipelined
        self._admit = self._redis.register_script(_ADMIT)
        self._add_tokens = self._redis.register_script(_ADD_TOKENS)
        self._release_with_tokens = self._redis.register_script(_RELEASE_WITH_TOKENS)
        self._renew = self._redis.register_script(_RENEW)
        self._failed = self._redis.register_script(_FAILED)
        self._cooling = self._redis.register_script(_COOLING)
        self._admit_heads: dict[tuple[str, tuple[int, int, int]], bytes] = {}  # packed once per key and limits
        self._release_heads: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid()}.{secrets.token_hex(4)}."
        self._held: dict[str, set[str]] = {}  # gateway key name -> Redis slot ids this process holds
        self._tokens: dict[str, int] = {}  # gateway key name -> tokens to send with its next slot release
        # Targets that had a failure streak when this process last looked: only their success is sent to Redis
        # (the gateway asks cooling() before each attempt, so a success after a streak elsewhere still resets it).
        self._streaks: set[str] = set()
        self._down = False
        self._logged: collections.deque[float] = collections.deque()  # when the outages of the window were logged
        self._unlogged = 0  # outages not logged since the last logged one
        self._quiet = False  # the current outage was not logged (nor will its end be)
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------------ plumbing

    @property
    def shared(self) -> bool:
        """True while calls go to Redis; False while they fall back to this process's memory."""
        return not self._down

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{{{name}}}"  # {name}: one hash slot per gateway key, cluster-safe

    async def connect(self, timeout_s: float = 2.0) -> None:
        """Check that Redis answers (PING within ``timeout_s``); :class:`RedisUnavailable` otherwise."""
        try:
            await asyncio.wait_for(self._ping(), max(timeout_s, self.timeout_s))
            await asyncio.wait_for(self._load_scripts(), max(timeout_s, self.timeout_s))
            await asyncio.wait_for(self._pipe.open(), max(timeout_s, self.timeout_s))
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            raise RedisUnavailable(f"redis at {self.url} is unreachable ({_reason(error)})") from None

    async def _load_scripts(self) -> None:
        """The scripts the pipe sends by their SHA, in Redis before they are needed (a release is not waited for)."""
        for script in (self._admit, self._add_tokens, self._release_with_tokens):
            await self._redis.script_load(script.script)

    async def reachable(self, timeout_s: float) -> bool:
        """Whether Redis answers a PING within ``timeout_s`` (for ``/health/ready``)."""
        try:
            await asyncio.wait_for(self._redis.ping(), timeout_s)
        except (RedisError, OSError, asyncio.TimeoutError):
            return False
        return True

    async def _ping(self) -> None:
        # A fresh connection attempt may fail on the first try with a short socket timeout on a busy machine.
        for attempt in itertools.count():
            try:
                await self._redis.ping()
                return
            except (RedisError, OSError):
                if attempt >= 2:
                    raise
                await asyncio.sleep(0.1)

    async def _call(self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        if self._down:
            return await local()
        try:
            return await shared()
        except (RedisError, OSError, asyncio.TimeoutError) as error:
            self._lost(error)
            return await local()

    def _lost(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error()
        if self._down or self._closed:
            return
        self._down = True
        now = time.monotonic()
        while self._logged and now - self._logged[0] >= _LOG_WINDOW_S:
            self._logged.popleft()
        self._quiet = len(self._logged) >= _LOG_MAX
        if self._quiet:
            self._unlogged += 1
        else:
            self._logged.append(now)
            skipped = f" ({self._unlogged} more outages since the last one logged)" if self._unlogged else ""
            self._unlogged = 0
            log.warning(
                "redis at %s failed (%s): limits, cooldowns and the cache are per process until it answers again%s",
                self.url,
                _reason(error),
                skipped,
            )
        self._spawn(self._probe())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self) -> None:
        while self._down and not self._closed:
            await asyncio.sleep(self.probe_interval_s)
            try:
                # A write, not PING: a Redis that answers but refuses writes (read-only replica, out of memory)
                # has not come back.
                await self._redis.set(self._key("probe", self._id_prefix), b"1", px=_ms(self.probe_interval_s) + 1000)
            except (RedisError, OSError, asyncio.TimeoutError):
                continue
            self._down = False
            if not self._quiet:
                log.warning("redis at %s answers again: limits, cooldowns and the cache are shared again", self.url)
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await self._load_scripts()  # a restarted Redis has none
                await self._renew_slots()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        # Ends when it wakes to find no slot held (not as soon as none is: short requests would start one per admit).
        while not self._closed:
            await asyncio.sleep(self.slot_ttl_ms / 3000)
            if not self._held:
                return
            if self._down:
                continue
            try:
                await self._renew_slots()
            except (RedisError, OSError, asyncio.TimeoutError) as error:
                self._lost(error)

    async def _renew_slots(self) -> None:
        held = [(name, " ".join(ids)) for name, ids in self._held.items() if ids]
        if held:
            keys = [self._key("slots", name) for name, _ in held]
            await self._renew(keys=keys, args=[self.slot_ttl_ms, *(ids for _, ids in held)])

    # ----------------------------------------------------------------------- key limits

    async def _post(
        self,
        key: str,
        tokens: int,
        command: bytes,
        script: Any | None = None,
        keys: tuple[str, ...] = (),
        args: tuple[Any, ...] = (),
        again: bool = True,
    ) -> None:
        """``command`` (``script`` called with ``keys`` and ``args``, or a plain command) queued without waiting for
        its answer. Sent again once on a connection error (as every call); if it fails, the failure is counted as any
        other (fallback to memory) and ``tokens`` of ``key`` are counted in this process instead."""

        async def local() -> None:
            if tokens:
                await self.inner.add_tokens(key, tokens)

        def failed(error: BaseException) -> None:
            if again and isinstance(error, RedisConnectionError) and not self._down:
                self._spawn(self._post(key, tokens, command, script, keys, args, again=False))
                return
            if isinstance(error, NoScriptError) and script is not None:
                self._spawn(self._call(lambda: script(keys=keys, args=args), local))  # loads it, sends again
                return
            self._lost(error)
            self._spawn(local())

        try:
            await self._pipe.post(failed, command)
        except (RedisError, OSError, asyncio.TimeoutError) as error:  # could not even connect
            failed(error)

    def _limit_keys(self, key: str) -> tuple[str, str, str, str]:
        return self._key("rpm-log", key), self._key("tpm", key), self._key("tpm-sum", key), self._key("slots", key)

    def _admit_head(self, key: str, limits: tuple[int, int, int]) -> bytes:
        """The admit command of a key and its limits, all but the slot id (packed once: limits come from the
        configuration, so there are as many as keys, or a few more after reloads)."""
        head = self._admit_heads.get((key, limits))
        if head is None:
            if len(self._admit_heads) >= 1024:
                self._admit_heads.clear()
            args = (*self._limit_keys(key), *limits, self.slot_ttl_ms, WINDOW_MS)
            head = self._admit_heads[key, limits] = pack(("EVALSHA", self._admit.sha, 4, *args), more=1)
        return head

    async def admit(self, key: str, rpm: int | None, tpm: int | None, max_concurrent: int | None) -> str | None:
        if rpm is None and tpm is None and max_concurrent is None:
            return None
        if not self._down:
            member = self._new_id()
            limits = (_limit(rpm), _limit(tpm), _limit(max_concurrent))
            try:
                try:
                    verdict, wait_ms = await self._pipe.call(self._admit_head(key, limits) + bulk(member))
                except asyncio.CancelledError:  # the caller left while Redis was deciding: a slot taken goes back
                    if max_concurrent is not None:
                        await self._post(key, 0, pack(("ZREM", self._key("slots", key), member)))
                    raise
                except NoScriptError:  # Redis lost it (restart, flush): loaded again and run
                    args = (*limits, self.slot_ttl_ms, WINDOW_MS, member)
                    verdict, wait_ms = await self._admit(keys=self._limit_keys(key), args=args)
            except (RedisError, OSError, asyncio.TimeoutError) as error:
                self._lost(error)
            else:
                if verdict:
                    raise LimitExceeded(_LIMITS[int(verdict)], _wait(int(wait_ms) / 1000))
                if max_concurrent is None:
                    return None
                self._held.setdefault(key, set()).add(member)
                self._ensure_renewer()
                return "r:" + member
        slot = await self.inner.admit(key, rpm, tpm, max_concurrent)
        return None if slot is None else "m:" + slot

    async def release(self, key: str, slot: str) -> None:
        """Gives the slot back (with the tokens counted for ``key`` since) without waiting for Redis's answer."""
        kind, _, slot_id = slot.partition(":")
        tokens = self._tokens.pop(key, 0)
        if kind == "m":
            await self.inner.release(key, slot_id)
            if tokens:
                await self.inner.add_tokens(key, tokens)
            return
        held = self._held.get(key)
        if held is not None:
            held.discard(slot_id)
            if not held:
                del self._held[key]
        if self._down:  # the slot: Redis drops it by itself within the slot ttl
            if tokens:
                await self.inner.add_tokens(key, tokens)
            return
        if tokens:
            keys = (self._key("slots", key), self._key("tpm", key), self._key("tpm-sum", key))
            args = (slot_id, self._new_id(), tokens, WINDOW_MS)
            script = self._release_with_tokens
            await self._post(key, tokens, pack(("EVALSHA", script.sha, 3, *keys, *args)), script, keys, args)
        else:
            head = self._release_heads.get(key)
            if head is None:
                if len(self._release_heads) >= 1024:
                    self._release_heads.clear()
                head = self._release_heads[key] = pack(("ZREM", self._key("slots", key)), more=1)
            await self._post(key, 0, head + bulk(slot_id))

    async def add_tokens(self, key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        if self._held.get(key) and not self._down:
            # This process holds a slot of the key, so a release follows (the gateway counts an answer's tokens
            # before it gives back the request's slot): the tokens go with it, in the same command.
            self._tokens[key] = self._tokens.get(key, 0) + tokens
            return
        await self._send_tokens(key, tokens)

    async def _send_tokens(self, key: str, tokens: int) -> None:
        if self._down:
            await self.inner.add_tokens(key, tokens)
            return
        keys = (self._key("tpm", key), self._key("tpm-sum", key))
        args = (self._new_id(), tokens, WINDOW_MS)
        script = self._add_tokens
        await self._post(key, tokens, pack(("EVALSHA", script.sha, 2, *keys, *args)), script, keys, args)

    # ------------------------------------------------------------------------- cooldowns

    async def cooling(self, target: str) -> float:
        async def shared() -> float:
            left, streak = await self._cooling(keys=[self._key("cool", target), self._key("streak", target)])
            if streak:
                self._streaks.add(target)
            return left / 1000 if left > 0 else 0.0

        return await self._call(shared, lambda: self.inner.cooling(target))

    async def failed(self, target: str, cooldown_after: int, cooldown_s: float, retry_after: float | None) -> bool:
        async def shared() -> bool:
            self._streaks.add(target)
            wait = _ms(retry_after) if retry_after is not None and retry_after > 0 else 0
            started = await self._failed(
                keys=[self._key("streak", target), self._key("cool", target)],
                args=[cooldown_after, _ms(cooldown_s), wait, _STREAK_TTL_MS],
            )
            return bool(started)

        return await self._call(shared, lambda: self.inner.failed(target, cooldown_after, cooldown_s, retry_after))

    async def succeeded(self, target: str) -> None:
        if target not in self._streaks and not self._down:
            return  # no failure streak when this process last looked (before the attempt): nothing to reset

        async def shared() -> None:
            self._streaks.discard(target)
            await self._redis.delete(self._key("streak", target))

        await self._call(shared, lambda: self.inner.succeeded(target))

    async def rate_limited(self, target: str) -> bool:
        async def shared() -> bool:
            return await self._redis.get(self._key("cool", target)) in (b"r", "r")

        return await self._call(shared, lambda: self.inner.rate_limited(target))

    # ----------------------------------------------------------------------------- cache

    async def cache_get(self, key: str) -> bytes | None:
        async def shared() -> bytes | None:
            value = await self._redis.get(self._key("cache", key))
            return value if value is None or isinstance(value, bytes) else value.encode()

        return await self._call(shared, lambda: self.inner.cache_get(key))

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        if len(value) > self.max_cache_entry_bytes:
            log.debug(
                "answer of %d bytes not cached (max_cache_entry_bytes %d)", len(value), self.max_cache_entry_bytes
            )
            return

        async def shared() -> None:
            await self._redis.set(self._key("cache", key), value, px=_ms(ttl_s))

        await self._call(shared, lambda: self.inner.cache_put(key, value, ttl_s))

    # --------------------------------------------------------------------- stored responses

    def _response_key(self, scope: str, response_id: str) -> str:
        # A response id never holds "/" (the gateway checks it), so scope and id split back unambiguously.
        return self._key("resp", f"{scope}/{response_id}")

    async def response_get(self, scope: str, response_id: str) -> bytes | None:
        async def shared() -> bytes | None:
            value = await self._redis.get(self._response_key(scope, response_id))
            return value if value is None or isinstance(value, bytes) else value.encode()

        return await self._call(shared, lambda: self.inner.response_get(scope, response_id))

    async def response_put(
        self, scope: str, response_id: str, value: bytes, ttl_s: float, max_entries: int, max_bytes: int | None = None
    ) -> None:
        if ttl_s <= 0 or (max_bytes is not None and len(value) > max_bytes):
            return

        async def shared() -> None:
            await self._redis.set(self._response_key(scope, response_id), value, px=_ms(ttl_s))

        await self._call(
            shared, lambda: self.inner.response_put(scope, response_id, value, ttl_s, max_entries, max_bytes)
        )

    async def response_delete(self, scope: str, response_id: str) -> bool:
        async def shared() -> bool:
            return bool(await self._redis.delete(self._response_key(scope, response_id)))

        return await self._call(shared, lambda: self.inner.response_delete(scope, response_id))

    # ----------------------------------------------------------------------------- close

    async def close(self) -> None:
        for key, tokens in list(self._tokens.items()):  # counted, whatever becomes of their slots
            await self._send_tokens(key, tokens)
        self._tokens.clear()
        await self._pipe.close()  # the answers of what was written without waiting
        self._closed = True
        tasks = [*self._tasks, *([self._renewer] if self._renewer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._held and not self._down:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                for name, ids in self._held.items():
                    await self._redis.zrem(self._key("slots", name), *ids)
        self._held.clear()
        await self._redis.aclose(close_connection_pool=True)
        await self.inner.close()


def _limit(value: int | None) -> int:
    """A limit for the scripts, where 0 means none (the configuration only allows positive limits)."""
    if value is None:
        return 0
    if value < 1:
        raise ValueError(f"limits are positive integers, not {value!r}")
    return value


def check_redis(url: str, timeout_s: float = 2.0) -> None:
    """Outside any event loop (the ``--workers`` supervisor): :class:`RedisUnavailable` unless Redis answers."""

    async def check() -> None:
        state = RedisState(url)
        try:
            await state.connect(timeout_s)
        finally:
            await state.close()

    asyncio.run(check())
