"""Streaming (SPEC 8.5) over raw HTTP: forwarding as it arrives, shapes, in-band errors, keep-alive, disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiohttp
from raw import chat
from scripted_server import Reply, ScriptedServer, chunk, sse, sse_reply, tool_call_delta, usage

PIECES = ["Hel", "lo", ", wörld 🚀\n", '"quoted" \\ <think>x</think>', " "]


def test_text_forwarded_one_event_per_piece_then_done(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(role="assistant", content=""),
            *(chunk(piece, model="served") for piece in PIECES),
            chunk(finish_reason="stop"),
            chunk(choices=[], usage=usage(5, 6)),
            "[DONE]",
        )
    )
    reply = chat(gw.url, "up/m", stream=True, headers={"x-request-id": "s-1"})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["x-request-id"] == "s-1" and reply.headers["x-llmrelay-provider"] == "up"
    events = reply.events()
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    assert all(event.startswith(b"data: {") for event in events[:-1])
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:] if c["choices"]]
    assert [t for t in texts if t] == PIECES  # one event per upstream piece, exact, never joined
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert not any(c.get("usage") for c in chunks)  # not asked for
    assert server.requests[0].json()["stream"] is True


def test_usage_chunk_with_include_usage(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(sse_reply(chunk("hi"), chunk(finish_reason="stop"), chunk(choices=[], usage=usage(2, 3)), "[DONE]"))
    reply = chat(gw.url, "up/m", stream=True, stream_options={"include_usage": True})
    chunks = reply.chunks()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert reply.events()[-1] == b"data: [DONE]"


def test_tool_calls_and_reasoning(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(reasoning_content="think"),
            chunk(tool_calls=[tool_call_delta(0, id="call_a", name="get_weather", arguments='{"ci')]),
            chunk(tool_calls=[tool_call_delta(0, arguments='ty": "Paris"}')]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = chat(gw.url, "up/m", stream=True, tools=tools, tool_choice="required")
    chunks = reply.chunks()
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "think"} in deltas
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls == [  # one entry per upstream piece, as it arrived (SPEC 8.5); the call's first one names it
        [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}],
        [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    sent = server.requests[0].json()
    assert sent["tools"] == tools and sent["tool_choice"] == "required"


def test_failure_after_first_byte_is_in_band_without_done(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(sse_reply(chunk("Hel"), chunk("lo"), end="abrupt"))
    reply = chat(gw.url, "up/m", stream=True)
    assert reply.status == 200
    events = reply.events()
    assert b"[DONE]" not in reply.body
    last = json.loads(events[-1][6:])
    assert set(last) == {"error"} and last["error"]["code"] == "upstream_error"
    texts = [c["choices"][0]["delta"].get("content") for c in reply.chunks()[:-1] if c.get("choices")]
    assert [t for t in texts if t] == ["Hel", "lo"]


def test_failure_before_output_is_an_http_error(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        Reply(
            status=500,
            headers={"Content-Type": "application/json"},
            writes=[b'{"error": {"message": "down"}}'],
            body_mode="length",
        )
    )
    reply = chat(gw.url, "up/m", stream=True)
    assert reply.status == 502
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.error["code"] == "upstream_error"


def test_keepalive_comments_during_silence(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(keepalive=0.2)
    writes: list[bytes | float] = [sse(chunk("a")), 1.2, sse(chunk("b"), chunk(finish_reason="stop"), "[DONE]")]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes))
    reply = chat(gw.url, "up/m", stream=True)
    events = reply.events()
    assert b": keep-alive" in events
    first = events.index(b": keep-alive")
    texts_before = [e for e in events[:first] if b'"content":"a"' in e]
    assert texts_before and b'"content":"b"' in events[-3]
    assert events[-1] == b"data: [DONE]"


async def _read_then_close(url: str, body: dict, read_first: bool) -> None:
    async with aiohttp.ClientSession() as session:
        if read_first:
            response = await session.post(url + "/v1/chat/completions", json=body)
            assert response.status == 200
            await response.content.readuntil(b'"content":"a"')
            response.close()  # drop the connection mid-answer
        else:  # no byte of the answer yet (the gateway waits for the upstream's first event): give up waiting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(session.post(url + "/v1/chat/completions", json=body), 0.3)


def test_caller_disconnect_closes_upstream_at_once(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    server.script(sse_reply(chunk(role="assistant"), chunk("a"), end="keep_open"))
    asyncio.run(_read_then_close(gw.url, body, read_first=True))
    assert server.wait_for(lambda: server.requests and server.requests[0].client_disconnected, 1.0)
    # Before any output (the upstream has sent only its headers): the same.
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, end="keep_open"))
    asyncio.run(_read_then_close(gw.url, body, read_first=False))
    assert server.wait_for(lambda: len(server.requests) == 2 and server.requests[1].client_disconnected, 1.0)
    assert gw.gateway.inflight == 0 or server.wait_for(lambda: gw.gateway.inflight == 0, 2.0)
    assert [line for line in gw.access_lines if " 499 " in line]
    assert not [line for line in gw.log_lines if "Traceback" in line or "rror" in line.split(" request_id")[0]]


def test_concurrency_slot_released_on_disconnect_and_error(server: ScriptedServer, make_gateway) -> None:
    import hashlib

    key = "sk-llmrelay-slots"
    gw = make_gateway(
        f'[[keys]]\nname = "k"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\nmax_concurrent = 1\n'
    )
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    async def hold_then_second() -> tuple[int, str]:
        async with aiohttp.ClientSession(headers=auth) as session:
            response = await session.post(gw.url + "/v1/chat/completions", json=body)
            await response.content.readuntil(b'"content":"a"')
            async with session.post(gw.url + "/v1/chat/completions", json=body) as second:  # the slot is taken
                refused = second.status, second.headers.get("Retry-After", "")
            response.close()
            return refused

    server.script(sse_reply(chunk("a"), end="keep_open"))
    status, retry_after = asyncio.run(hold_then_second())
    assert status == 429 and int(retry_after) >= 1
    assert server.wait_for(lambda: server.requests[0].client_disconnected, 1.0)
    server.script(sse_reply(chunk("b"), end="abrupt"))  # an upstream failure also gives the slot back
    assert b'"error"' in chat(gw.url, "up/m", stream=True, headers=auth).body
    server.script(sse_reply(chunk("c"), chunk(finish_reason="stop"), "[DONE]"))
    assert chat(gw.url, "up/m", stream=True, headers=auth).status == 200


async def _http_chunks(port: int, body: dict[str, object], until: bytes) -> list[bytes]:
    """POST ``body`` to the chat door over a raw socket and return the response's HTTP chunks (the gateway's
    socket writes: one chunk each) up to the one holding ``until``; then hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    chunks: list[bytes] = []
    try:
        while not chunks or until not in chunks[-1]:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            assert size, "the body ended before the awaited event"
            chunks.append((await reader.readexactly(size + 2))[:-2])
    finally:
        writer.close()
    return chunks


