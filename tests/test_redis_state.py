"""RedisState against a real redis-server: two instances stand for two replicas sharing one Redis (SPEC 8.8)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from redis_server import Monitor, RedisServer, redis_command

pytest.importorskip("redis")

from llmrelay.server.redis_state import RedisState, RedisUnavailable, safe_url
from llmrelay.server.state import LimitExceeded, MemoryState


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


async def pair(url: str, **options: Any) -> tuple[RedisState, RedisState]:
    a, b = RedisState(url, **options), RedisState(url, **options)
    await a.connect()
    await b.connect()
    return a, b


async def closing(*states: RedisState) -> None:
    for state in states:
        await state.close()


async def applied(*states: RedisState) -> None:
    """What the states wrote without waiting (releases, tokens) is in Redis: what another connection sees next."""
    for state in states:
        await state._pipe.drain()


async def limit_of(call: Awaitable[Any]) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        await call
    return info.value


async def redis_now_ms(state: RedisState) -> float:
    seconds, micros = await state._redis.time()
    return seconds * 1000 + micros / 1000


def answers_ping(port: int) -> bool:
    """True if Redis answers PING within 50 ms (False while it sleeps in DEBUG SLEEP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(0.05)
        sock.sendall(b"PING\r\n")
        try:
            return sock.recv(64).startswith(b"+PONG")
        except TimeoutError:
            return False


def test_rpm_is_shared_exactly(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            admitted = 0
            for state in (a, b, a, b, b):
                assert await state.admit("alice", 5, None, None) is None
                admitted += 1
            assert admitted == 5
            for state in (a, b):
                error = await limit_of(state.admit("alice", 5, None, None))
                assert error.limit == "rpm"
                assert 1 <= error.retry_after <= 60 and error.retry_after == int(error.retry_after)
            # Another key has its own window.
            assert await b.admit("bob", 5, None, None) is None
        finally:
            await closing(a, b)

    run(main())


def test_rpm_window_slides(redis: RedisServer) -> None:
    """Entries older than 60 s leave the window: age them by rewriting their scores in Redis."""

    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            for _ in range(3):
                await a.admit("alice", 3, None, None)
            error = await limit_of(b.admit("alice", 3, None, None))
            assert error.limit == "rpm"
            key = a._key("rpm-log", "alice")
            oldest = int(await a._redis.lindex(key, 0))
            await a._redis.lset(key, 0, oldest - 61_000)  # the oldest is now 61 s old
            assert await b.admit("alice", 3, None, None) is None
            error = await limit_of(a.admit("alice", 3, None, None))
            assert error.limit == "rpm"
        finally:
            await closing(a, b)

    run(main())


def test_tpm_counts_tokens_of_every_replica(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            assert await a.admit("alice", None, 100, None) is None
            await a.add_tokens("alice", 60)
            assert await b.admit("alice", None, 100, None) is None
            await b.add_tokens("alice", 40)
            await applied(b)
            for state in (a, b):
                error = await limit_of(state.admit("alice", None, 100, None))
                assert error.limit == "tpm"
                assert 1 <= error.retry_after <= 60
            # Age the first entry out of the window: 40 tokens left, under the limit again.
            key = a._key("tpm", "alice")
            members = await a._redis.zrange(key, 0, -1, withscores=True)
            first = next((member, score) for member, score in members if member.endswith(b":60"))
            await a._redis.zadd(key, {first[0]: first[1] - 61_000})
            assert await b.admit("alice", None, 100, None) is None
            assert int(await a._redis.get(a._key("tpm-sum", "alice"))) == 40
            await a.add_tokens("alice", 0)  # nothing to count: no entry
            assert await a._redis.zcard(key) == 1
        finally:
            await closing(a, b)

    run(main())


def test_a_refused_request_counts_nothing(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            slot = await a.admit("alice", 2, None, 1)
            assert slot is not None
            error = await limit_of(b.admit("alice", 2, None, 1))
            assert error.limit == "max_concurrent" and error.retry_after == 1
            await a.release("alice", slot)
            await applied(a)
            # The refused request took neither an rpm entry nor a slot: one more fits.
            slot = await b.admit("alice", 2, None, 1)
            assert slot is not None
            await b.release("alice", slot)
            await applied(b)
            assert (await limit_of(a.admit("alice", 2, None, 1))).limit == "rpm"
        finally:
            await closing(a, b)

    run(main())


def test_max_concurrent_slots_are_shared_and_released(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            first = await a.admit("alice", None, None, 2)
            second = await b.admit("alice", None, None, 2)
            assert first and second and first != second
            for state in (a, b):
                assert (await limit_of(state.admit("alice", None, None, 2))).limit == "max_concurrent"
            await a.release("alice", first)
            await applied(a)
            third = await b.admit("alice", None, None, 2)
            assert third is not None
            await b.release("alice", second)
            await b.release("alice", third)
            await applied(b)
            assert await a._redis.zcard(a._key("slots", "alice")) == 0
        finally:
            await closing(a, b)

    run(main())


def test_slots_are_renewed_while_held_and_expire_when_the_holder_dies(redis: RedisServer) -> None:
    """A holder renews its slots (every ttl/3); a holder that stops renewing (dead) loses them within the ttl."""

    async def main() -> None:
        holder = RedisState(redis.url, slot_ttl_s=0.6)
        other = RedisState(redis.url, slot_ttl_s=0.6)
        await holder.connect()
        try:
            slot = await holder.admit("alice", None, None, 1)
            assert slot is not None
            slots = holder._key("slots", "alice")
            member = slot.removeprefix("r:")
            first_expiry = await holder._redis.zscore(slots, member)
            # Wait (by Redis's clock) until the slot's first expiry has passed: it is held only if it was renewed.
            deadline = time.monotonic() + 10
            while (await redis_now_ms(holder)) <= first_expiry + 100:
                assert time.monotonic() < deadline, "Redis's clock did not move"
                await asyncio.sleep(0.05)
            assert await holder._redis.zscore(slots, member) > first_expiry  # renewed ...
            assert (await limit_of(other.admit("alice", None, None, 1))).limit == "max_concurrent"  # ... so held
            # The holder "dies": renewal stops, nothing is released.
            assert holder._renewer is not None
            holder._renewer.cancel()
            holder._held.clear()
            deadline = time.monotonic() + 5
            while True:
                try:
                    taken = await other.admit("alice", None, None, 1)
                    break
                except LimitExceeded:
                    assert time.monotonic() < deadline, "the dead holder's slot never expired"
                    await asyncio.sleep(0.05)
            assert taken is not None
            await other.release("alice", taken)
        finally:
            await closing(holder, other)

    run(main())


def test_cooldown_started_by_one_replica_is_seen_by_the_other(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            target = "up/test-model"
            assert await a.cooling(target) == 0.0
            assert await a.failed(target, 3, 30, None) is False
            assert await b.failed(target, 3, 30, None) is False
            await b.succeeded(target)  # a success anywhere ends the streak
            assert await a.failed(target, 3, 30, None) is False
            assert await a.failed(target, 3, 30, None) is False
            assert await b.cooling(target) == 0.0  # before an attempt: sees A's streak ...
            await b.succeeded(target)  # ... so its success resets it, though B itself never failed
            assert await a.failed(target, 3, 30, None) is False
            assert await b.failed(target, 3, 30, None) is False
            assert await a.failed(target, 3, 30, None) is True
            left = await b.cooling(target)
            assert 29 < left <= 30
            # An upstream Retry-After starts a cooldown at once, for that long.
            assert await b.failed("other/model", 3, 30, 2.5) is True
            assert 1.5 < await a.cooling("other/model") <= 2.5
        finally:
            await closing(a, b)

    run(main())


def test_cache_is_shared_with_ttl_and_bounded_entries(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url, max_cache_entry_bytes=1000)
        try:
            assert await b.cache_get("k1") is None
            await a.cache_put("k1", b'{"answer": 1}', 30)
            assert await b.cache_get("k1") == b'{"answer": 1}'
            await a.cache_put("big", b"x" * 1001, 30)  # over the bound: not stored
            assert await b.cache_get("big") is None
            await a.cache_put("zero", b"v", 0)  # no TTL: not stored
            assert await b.cache_get("zero") is None
            await a.cache_put("short", b"v", 0.2)
            assert await b.cache_get("short") == b"v"
            await asyncio.sleep(0.4)
            assert await b.cache_get("short") is None
        finally:
            await closing(a, b)

    run(main())


def test_unreachable_at_start_is_one_line_without_the_password() -> None:
    port = 1  # nothing listens there

    async def main() -> None:
        state = RedisState(f"redis://user:hunter2secret@127.0.0.1:{port}/0")
        try:
            with pytest.raises(RedisUnavailable) as info:
                await state.connect(timeout_s=1)
        finally:
            await state.close()
        message = str(info.value)
        assert "\n" not in message and "hunter2secret" not in message
        assert f"redis at redis://user:***@127.0.0.1:{port}/0 is unreachable" in message

    run(main())
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert safe_url("rediss://:pw@h:1/2") == "rediss://:***@h:1/2"
    with pytest.raises(RedisUnavailable, match="not a Redis URL"):
        RedisState("http://127.0.0.1/")


def test_redis_lost_falls_back_logs_once_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[int] = []
    caplog.set_level(logging.WARNING, logger="llmrelay.server.redis")
    with RedisServer() as own:

        async def main() -> None:
            a = RedisState(own.url, probe_interval_s=0.1, on_error=lambda: errors.append(1))
            b = RedisState(own.url, probe_interval_s=0.1)
            await a.connect()
            await b.connect()
            try:
                assert await a.admit("alice", 1000, None, None) is None
                slot = await a.admit("alice", 1000, None, 2)
                own.kill()
                # Every call keeps working, from this process's memory.
                for _ in range(50):
                    await a.admit("alice", 1000, None, None)
                assert await a.cooling("up/m") == 0.0
                await a.failed("up/m", 1, 30, None)
                assert await a.cooling("up/m") > 0
                await a.cache_put("k", b"v", 30)
                assert await a.cache_get("k") == b"v"
                await a.release("alice", slot)  # a Redis slot while Redis is away: dropped, expires there
                local = await a.admit("alice", None, None, 1)
                assert local is not None and local.startswith("m:")
                await a.release("alice", local)
                assert not a.shared
                assert len(errors) == 1  # one failed call; the rest went to memory without trying
                lost = [r for r in caplog.records if "failed" in r.getMessage()]
                assert len(lost) == 1 and "per process" in lost[0].getMessage()

                own.start()
                ok = False
                for _ in range(100):
                    if a.shared:
                        ok = True
                        break
                    await asyncio.sleep(0.05)
                assert ok, "never went back to Redis"
                assert any("answers again: " in r.getMessage() for r in caplog.records)
                # Shared again: what A counts, B sees (the restarted Redis starts empty).
                for _ in range(2):
                    await a.admit("carol", 2, None, None)
                assert (await limit_of(b.admit("carol", 2, None, None))).limit == "rpm"
            finally:
                await closing(a, b)

        run(main())


def test_every_outage_and_every_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Redis stopped (SIGSTOP) and continued, again and again: each outage and each recovery is logged and counted,
    up to five outages a minute (a flapping Redis cannot flood the log; the sixth is counted, not logged)."""
    errors: list[int] = []
    caplog.set_level(logging.WARNING, logger="llmrelay.server.redis")

    def lines(word: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if word in r.getMessage()]

    with RedisServer() as own:

        async def main() -> None:
            a = RedisState(own.url, timeout_s=0.1, probe_interval_s=0.05, on_error=lambda: errors.append(1))
            await a.connect()
            try:
                for outage in range(1, 7):
                    own.pause()
                    assert await a.admit("alice", 1000, None, None) is None  # answered from memory
                    assert not a.shared
                    logged = min(outage, 5)
                    assert len(lines("failed (")) == logged and len(errors) == outage
                    own.resume()
                    for _ in range(200):
                        if a.shared:
                            break
                        await asyncio.sleep(0.05)
                    assert a.shared, f"never went back to Redis after outage {outage}"
                    assert len(lines("answers again: ")) == logged
                    assert await a.admit("alice", 1000, None, None) is None  # shared again
                assert len(errors) == 6
            finally:
                await a.close()

        run(main())


def test_slow_redis_adds_a_bounded_delay(redis: RedisServer) -> None:
    """Redis stalled for 3 s (DEBUG SLEEP): calls time out after the socket timeout and answer from memory."""

    async def main() -> None:
        a = RedisState(redis.url, timeout_s=0.1, probe_interval_s=0.1)
        await a.connect()
        try:
            await a.admit("alice", 10, None, None)  # a connection is open: the next call only waits on the read
            stall = asyncio.get_running_loop().run_in_executor(None, redis_command, redis.port, "DEBUG", "SLEEP", "3")
            while answers_ping(redis.port):  # until the stall has begun
                await asyncio.sleep(0.01)
            started = time.monotonic()
            assert await a.admit("alice", 10, None, None) is None
            elapsed = time.monotonic() - started
            assert not a.shared
            assert elapsed < 2, f"the call waited {elapsed:.2f} s for a stalled Redis"
            assert await stall == b"+OK\r\n"
        finally:
            await a.close()

    run(main())


def test_tokens_of_a_request_holding_a_slot_are_counted_with_its_release(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            slot = await a.admit("alice", None, 100, 4)
            assert slot is not None
            await a.add_tokens("alice", 70)
            await a.add_tokens("alice", 30)
            await a.release("alice", slot)  # one round trip: the slot back, 100 tokens counted
            await applied(a)
            assert int(await a._redis.get(a._key("tpm-sum", "alice"))) == 100
            assert await a._redis.zcard(a._key("slots", "alice")) == 0
            assert (await limit_of(b.admit("alice", None, 100, 4))).limit == "tpm"
            # Tokens still waiting for a release when the state closes are counted too.
            slot = await a.admit("bob", None, 1000, 4)
            await a.add_tokens("bob", 5)
            await a.close()
            assert int(await b._redis.get(b._key("tpm-sum", "bob"))) == 5
        finally:
            await closing(b)

    run(main())


def test_a_read_only_redis_is_logged_once_while_it_flaps(redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis turned read-only (made a replica) answers PING but refuses writes: it has not come back (the probe
    writes), so one line is logged and the state stays in memory; writable again, it is shared again."""
    caplog.set_level(logging.WARNING, logger="llmrelay.server.redis")
    errors: list[int] = []

    async def main() -> None:
        a = RedisState(redis.url, probe_interval_s=0.05, on_error=lambda: errors.append(1))
        await a.connect()
        try:
            assert redis_command(redis.port, "REPLICAOF", "127.0.0.1", "1") == b"+OK\r\n"
            for _ in range(20):
                assert await a.admit("alice", 1000, None, None) is None  # from memory
                await asyncio.sleep(0.03)
            assert len(errors) == 1 and not a.shared  # it did not go back to a Redis that refuses writes ...
            lost = [r.getMessage() for r in caplog.records if "failed (" in r.getMessage()]
            assert len(lost) == 1 and "read only replica" in lost[0]  # ... and said so once
            assert not [r for r in caplog.records if "answers again: " in r.getMessage()]
        finally:
            redis_command(redis.port, "REPLICAOF", "NO", "ONE")
        for _ in range(50):
            await asyncio.sleep(0.05)
            await a.admit("bob", 1, None, None)
            if a.shared:
                break
        assert a.shared and (await limit_of(a.admit("bob", 1, None, None))).limit == "rpm"
        assert [r for r in caplog.records if "answers again: " in r.getMessage()]
        await a.close()

    run(main())


def test_a_release_is_written_without_waiting_and_applied_before_the_next_admit(redis: RedisServer) -> None:
    """A request costs one round trip: admit waits for Redis's answer; the release (with the request's tokens) is
    written on the same connection and not waited for, so this process's next admit (max_concurrent = 1) finds
    the slot free. What Redis received is read from its MONITOR feed."""

    async def requests(a: RedisState) -> None:
        for _ in range(5):
            slot = await a.admit("alice", 1000, None, 1)
            assert slot is not None and a._pipe.pending == 0  # admit waited for its answer
            await a.release("alice", slot)
            assert a._pipe.pending == 1  # the release is on its way, its answer not read
        slot = await a.admit("alice", 1000, 100, 1)
        assert slot is not None
        await a.add_tokens("alice", 7)
        await a.release("alice", slot)  # the slot back and the tokens: still one command

    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            with Monitor(redis.port) as monitor:
                await requests(a)
                await a.close()  # reads the answers still due
                sent = monitor.commands()
            assert a._pipe.pending == 0 and a.shared
            assert [command for _, command in sent] == ["EVALSHA", "ZREM"] * 5 + ["EVALSHA", "EVALSHA"]
            assert len({client for client, _ in sent}) == 1  # one connection: each release before the next admit
            assert int(await b._redis.get(b._key("tpm-sum", "alice"))) == 7
            assert await b._redis.zcard(b._key("slots", "alice")) == 0
        finally:
            await closing(b)

    run(main())


async def age_requests(state: RedisState, key: str, seconds: int) -> None:
    """Every entry of ``key``'s rpm log made ``seconds`` older (what that much time passing does to it)."""
    log = state._key("rpm-log", key)
    entries = await state._redis.lrange(log, 0, -1)
    if entries:
        async with state._redis.pipeline(transaction=True) as multi:
            multi.delete(log).rpush(log, *(int(at) - seconds * 1000 for at in entries)).pexpire(log, 61_000)
            await multi.execute()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rpm_and_slots_decide_as_the_in_memory_sliding_window(redis: RedisServer, seed: int) -> None:
    """Two replicas admitting, releasing, time passing, the limits changed (a reload): every verdict of Redis is
    the one of MemoryState — the exact sliding window, never more than rpm in any 60 s — with the same
    Retry-After (Redis's clock runs on during the test: up to a second less). Time passes in steps of 7 s, so no
    entry is within a second of the window's edge."""
    rng = random.Random(seed)
    now = [1000.0]
    model = MemoryState(clock=lambda: now[0])

    async def main() -> None:
        a, b = await pair(redis.url)
        held: list[tuple[RedisState, str, str]] = []  # (replica, its slot, the model's slot)
        rpm, mc = 4, 3
        try:
            for _ in range(150):
                step = rng.random()
                if step < 0.15:
                    seconds = 7 * rng.randint(1, 4)
                    now[0] += seconds
                    await age_requests(a, "k", seconds)
                    continue
                if step < 0.2:
                    rpm, mc = rng.randint(1, 6), rng.randint(1, 4)
                    continue
                if step < 0.4 and held:
                    state, slot, model_slot = held.pop(rng.randrange(len(held)))
                    await state.release("k", slot)
                    await applied(state)
                    await model.release("k", model_slot)
                    continue
                state = a if step < 0.7 else b
                try:
                    expected = await model.admit("k", rpm, None, mc)
                except LimitExceeded as refused:
                    error = await limit_of(state.admit("k", rpm, None, mc))
                    assert error.limit == refused.limit
                    assert refused.retry_after - 1 <= error.retry_after <= refused.retry_after
                    continue
                slot = await state.admit("k", rpm, None, mc)
                assert slot is not None and expected is not None
                held.append((state, slot, expected))
        finally:
            await closing(a, b)

    run(main())


def test_the_rpm_log_holds_at_most_rpm_entries_and_sheds_those_that_left_the_window(redis: RedisServer) -> None:
    async def main() -> None:
        a = RedisState(redis.url)
        await a.connect()
        log = a._key("rpm-log", "k")
        try:
            for _ in range(8):
                await a.admit("small", 5, None, None)
                await age_requests(a, "small", 61)
            assert await a._redis.llen(a._key("rpm-log", "small")) == 5  # the 5 most recent, whatever their age
            for _ in range(70):
                await a.admit("k", 10**9, None, None)
            await age_requests(a, "k", 61)  # all 70 left the window
            for _ in range(57):
                await a.admit("k", 10**9, None, None)
            assert await a._redis.llen(log) == 127
            await a.admit("k", 10**9, None, None)  # the 128th: the 64 oldest have left, they go
            assert await a._redis.llen(log) == 64
            for _ in range(64):
                await a.admit("k", 10**9, None, None)
            entries = [int(at) for at in await a._redis.lrange(log, 0, -1)]
            assert len(entries) == 122  # the other 6 old ones went at the next 64th
            assert max(entries) - min(entries) < 60_000
            assert 60_000 < await a._redis.pttl(log) <= 61_000
        finally:
            await a.close()

    run(main())


def test_a_request_refused_for_tpm_or_a_slot_is_not_counted_in_rpm(redis: RedisServer) -> None:
    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            assert await a.admit("alice", 2, 100, None) is None
            await a.add_tokens("alice", 100)
            await applied(a)
            assert (await limit_of(b.admit("alice", 2, 100, None))).limit == "tpm"
            assert await a._redis.llen(a._key("rpm-log", "alice")) == 1
            slot = await a.admit("bob", 2, None, 1)
            assert slot is not None
            assert (await limit_of(b.admit("bob", 2, None, 1))).limit == "max_concurrent"
            assert await a._redis.llen(a._key("rpm-log", "bob")) == 1
            await a.release("bob", slot)
            await applied(a)
            assert await b.admit("bob", 2, None, 1) is not None  # the second of rpm = 2
        finally:
            await closing(a, b)

    run(main())


def test_a_renewal_drops_the_slots_whose_lease_ended(redis: RedisServer) -> None:
    """Slots of a dead replica stop counting when their lease ends, and the next renewal of any replica holding a
    slot of the key removes them."""

    async def main() -> None:
        a = RedisState(redis.url)
        await a.connect()
        try:
            slots = a._key("slots", "alice")
            now = await redis_now_ms(a)
            await a._redis.zadd(slots, {"dead.1": now - 5, "dead.2": now - 1})  # leases that ended
            slot = await a.admit("alice", None, None, 1)  # the dead ones do not count
            assert slot is not None
            await a._renew_slots()
            assert await a._redis.zrange(slots, 0, -1) == [slot.removeprefix("r:").encode()]
            await a.release("alice", slot)
        finally:
            await a.close()

    run(main())


def test_a_slot_taken_for_a_caller_that_left_during_the_admit_goes_back(redis: RedisServer) -> None:
    """The caller disconnects while Redis decides (the request's task is cancelled): Redis took the slot, and this
    process gives it back at once instead of leaving it to count until its lease ends."""

    async def main() -> None:
        a, b = await pair(redis.url)
        try:
            admit = asyncio.ensure_future(a.admit("alice", None, None, 1))
            await asyncio.sleep(0)  # written
            admit.cancel()
            with pytest.raises(asyncio.CancelledError):
                await admit
            await applied(a)
            assert await a._redis.zcard(a._key("slots", "alice")) == 0
            assert not a._held
            slot = await b.admit("alice", None, None, 1)  # the one slot is free
            assert slot is not None
            await b.release("alice", slot)
        finally:
            await closing(a, b)

    run(main())
