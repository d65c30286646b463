"""Streaming (SPEC 8.5) over raw HTTP: forwarding as it arrives, shapes, in-band errors, keep-alive, disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json

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
