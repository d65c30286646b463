"""Scale-out (SPEC 8.8): gateway processes sharing limits, slots, cooldowns and the cache through a real Redis.

Every gateway here is the installed ``llmrelay serve`` command in its own process; the upstream is the scripted
server; Redis is a real redis-server the tests start on a free port and stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis_server import Monitor, RedisServer, redis_command
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, completion, json_reply, sse, usage

pytest.importorskip("redis")

FIRST = "/v1/chat/completions"
SECOND = "/v1/second/chat/completions"


def key_entry(name: str, **limits: int) -> str:
    secret = f"sk-llmrelay-{name}-secret-0123456789"
    lines = [f'[[keys]]\nname = "{name}"\nsha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"']
    lines += [f"{limit} = {value}" for limit, value in limits.items()]
    return "\n".join(lines) + "\n"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sk-llmrelay-{name}-secret-0123456789"} if name else {}


def llmrelay_command() -> str:
    return str(Path(sys.executable).parent / "llmrelay")


async def post(
    session: aiohttp.ClientSession, url: str, key: str, model: str = "up/m", **params: Any
) -> tuple[int, dict[str, str], bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], **params}
    async with session.post(url + "/v1/chat/completions", json=body, headers=auth(key)) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()


def fresh_session() -> aiohttp.ClientSession:
    # One connection per request: with --workers the kernel spreads connections, not requests.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))


def slow_stream(seconds: float) -> Reply:
    writes: list[bytes | float] = [sse(chunk("one")), seconds, sse(chunk("two"), chunk(finish_reason="stop"), "[DONE]")]
    return Reply(headers={"Content-Type": "text/event-stream"}, writes=writes)


async def released(redis: RedisServer, key: str) -> None:
    """Until no slot of gateway key ``key`` is held in Redis (the releases, written without waiting, applied)."""
    deadline = time.monotonic() + 10
    while redis_command(redis.port, "ZCARD", f"llmrelay:slots:{{{key}}}") != b":0\r\n":
        assert time.monotonic() < deadline, f"a slot of {key} was never released"
        await asyncio.sleep(0.02)


LIMITS = key_entry("alice", rpm=5) + key_entry("bob", tpm=10) + key_entry("carol", max_concurrent=2)


def test_two_replicas_share_rpm_tpm_and_concurrency(server: ScriptedServer, spawn_gateway, redis: RedisServer) -> None:
    env = {"LLMRELAY_REDIS_URL": redis.url}
    a, b = spawn_gateway(LIMITS, env=env), spawn_gateway(LIMITS, env=env)

    def answer(request: RecordedRequest) -> Reply:
        if request.json().get("stream"):
            return slow_stream(1.5)
        return json_reply(completion("ok", usage=usage(8, 4)))

    server.route("POST", FIRST, answer)

    async def main() -> None:
        async with fresh_session() as session:
            # rpm = 5 across both replicas: exactly 5 of 12 get through, the rest are 429 with Retry-After.
            replies = [await post(session, gw.url, "alice") for gw in (a, b) * 6]
            assert [status for status, _, _ in replies].count(200) == 5
            refused = [(headers, body) for status, headers, body in replies if status != 200]
            assert len(refused) == 7
            for headers, body in refused:
                assert 1 <= int(headers["retry-after"]) <= 60
                assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
            assert len(server.requests) == 5

            # tpm = 10 across both: 12 tokens used through A, B refuses the next.
            status, _, _ = await post(session, a.url, "bob")
            assert status == 200
            status, headers, body = await post(session, b.url, "bob")
            assert status == 429 and "tpm" in json.loads(body)["error"]["message"] and headers["retry-after"]

            # max_concurrent = 2 across both: one slow stream on each, a third is refused on either.
            streams = [asyncio.create_task(post(session, gw.url, "carol", stream=True)) for gw in (a, b)]
            assert await server.wait_for_async(lambda: sum(r.json().get("stream", False) for r in server.requests) == 2)
            for gw in (a, b):
                status, headers, body = await post(session, gw.url, "carol")
                assert status == 429 and "max_concurrent" in json.loads(body)["error"]["message"]
            for status, _, body in await asyncio.gather(*streams):
                assert status == 200 and body.endswith(b"data: [DONE]\n\n")
            # Released when they finished (written without waiting, right after the streams' ends): the next one is
            # served.
            await released(redis, "carol")
            status, _, _ = await post(session, b.url, "carol")
            assert status == 200

    asyncio.run(main())


ROUTES = """
[routes.flaky]
targets = ["up/a", "up2/b"]
cooldown_after = 2
cooldown_s = 60

