"""The gateway under hostile and careless callers: garbage, slow and oversized requests, and a storm of streams
whose callers hang up at random. The gateway runs as the installed command; its RSS and open file descriptors
are read from /proc."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from scripted_server import Reply, ScriptedServer, chunk, sse

KEY = "sk-llmrelay-storm-key-0123456789"
STORM_CONFIG = f"""
[[keys]]
name = "storm"
sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
max_concurrent = 400
"""
AUTH = {"Authorization": f"Bearer {KEY}"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Exchange:
    """What the gateway did with raw bytes: its reply so far, and whether it closed the connection (else the
    client stopped waiting: the gateway neither answered in full nor closed within the timeout)."""

    def __init__(self, reply: bytes, closed: bool) -> None:
        self.reply = reply
        self.closed = closed

    def refused(self) -> bool:
        """A 4xx answer, or the connection closed: never silence until the caller gives up."""
        return self.reply.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")) or (self.closed and self.reply == b"")


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> Exchange:
    """Send raw bytes; read until the gateway sent a response head, closed, or stayed silent ``timeout`` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk_ := sock.recv(65536):
                received += chunk_
                if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 100"):
                    return Exchange(received, closed=False)
        except TimeoutError:
            return Exchange(received, closed=False)
        except ConnectionResetError:
            pass
        return Exchange(received, closed=True)


def healthy(port: int) -> bool:
    reply = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").reply
    return reply.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\x03 not http at all\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{"mo',
        "GET /v1/models/\u00e9\u0000 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ],
)
def test_garbage_requests_get_a_4xx_or_a_closed_connection_and_the_gateway_lives_on(
    server: ScriptedServer, spawn_gateway, garbage: bytes
) -> None:
    gw = spawn_gateway(read_timeout=2)
    # Within read_timeout_s (2 s) the gateway answers 4xx or closes; the client waits far longer than that.
    exchange = raw_exchange(gw.port, garbage, timeout=15)
    assert exchange.refused(), (exchange.closed, exchange.reply[:200])
    assert healthy(gw.port)
    assert gw.process.poll() is None
    assert not [line for line in gw.lines if "Traceback" in line]


def test_oversized_headers_are_refused(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway()
    big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    exchange = raw_exchange(gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n", timeout=15)
    assert exchange.refused(), (exchange.closed, exchange.reply[:200])
    assert healthy(gw.port)


def _trickle(sock: socket.socket, data: bytes, interval: float, limit: float) -> tuple[float, bytes]:
    """Send ``data`` one byte every ``interval`` s until the gateway answers or closes (or ``limit`` s pass), then
    read what it sends; (seconds it took, what the gateway sent)."""
    started = time.monotonic()
    sock.setblocking(False)
    received = b""
    closed = False
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(interval)
        try:
            piece = sock.recv(65536)
        except BlockingIOError:
            piece = None
        except ConnectionResetError:
            piece = b""
        if piece is not None:
            received += piece
            closed = not piece
            break
        if time.monotonic() - started > limit:
            break
    took = time.monotonic() - started
    sock.setblocking(True)
    sock.settimeout(5)
    try:
        while not closed and (piece := sock.recv(65536)):
            received += piece
    except (TimeoutError, ConnectionResetError):
        pass
    return took, received


def test_a_caller_trickling_its_request_head_is_cut_off(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway(read_timeout=2)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as sock:
        took, received = _trickle(sock, head, 0.25, limit=20)
    assert took < 8, took  # closed after read_timeout_s (2 s), long before the head could finish
    assert received == b"" or received.startswith(b"HTTP/1.1 4")
    assert healthy(gw.port)


def test_a_caller_trickling_its_body_gets_408(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway(read_timeout=2)
    body = json.dumps({"model": "up/m", "messages": [{"role": "user", "content": "x" * 200}]}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as sock:
        sock.sendall(head)
        took, received = _trickle(sock, body, 0.25, limit=20)
    assert took < 8, took
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"request_timeout" in received
    assert server.requests == []  # nothing went upstream


def _drip_reply(pieces: int, delay: float) -> Reply:
    writes: list[bytes | float] = [sse(chunk(role="assistant", content=""))]
    for number in range(pieces):
        writes += [delay, sse(chunk(f"p{number} "))]
    writes += [sse(chunk(finish_reason="stop")), b"data: [DONE]\n\n"]
    return Reply(headers=[("Content-Type", "text/event-stream")], writes=writes)


async def _one_stream(session: aiohttp.ClientSession, url: str, hang_up_after: int | None) -> tuple[int, str]:
    body = {"model": "up/m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with session.post(url, json=body, headers=AUTH) as response:
        if response.status != 200:
            return response.status, await response.text()
        events = 0
        text = []
        async for line in response.content:
            if line.startswith(b"data: {"):
                events += 1
                delta = json.loads(line[6:])["choices"]
                if delta and delta[0]["delta"].get("content"):
                    text.append(delta[0]["delta"]["content"])
                if hang_up_after is not None and events > hang_up_after:
                    response.close()  # the caller goes away mid-stream
                    return 200, "hung up"
            elif line.startswith(b"data: [DONE]"):
                return 200, "".join(text)
        return 200, "ended without [DONE]"


async def _wave(port: int, streams: int, rng: random.Random) -> list[tuple[int, str]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        plans = [rng.choice([None, None, 0, 1, 2, 4]) for _ in range(streams)]
        return await asyncio.gather(*(_one_stream(session, url, plan) for plan in plans))


def test_a_storm_of_streams_with_random_hang_ups_leaks_nothing(server: ScriptedServer, spawn_gateway) -> None:
    pieces = 6
    server.route("POST", "/v1/chat/completions", lambda request: _drip_reply(pieces, 0.05))
    gw = spawn_gateway(STORM_CONFIG)
    pid = gw.process.pid
    assert healthy(gw.port)
    fds_before = open_fds(pid)
    rng = random.Random(7)
    expected = "".join(f"p{number} " for number in range(pieces))
    measured = []
    for _wave_number in range(3):
        results = asyncio.run(_wave(gw.port, 400, rng))
        statuses = {status for status, _ in results}
        assert statuses == {200}, [result for result in results if result[0] != 200][:3]  # no stuck slot: no 429
        finished = [text for _, text in results if text != "hung up"]
        assert finished and all(text == expected for text in finished)  # whole answers stay byte-exact
        measured.append((rss_kb(pid), open_fds(pid)))
    # Idle keep-alive connections to the upstream stay pooled for aiohttp's 15 s keep-alive; then they close.
    deadline = time.monotonic() + 30
    while open_fds(pid) > fds_before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert open_fds(pid) <= fds_before + 2, (fds_before, measured, open_fds(pid))
    assert measured[-1][0] <= measured[0][0] * 1.10, measured
    metrics = raw_exchange(gw.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").reply
    assert b"llmrelay_inflight_requests 0.0" in metrics or b"llmrelay_inflight_requests 0\n" in metrics
    assert gw.terminate() == 0
    assert not [line for line in gw.lines if "Traceback" in line or "Error handling request" in line]