def _contents(data: bytes) -> list[str]:
    events = [json.loads(event[6:]) for event in data.split(b"\n\n") if event.startswith(b"data: {")]
    deltas = [c["choices"][0]["delta"] for c in events if c["choices"]]
    return [delta["content"] for delta in deltas if delta.get("content")]


def test_events_of_one_upstream_read_leave_in_one_write_and_none_waits(server: ScriptedServer, make_gateway) -> None:
    """SPEC 8.5: one event per upstream event, forwarded as it arrives. What one upstream read brought leaves in one
    socket write (one HTTP chunk) holding each event as its own SSE event; a lone event is written at once, while
    the upstream is still open and sends nothing more (nothing waits for a later read)."""
    gw = make_gateway()
    together = sse(chunk("b"), chunk("c"), chunk("d"))
    writes: list[bytes | float] = [sse(chunk("a", role="assistant")), 0.2, together, 0.2, sse(chunk("e"))]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes, end="keep_open"))
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    chunks = asyncio.run(asyncio.wait_for(_http_chunks(gw.port, body, b'"content":"e"'), 10))
    contents = [_contents(data) for data in chunks]
    assert [text for texts in contents for text in texts] == ["a", "b", "c", "d", "e"]  # each its own event
    with_b = next(texts for texts in contents if "b" in texts)
    assert {"c", "d"} <= set(with_b)  # the one upstream write: one gateway write
    assert contents[-1][-1] == "e"  # the last event came although the upstream stays open
    assert server.wait_for(lambda: server.requests and server.requests[-1].client_disconnected)


async def _read_slowly(port: int, body: dict[str, object]) -> bytes:
    """The whole raw response, read a little at a time through a small receive buffer (a slow caller)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    parts = []
    while piece := await reader.read(4096):
        parts.append(piece)
        await asyncio.sleep(0.0005)  # a slow caller: the gateway's socket buffer fills and it must wait for it
    writer.close()
    return b"".join(parts)


def test_slow_caller_gets_every_event_in_order(server: ScriptedServer, make_gateway) -> None:
    """A caller that reads more slowly than the upstream sends: the gateway waits for its socket to drain (it does
    not drop, reorder or merge events)."""
    gw = make_gateway()
    pieces = [f"{index:04d}" + "é" * 8000 for index in range(300)]
    writes: list[bytes | float] = [sse(chunk(pieces[0], role="assistant"))]
    writes += [sse(*(chunk(piece) for piece in pieces[start : start + 5])) for start in range(1, len(pieces), 5)]
    writes.append(sse(chunk(finish_reason="stop"), "[DONE]"))
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes))
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    raw = asyncio.run(asyncio.wait_for(_read_slowly(gw.port, body), 60))
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    payload, rest = b"", chunked
    while True:  # undo the chunked framing
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        payload, rest = payload + rest[:size], rest[size + 2 :]
    assert _contents(payload) == pieces
    assert payload.endswith(b"data: [DONE]\n\n")