[routes.cached]
targets = ["up/c"]
cache_ttl_s = 60
cache_shared = true
"""


def test_cooldown_and_cache_are_shared(server: ScriptedServer, spawn_gateway, redis: RedisServer) -> None:
    env = {"LLMRELAY_REDIS_URL": redis.url}
    a, b = spawn_gateway(ROUTES, env=env), spawn_gateway(ROUTES, env=env)

    def first(request: RecordedRequest) -> Reply:
        if request.json()["model"] == "a":
            return json_reply({"error": {"message": "down"}}, 500)
        return json_reply(completion("cached answer", usage=usage(1, 2)))

    server.route("POST", FIRST, first)
    server.route("POST", SECOND, json_reply(completion("from b")))

    def to_a() -> int:
        return sum(1 for r in server.requests if r.route_path == FIRST and r.json()["model"] == "a")

    async def main() -> None:
        async with fresh_session() as session:
            # One failure of up/a on each replica: two in a row in Redis, so up/a cools down for both.
            for gw in (a, b):
                status, headers, _ = await post(session, gw.url, "", "flaky")
                assert status == 200 and headers["x-llmrelay-provider"] == "up2"
            assert to_a() == 2
            for gw in (b, a, b):
                status, headers, _ = await post(session, gw.url, "", "flaky")
                assert status == 200 and headers["x-llmrelay-provider"] == "up2"
            assert to_a() == 2  # skipped by both replicas while cooling

            # An answer cached by A is a hit on B; the upstream is asked once.
            status, headers, _ = await post(session, a.url, "", "cached", temperature=0)
            assert status == 200 and headers["x-llmrelay-cache"] == "miss"
            asked = len(server.requests)
            status, headers, cached = await post(session, b.url, "", "cached", temperature=0)
            assert status == 200 and headers["x-llmrelay-cache"] == "hit"
            assert json.loads(cached)["choices"][0]["message"]["content"] == "cached answer"
            assert len(server.requests) == asked

    asyncio.run(main())


def test_redis_unreachable_at_start_exits_1_with_one_line(server: ScriptedServer, tmp_path) -> None:
    port = 1  # tcpmux: nothing listens there (a free ephemeral port could be taken by another test's server)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[server]\nredis_url = "redis://:hunter2pw@127.0.0.1:{port}/0"\n')
    for workers in ("1", "2"):
        done = subprocess.run(
            [llmrelay_command(), "serve", "--port", "0", "--config", str(config), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: redis at redis://:***@127.0.0.1:{port}/0 is unreachable")
        assert "hunter2pw" not in done.stderr


def test_workers_spread_share_limits_and_drain(server: ScriptedServer, spawn_gateway, redis: RedisServer) -> None:
    toml = key_entry("alice", rpm=5) + key_entry("dave")
    gw = spawn_gateway(toml, "--workers", "3", env={"LLMRELAY_REDIS_URL": redis.url})
    assert gw.lines[-1].endswith("; 3 workers)")
    server.route("POST", FIRST, json_reply(completion("ok")))

    async def main() -> None:
        async with fresh_session() as session:
            pids = set()
            for _ in range(30):
                async with session.get(gw.url + "/health") as response:
                    assert response.status == 200
                    pids.add(response.headers["x-llmrelay-worker"])
            assert len(pids) >= 2, pids  # the kernel spread 30 connections over the 3 workers
            assert str(gw.process.pid) not in pids
            replies = [await post(session, gw.url, "alice") for _ in range(10)]
            assert [status for status, _, _ in replies].count(200) == 5  # shared through Redis, not 5 per worker
            answered = {headers["x-llmrelay-worker"] for _, headers, _ in replies}
            assert len(answered) >= 2

            # SIGTERM while a stream is in flight: every worker drains, the stream ends intact, exit 0.
            server.route("POST", FIRST, slow_stream(1.0))
            stream = asyncio.create_task(post(session, gw.url, "dave", stream=True))
            assert await server.wait_for_async(lambda: any(r.json().get("stream") for r in server.requests))
            gw.process.send_signal(signal.SIGTERM)
            status, _, body = await stream
            assert status == 200 and body.endswith(b"data: [DONE]\n\n")

    asyncio.run(main())
    assert gw.process.wait(30) == 0
    assert not [line for line in gw.lines if "Traceback" in line]


def test_worker_that_dies_is_restarted(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway(key_entry("alice", rpm=5), "--workers", "2")
    assert any("each worker keeps its own" in line for line in gw.lines)  # no redis_url

    async def worker_pids() -> set[str]:
        async with fresh_session() as session:
            pids = set()
            for _ in range(20):
                async with session.get(gw.url + "/health") as response:
                    pids.add(response.headers["x-llmrelay-worker"])
            return pids

    victim = int(sorted(asyncio.run(worker_pids()))[0])
    os.kill(victim, signal.SIGKILL)
    assert server.wait_for(lambda: any(f"worker {victim} exited (killed by SIGKILL)" in x for x in gw.lines), 10)
    deadline = time.monotonic() + 20
    while True:  # the replacement listens; the port keeps answering meanwhile
        pids = asyncio.run(worker_pids())
        if len(pids) == 2 and str(victim) not in pids:
            break
        assert time.monotonic() < deadline, pids
        time.sleep(0.2)
    assert gw.terminate() == 0


def test_redis_lost_under_load_then_back(server: ScriptedServer, spawn_gateway) -> None:
    """Redis killed with 100 requests in flight and more coming: none fails; restarted: shared again."""
    own = RedisServer().start()
    try:
        toml = key_entry("load", rpm=100_000, max_concurrent=1000) + "".join(
            key_entry(f"probe{n}", rpm=2) for n in range(10)
        )
        env = {"LLMRELAY_REDIS_URL": own.url}
        a, b = spawn_gateway(toml, env=env), spawn_gateway(toml, env=env)
        server.route("POST", FIRST, slow_stream(0.3))

        async def main() -> None:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                first = [asyncio.create_task(post(session, gw.url, "load", stream=True)) for gw in (a, b) * 50]
                assert await server.wait_for_async(lambda: len(server.requests) >= 50, 20)
                own.kill()
                more = [asyncio.create_task(post(session, gw.url, "load", stream=True)) for gw in (a, b) * 50]
                for status, _, body in await asyncio.gather(*first, *more):
                    assert status == 200 and body.endswith(b"data: [DONE]\n\n"), (status, body[-200:])

                own.start()
                # Back to Redis by themselves: a probe key's rpm = 2 holds across both replicas again.
                for n in range(10):
                    statuses = [(await post(session, gw.url, f"probe{n}"))[0] for gw in (a, b, a)]
                    if statuses == [200, 200, 429]:
                        return
                    await asyncio.sleep(0.5)
                raise AssertionError("the replicas never shared limits again after Redis came back")

        asyncio.run(main())
        for gw in (a, b):
            # Each outage logged once, not per request (a slow moment under load before the kill is an outage
            # too), and each recovery.
            lost = [line for line in gw.lines if "failed (" in line and "redis at" in line]
            back = [line for line in gw.lines if "answers again: " in line]
            assert 1 <= len(lost) <= 5 and len(back) == len(lost), gw.lines
            metrics = urllib.request.urlopen(gw.url + "/metrics", timeout=10).read().decode()
            counted = [line for line in metrics.splitlines() if line.startswith("llmrelay_redis_errors_total ")]
            assert counted and float(counted[0].split()[1]) >= 1, counted
    finally:
        own.stop()


def test_slots_of_a_killed_replica_come_back(server: ScriptedServer, spawn_gateway, redis: RedisServer) -> None:
    ttl = 2.0
    toml = key_entry("carol", max_concurrent=2)
    env = {"LLMRELAY_REDIS_URL": redis.url, "LLMRELAY_REDIS_SLOT_TTL_S": str(ttl)}
    a, b = spawn_gateway(toml, env=env), spawn_gateway(toml, env=env)

    def answer(request: RecordedRequest) -> Reply:
        return slow_stream(30) if request.json().get("stream") else json_reply(completion("ok"))

    server.route("POST", FIRST, answer)

    async def main() -> float:
        async with fresh_session() as session:
            held = [asyncio.create_task(post(session, a.url, "carol", stream=True)) for _ in range(2)]
            assert await server.wait_for_async(lambda: len(server.requests) == 2, 10)
            status, _, _ = await post(session, b.url, "carol")
            assert status == 429
            a.process.kill()  # kill -9 while holding both slots
            killed = time.monotonic()
            await asyncio.gather(*held, return_exceptions=True)
            while True:
                status, _, _ = await post(session, b.url, "carol")
                if status == 200:
                    return time.monotonic() - killed
                assert status == 429
                assert time.monotonic() - killed < ttl + 5, "the dead replica's slots never came back"
                await asyncio.sleep(0.1)

    asyncio.run(main())


def test_one_round_trip_per_request(server: ScriptedServer, spawn_gateway, redis: RedisServer) -> None:
    """A key with rpm, tpm and max_concurrent: per request, Redis receives one admit (waited for) and one release
    carrying the request's tokens (written without waiting), on one connection; nothing else (MONITOR feed). A
    release is written after the response, so it may reach Redis after the next request's admit: counted, not
    ordered."""
    toml = key_entry("dave", rpm=100_000, tpm=10_000_000, max_concurrent=100)
    env = {"LLMRELAY_REDIS_URL": redis.url, "LLMRELAY_REDIS_SLOT_TTL_S": "600"}  # no slot renewal meanwhile
    gateway = spawn_gateway(toml, env=env)

    def answer(request: RecordedRequest) -> Reply:
        if request.json().get("stream"):
            return Reply(headers={"Content-Type": "text/event-stream"}, writes=[sse(chunk("ok"), "[DONE]")])
        return json_reply(completion("ok", usage=usage(8, 4)))

    server.route("POST", FIRST, answer)

    async def main() -> list[tuple[str, str]]:
        async with aiohttp.ClientSession() as session:
            assert (await post(session, gateway.url, "dave"))[0] == 200  # warm-up: connections, scripts
            await released(redis, "dave")
            with Monitor(redis.port) as monitor:
                for stream in (False, True) * 5:
                    status, _, body = await post(session, gateway.url, "dave", stream=stream)
                    assert status == 200 and b"ok" in body
                await released(redis, "dave")
                await asyncio.sleep(0.2)  # the answer to the last release: nothing more is sent
                return monitor.commands()

    sent = asyncio.run(main())
    commands = [command for _, command in sent if command != "ZCARD"]
    # Non-streamed (usage 12 tokens): admit, release with the tokens (scripts); streamed (no usage): admit, ZREM.
    assert sorted(commands) == ["EVALSHA"] * 15 + ["ZREM"] * 5
    assert len({client for client, command in sent if command != "ZCARD"}) == 1
