"""Soak: waves of concurrent drip-fed streams from the scripted server, checked for exactness and leaks.

Each wave runs ``concurrency`` streams at once through one event loop; every answer must be byte-exact,
the pool must reuse its connections across waves (at most ``concurrency + 1`` opened in all), RSS must
stay flat after the first wave (±10 %), file descriptors must come back to their baseline once the
sessions are closed, and no ResourceWarning may be emitted. The CI variant takes a few seconds;
``LLMRELAY_LONG_TESTS=1`` adds a minutes-long one (``LLMRELAY_SOAK_SECONDS``, default 180).
The asyncio.run-per-call leak check lives in tests/test_reliability.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import warnings
from typing import Any

import pytest
from helpers import make_provider
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, sse

from llmrelay.http.session import close_sessions

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for RSS and fds")

CHUNKS = 6
DRIP = 0.02  # seconds between events of one stream
EXACT = "·é😀✓ "  # multi-byte characters in every piece


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def expected_text(number: str) -> str:
    return "".join(f"{number}:{index}{EXACT}" for index in range(CHUNKS))


def drip_fed(request: RecordedRequest) -> Reply:
    number = request.json()["messages"][0]["content"]
    writes: list[bytes | float] = []
    for index in range(CHUNKS):
        writes += [sse(chunk(f"{number}:{index}{EXACT}")), DRIP]
    writes.append(sse(chunk(finish_reason="stop"), "[DONE]"))
    return Reply(headers=[("Content-Type", "text/event-stream")], writes=writes)


async def one(provider: type, number: str) -> str:
    pieces = []
    async for item in provider.create_async_generator("", [{"role": "user", "content": number}], stream=True):
        if isinstance(item, str):
            pieces.append(item)
    return "".join(pieces)


def soak(server: ScriptedServer, concurrency: int, waves: int | None, seconds: float | None) -> dict[str, Any]:
    server.route("POST", "/v1/chat/completions", drip_fed)
    provider = make_provider(server)
    fds_before = open_fds()
    report: dict[str, Any] = {"waves": 0, "wrong": 0}

    async def main() -> None:
        started = time.monotonic()
        wave = 0
        while (waves is not None and wave < waves) or (seconds is not None and time.monotonic() - started < seconds):
            numbers = [f"{wave}-{index}" for index in range(concurrency)]
            texts = await asyncio.gather(*(one(provider, number) for number in numbers))
            report["wrong"] += sum(text != expected_text(number) for text, number in zip(texts, numbers, strict=True))
            del texts
            gc.collect()
            if wave == 0:
                report["rss_first"] = rss_bytes()
            wave += 1
        report["rss_last"] = rss_bytes()
        report["waves"] = wave
        report["connections"] = server.connections
        report["served"] = server.served
        await close_sessions()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(main())
        gc.collect()
    report["resource_warnings"] = [str(warning.message) for warning in caught if warning.category is ResourceWarning]
    # the server closes its side of each connection when it sees the client's close
    server.wait_for(lambda: open_fds() <= fds_before, timeout=10)
    report["fds_before"], report["fds_after"] = fds_before, open_fds()
    return report


def check(report: dict[str, Any], concurrency: int) -> None:
    assert report["wrong"] == 0, report
    assert report["connections"] <= concurrency + 1, report
    assert abs(report["rss_last"] - report["rss_first"]) <= 0.10 * report["rss_first"], report
    assert report["fds_after"] <= report["fds_before"], report
    assert report["resource_warnings"] == [], report


@pytest.fixture
def soak_server() -> Any:
    """A server of its own that keeps no request records, so RSS measures the client alone."""
    with ScriptedServer(max_records=0) as server:
        yield server


def test_soak_waves_of_concurrent_drip_fed_streams(soak_server: ScriptedServer) -> None:
    concurrency, waves = 400, 8
    report = soak(soak_server, concurrency, waves=waves, seconds=None)
    assert report["waves"] == waves and report["served"] == concurrency * waves
    check(report, concurrency)


@pytest.mark.long
@pytest.mark.skipif(os.environ.get("LLMRELAY_LONG_TESTS") != "1", reason="set LLMRELAY_LONG_TESTS=1")
def test_soak_for_minutes(soak_server: ScriptedServer) -> None:
    concurrency = int(os.environ.get("LLMRELAY_SOAK_CONCURRENCY", "1000"))
    report = soak(soak_server, concurrency, waves=None, seconds=float(os.environ.get("LLMRELAY_SOAK_SECONDS", "180")))
    print(report)
    check(report, concurrency)
