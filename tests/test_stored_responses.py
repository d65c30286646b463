"""Stored responses (SPEC 9.2.5) through the ``State`` interface: one conformance test, both backends
(:class:`MemoryState`, and :class:`RedisState` against a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis_server import RedisServer

from llmrelay.server.state import MemoryState, State

Backend = Callable[[], Any]


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """A factory of connected states of one backend; Redis states made by one factory share one Redis."""
    if request.param == "memory":

        @asynccontextmanager
        async def memory() -> AsyncIterator[State]:
            state = MemoryState()
            try:
                yield state
            finally:
                await state.close()

        return memory
    pytest.importorskip("redis")
    redis: RedisServer = request.getfixturevalue("redis")
    from llmrelay.server.redis_state import RedisState

    @asynccontextmanager
    async def shared() -> AsyncIterator[State]:
        state = RedisState(redis.url)
        await state.connect()
        try:
            yield state
        finally:
            await state.close()

    return shared


def test_put_get_delete_per_scope(backend: Backend) -> None:
    async def main() -> None:
        async with backend() as state:
            assert await state.response_get("alice", "resp_1") is None
            await state.response_put("alice", "resp_1", b'{"a":1}', 60, 10)
            await state.response_put("", "resp_1", b'{"anonymous":1}', 60, 10)
            assert await state.response_get("alice", "resp_1") == b'{"a":1}'
            assert await state.response_get("bob", "resp_1") is None  # another key's response is not found
            assert await state.response_get("", "resp_1") == b'{"anonymous":1}'
            assert await state.response_delete("bob", "resp_1") is False
            assert await state.response_delete("alice", "resp_1") is True
            assert await state.response_get("alice", "resp_1") is None
            assert await state.response_delete("alice", "resp_1") is False
            assert await state.response_get("", "resp_1") == b'{"anonymous":1}'

    run(main())


def test_expiry(backend: Backend) -> None:
    async def main() -> None:
        async with backend() as state:
            await state.response_put("k", "resp_short", b"x", 0.2, 10)
            await state.response_put("k", "resp_long", b"y", 60, 10)
            await state.response_put("k", "resp_never", b"z", 0, 10)  # a TTL of 0 keeps nothing
            await asyncio.sleep(0.5)
            assert await state.response_get("k", "resp_short") is None
            assert await state.response_delete("k", "resp_short") is False
            assert await state.response_get("k", "resp_long") == b"y"
            assert await state.response_get("k", "resp_never") is None

    run(main())


def test_count_bound_is_per_process_lru(backend: Backend) -> None:
    async def main() -> None:
        async with backend() as state:
            for number in range(3):
                await state.response_put("k", f"resp_{number}", b"%d" % number, 60, 3)
            assert await state.response_get("k", "resp_0") == b"0"  # used: now the most recent
            await state.response_put("k", "resp_3", b"3", 60, 3)
            kept = {number for number in range(4) if await state.response_get("k", f"resp_{number}") is not None}
            if isinstance(state, MemoryState):
                assert kept == {0, 2, 3}  # the least recently used one went
            else:
                assert kept == {0, 1, 2, 3}  # Redis: shared by replicas, TTL only

    run(main())


def test_byte_bound(backend: Backend) -> None:
    async def main() -> None:
        async with backend() as state:
            await state.response_put("k", "resp_big", b"b" * 101, 60, 10, 100)  # larger than the bound: not kept
            assert await state.response_get("k", "resp_big") is None
            await state.response_put("k", "resp_0", b"0" * 40, 60, 10, 100)
            await state.response_put("k", "resp_1", b"1" * 40, 60, 10, 100)
            assert await state.response_get("k", "resp_0") is not None  # used: 1 is now the least recent
            await state.response_put("k", "resp_2", b"2" * 40, 60, 10, 100)  # 120 > 100
            kept = {number for number in range(3) if await state.response_get("k", f"resp_{number}") is not None}
            if not isinstance(state, MemoryState):
                assert kept == {0, 1, 2}  # Redis: per record only (Redis's maxmemory bounds the rest)
                return
            assert kept == {0, 2}
            await state.response_put("k", "resp_0", b"0" * 10, 60, 10, 100)  # replaced: its old bytes go
            await state.response_put("k", "resp_3", b"3" * 50, 60, 10, 100)  # 10 + 40 + 50 = 100: all kept
            assert all([await state.response_get("k", f"resp_{n}") is not None for n in (0, 2, 3)])
            assert await state.response_delete("k", "resp_3") is True
            await state.response_put("k", "resp_4", b"4" * 50, 60, 10, 100)  # deleted bytes went too
            assert all([await state.response_get("k", f"resp_{n}") is not None for n in (0, 2, 4)])

    run(main())


def test_replicas_share_stored_responses(redis: RedisServer) -> None:
    pytest.importorskip("redis")
    from llmrelay.server.redis_state import RedisState

    async def main() -> None:
        a, b = RedisState(redis.url), RedisState(redis.url)
        await a.connect()
        await b.connect()
        try:
            await a.response_put("alice", "resp_x", b"stored", 60, 1)
            assert await b.response_get("alice", "resp_x") == b"stored"
            assert await b.response_delete("alice", "resp_x") is True
            assert await a.response_get("alice", "resp_x") is None
        finally:
            await a.close()
            await b.close()

    run(main())


def test_response_settings_in_the_config(tmp_path: Any) -> None:
    from llmrelay.server.config import ConfigError, load_config

    defaults = load_config(None, environ={}).server
    assert (defaults.store_responses, defaults.strict_fields) == (True, False)
    assert (defaults.responses_ttl_s, defaults.responses_max) == (30 * 24 * 3600.0, 10_000)
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[server]\nstore_responses = false\nstrict_fields = true\nresponses_ttl_s = 60\nresponses_max = 5\n"
    )
    server = load_config(str(path), environ={}).server
    assert (server.store_responses, server.strict_fields, server.responses_ttl_s, server.responses_max) == (
        False,
        True,
        60.0,
        5,
    )
    for line, named, what in (
        ('store_responses = "no"', "server.store_responses", "true or false"),
        ("strict_fields = 1", "server.strict_fields", "true or false"),
        ("responses_ttl_s = 0", "server.responses_ttl_s", "> 0"),
        ("responses_max = 1.5", "server.responses_max", "an integer"),
        ("responses_max = 0", "server.responses_max", "> 0"),
    ):
        path.write_text(f"[server]\n{line}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(str(path), environ={})
        assert named in str(caught.value) and what in str(caught.value), str(caught.value)
