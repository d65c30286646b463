"""Why a target cools down (issue 15, defect 4): a cooldown an upstream's Retry-After started is a rate limit, one
started by a failure streak is not — in this process and, shared, in Redis (a real redis-server)."""

from __future__ import annotations

import asyncio

from redis_server import RedisServer

from llmrelay.server.redis_state import RedisState
from llmrelay.server.state import MemoryState, State


async def _reasons(state: State) -> tuple[bool, bool, bool, bool]:
    await state.failed("up/told", cooldown_after=3, cooldown_s=60, retry_after=30)
    for _ in range(2):
        await state.failed("up/streak", cooldown_after=2, cooldown_s=60, retry_after=None)
    told, streak = await state.rate_limited("up/told"), await state.rate_limited("up/streak")
    # The same target cooling down after failures later is no longer a rate limit.
    for _ in range(2):
        await state.failed("up/told", cooldown_after=2, cooldown_s=60, retry_after=None)
    return told, streak, await state.rate_limited("up/told"), await state.rate_limited("up/never")


def test_memory_state_tells_a_rate_limit_from_failures() -> None:
    assert asyncio.run(_reasons(MemoryState())) == (True, False, False, False)


def test_redis_state_tells_a_rate_limit_from_failures(redis: RedisServer) -> None:
    async def main() -> tuple[bool, bool, bool, bool]:
        state = RedisState(redis.url)
        try:
            await state.connect()
            result = await _reasons(state)
            assert state.shared  # answered by Redis, not by the in-process fallback
            return result
        finally:
            await state.close()

    assert asyncio.run(main()) == (True, False, False, False)
