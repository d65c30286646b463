"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` (SPEC 9.3) over real sockets: the official ``anthropic``
SDK and raw HTTP against the gateway in front of the scripted server (what the upstream received, field by field)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic_support import block_texts, check_stream, events_of
from raw import afetch, chat, fetch
from scripted_server import (
    Reply,
    ScriptedServer,
    chunk,
    completion,
    json_reply,
    sse,
    sse_reply,
    tool_call,
    tool_call_delta,
    usage,
)

from llmrelay.server.doors.anthropic_request import parse_count_request

KEY = "sk-llmrelay-messages-door-test-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
KEYS = f'[[keys]]\nname = "alice"\nsha256 = "{DIGEST}"\n'
PIECES = ["Hel", "lo", ", wörld 🚀\n", '"quoted" \\ <b>', " "]
CHAT = "/v1/chat/completions"


_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test made is closed after it (its pooled sockets with it)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def client(gw: Any, key: str = KEY) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20)
    _OPEN.append(made)
    return made


def messages_body(**fields: Any) -> dict[str, Any]:
    return {"model": "up/test-model", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}], **fields}


def post_messages(gw: Any, body: dict[str, Any], path: str = "/v1/messages", **headers: str) -> Any:
    return fetch("POST", gw.url + path, body, {"x-api-key": KEY, **headers})


def upstream(server: ScriptedServer, index: int = 0) -> dict[str, Any]:
    sent: dict[str, Any] = server.requests[index].json()
    return sent


# ------------------------------------------------------------------------------------ create


def test_create_text_translates_the_request_field_by_field(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(json_reply(completion("Hello there", model="served-model", usage=usage(12, 3))))
    message = client(gw).messages.create(
        model="up/test-model",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        extra_body={"temperature": 0.25, "top_p": 0.5, "top_k": 7},  # sampling fields the SDK no longer names
        stop_sequences=["STOP"],
        metadata={"user_id": "user-1"},
    )
    sent = upstream(server)
    assert server.requests[0].route_path == CHAT
    assert sent["model"] == "test-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.25 and sent["top_p"] == 0.5
    assert sent["top_k"] == 7 and sent["stop"] == ["STOP"] and sent["user"] == "user-1"
    assert not sent.get("stream")
    assert not {"system", "stop_sequences", "metadata", "anthropic_version"} & set(sent)
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello there"
    assert message.model == "served-model"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 3
    assert message.usage.cache_creation_input_tokens == 0 and message.usage.cache_read_input_tokens == 0


def test_headers_query_and_ignored_fields(server: ScriptedServer, make_gateway) -> None:
    """Claude Code's request: ?beta=true, anthropic-beta, a system message inside messages, fields dropped and
    named in x-llmrelay-ignored, both key headers."""
    gw = make_gateway(KEYS)
    server.script(json_reply(completion("ok", usage=usage(1, 1))))
    body = messages_body(
        messages=[
            {"role": "system", "content": "inside"},
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
        ],
        context_management={"edits": [{"type": "clear_thinking_20251015"}]},
        tools=[
            {"name": "Bash", "input_schema": {"type": "object"}},
            {"name": "Deferred", "input_schema": {"type": "object"}, "defer_loading": True},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        thinking={"type": "adaptive", "display": "summarized"},
    )
    reply = post_messages(
        gw,
        body,
        "/v1/messages?beta=true",
        **{"anthropic-version": "2023-06-01", "anthropic-beta": "whatever-2099", "Authorization": "Bearer wrong"},
    )
    assert reply.status == 200, reply.body
    ignored = [name.strip() for name in reply.headers["x-llmrelay-ignored"].split(",")]
    assert ignored == ["tools:Deferred", "tools:web_search", "context_management"]
    sent = upstream(server)
    assert sent["messages"] == [{"role": "system", "content": "inside"}, {"role": "user", "content": "Hi"}]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["Bash"]
    assert "reasoning_effort" not in sent and "context_management" not in sent


def test_refused_document_block_and_missing_max_tokens(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    reply = post_messages(gw, messages_body(messages=[{"role": "user", "content": [document]}]))
    assert reply.status == 400
    data = reply.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert "document" in data["error"]["message"] and data["request_id"] == reply.headers["x-request-id"]
    body = messages_body()
    del body["max_tokens"]
    reply = post_messages(gw, body)
    assert reply.status == 400 and "max_tokens" in reply.json()["error"]["message"]
    assert not server.requests


# ------------------------------------------------------------------------------------ stream


def _answer_pieces() -> tuple[Reply, Reply]:
    """The same answer (reasoning, text, one tool call, usage), as JSON and as a stream."""
    call = tool_call("get_weather", {"city": "Paris"}, id="call.1:a")
    whole = completion(
        "It is",
        reasoning_content="think hard",
        tool_calls=[call],
        finish_reason="tool_calls",
        usage=usage(30, 9, prompt_tokens_details={"cached_tokens": 10}),
    )
    streamed = sse_reply(
        chunk(role="assistant", reasoning_content="think "),
        chunk(reasoning_content="hard"),
        chunk("It "),
        chunk("is"),
        chunk(tool_calls=[tool_call_delta(0, id="call.1:a", name="get_weather", arguments='{"city": ')]),
        chunk(tool_calls=[tool_call_delta(0, arguments='"Paris"}')]),
        chunk(finish_reason="tool_calls"),
        chunk(choices=[], usage=usage(30, 9, prompt_tokens_details={"cached_tokens": 10})),
        "[DONE]",
    )
    return json_reply(whole), streamed


def test_stream_final_message_equals_the_created_one(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    whole, streamed = _answer_pieces()
    server.script(whole, streamed)
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    params: dict[str, Any] = {
        "model": "up/test-model",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    created = client(gw).messages.create(**params)
    with client(gw).messages.stream(**params) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["It ", "is"]
    assert final.model_dump(exclude={"id"}) == created.model_dump(exclude={"id"})
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "think hard" and final.content[0].signature == ""
    tool_use = final.content[2]
    assert tool_use.id == "call_1_a" and tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 20 and final.usage.cache_read_input_tokens == 10
    assert final.usage.output_tokens == 9
    for index in (0, 1):
        sent = upstream(server, index)
        assert sent["reasoning_effort"] == "low" and sent["max_tokens"] == 2000
        assert sent["tools"] == [
            {"type": "function", "function": {"name": "get_weather", "parameters": tools[0]["input_schema"]}}
        ]
    assert upstream(server, 1)["stream"] is True


def test_raw_stream_invariants_and_byte_exact_text(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(
        sse_reply(
            chunk(role="assistant", content=""),
            *(chunk(piece) for piece in PIECES),
            chunk(finish_reason="length"),
            chunk(choices=[], usage=usage(4, 5)),
            "[DONE]",
        )
    )
    body = messages_body(stream=True)
    reply = post_messages(gw, body)
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
    events = events_of(reply.body)
    blocks = check_stream(events)
    assert [block["type"] for block in blocks] == ["text"]
    assert [delta["text"] for delta in blocks[0]["deltas"]] == PIECES  # one delta per upstream piece, exact
    assert block_texts(blocks) == ["".join(PIECES)]
    estimate = parse_count_request(body).estimate_tokens()
    assert events[0][1]["message"]["usage"]["input_tokens"] == estimate
    assert events[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"input_tokens": 4, "output_tokens": 5, "cache_read_input_tokens": 0}
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]


def test_ping_while_the_upstream_is_silent(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS, keepalive=0.2)
    writes: list[bytes | float] = [sse(chunk("a")), 1.2, sse(chunk("b"), chunk(finish_reason="stop"), "[DONE]")]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes))
    reply = post_messages(gw, messages_body(stream=True))
    events = events_of(reply.body)
    names = [name for name, _ in events]
    assert "ping" in names and names.index("ping") < len(names) - 3
    assert block_texts(check_stream(events)) == ["ab"]
    assert b'event: ping\ndata: {"type":"ping"}\n\n' in reply.body


def test_failure_after_output_is_an_error_event(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(sse_reply(chunk("Hel"), chunk("lo"), end="abrupt"))
    reply = post_messages(gw, messages_body(stream=True))
    events = events_of(reply.body)
    blocks = check_stream(events)
    assert block_texts(blocks) == ["Hello"]
    name, data = events[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"
    assert data["request_id"] == reply.headers["x-request-id"]
    assert "message_stop" not in [name for name, _ in events]
    # The SDK raises on it: never a silently short answer.
    server.script(sse_reply(chunk("Hel"), chunk("lo"), end="abrupt"))
    with pytest.raises(anthropic.APIStatusError) as caught, client(gw).messages.stream(**messages_body()) as stream:
        for _ in stream:
            pass
    assert "api_error" in str(caught.value)


def test_bad_tool_arguments_are_a_502_naming_the_tool(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(json_reply(completion(None, tool_calls=[tool_call("Weird", "[1, 2]")], finish_reason="tool_calls")))
    reply = post_messages(gw, messages_body())
    assert reply.status == 502
    assert reply.json()["error"]["type"] == "api_error" and "Weird" in reply.json()["error"]["message"]
    server.script(
        sse_reply(
            chunk("x"),
            chunk(tool_calls=[tool_call_delta(0, id="c", name="Weird", arguments="7")]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    events = events_of(post_messages(gw, messages_body(stream=True)).body)
    check_stream(events)
    assert events[-1][0] == "error" and "Weird" in events[-1][1]["error"]["message"]


async def _hang_up(url: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(url + "/v1/messages", json=body, headers={"x-api-key": KEY})
        assert response.status == 200
        await response.content.readuntil(b'"text":"a"')
        response.close()


def test_hang_up_cancels_the_upstream(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(sse_reply(chunk(role="assistant"), chunk("a"), end="keep_open"))
    asyncio.run(_hang_up(gw.url, messages_body(stream=True)))
    assert server.wait_for(lambda: server.requests and server.requests[0].client_disconnected, 1.0)
    assert server.wait_for(lambda: any(" 499 " in line for line in gw.access_lines), 2.0)


# ------------------------------------------------------------------------------------ tools


def test_tool_use_then_tool_result_round_trip(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    bash = {
        "name": "Bash",
        "description": "Run a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    }
    server.script(
        json_reply(
            completion(
                "Let me look.",
                tool_calls=[tool_call("Bash", {"command": "ls"}, id="call_9")],
                finish_reason="tool_calls",
                usage=usage(20, 5),
            )
        ),
        json_reply(completion("There is one file: a.txt.", usage=usage(40, 8))),
    )
    sdk = client(gw)
    history: list[dict[str, Any]] = [{"role": "user", "content": "What files are here?"}]
    first = sdk.messages.create(
        model="up/test-model", max_tokens=100, messages=history, tools=[bash], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    tool_use = first.content[1]
    assert tool_use.type == "tool_use" and tool_use.id == "call_9" and tool_use.input == {"command": "ls"}
    history.append({"role": "assistant", "content": [block.model_dump() for block in first.content]})
    history.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_9", "content": [{"type": "text", "text": "a.txt\n"}]},
                {"type": "text", "text": "Summarize."},
            ],
        }
    )
    second = sdk.messages.create(model="up/test-model", max_tokens=100, messages=history, tools=[bash])
    assert second.content[0].text == "There is one file: a.txt." and second.stop_reason == "end_turn"
    assert upstream(server, 0)["tool_choice"] == "required"
    sent = upstream(server, 1)
    assert sent["messages"] == [
        {"role": "user", "content": "What files are here?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "a.txt\n"},
        {"role": "user", "content": "Summarize."},
    ]


# ------------------------------------------------------------------------------------ errors


def test_errors_have_the_anthropic_shape_and_type_by_status(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS + 'models = ["up/*"]\nrpm = 2\n')
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gw, "sk-wrong").messages.create(**messages_body())
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client(gw).messages.create(**messages_body(model="up2/other"))
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    server.script(json_reply({"error": {"message": "no such model", "code": "model_not_found"}}, status=404))
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gw).messages.create(**messages_body())
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    server.script(json_reply({"error": {"message": "down"}}, status=500))
    with pytest.raises(anthropic.InternalServerError) as down:
        client(gw).messages.create(**messages_body())
    assert down.value.status_code == 502 and down.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as limited:
        client(gw).messages.create(**messages_body())
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    body = limited.value.body
    assert set(body) == {"type", "error", "request_id"} and body["type"] == "error"  # type: ignore[arg-type]
    assert body["request_id"] == limited.value.response.headers["x-request-id"]  # type: ignore[index]


def test_too_large_and_bad_json(make_gateway) -> None:
    gw = make_gateway(KEYS)
    gw.gateway.max_body = 1000
    reply = post_messages(gw, messages_body(padding="x" * 2000))
    assert reply.status == 413 and reply.json()["error"]["type"] == "request_too_large"
    reply = fetch("POST", gw.url + "/v1/messages", raw=b"{not json", headers={"x-api-key": KEY})
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert set(reply.json()) == {"type", "error", "request_id"}


# ------------------------------------------------------------------------------------ count_tokens


def test_count_tokens_estimate_sends_nothing_upstream_and_is_not_limited(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS + "rpm = 1\n")
    tools = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]
    messages = [{"role": "user", "content": "How many tokens is this, roughly? é🙂"}]
    sdk = client(gw)
    raw = sdk.messages.with_raw_response.count_tokens(
        model="up/test-model", messages=messages, tools=tools, system="Be brief."
    )
    counted = raw.parse()
    assert raw.headers["x-llmrelay-token-count"] == "estimate"
    expected = parse_count_request(
        {"model": "up/test-model", "messages": messages, "tools": tools, "system": "Be brief."}
    )
    size = len(json.dumps(expected.call.messages, separators=(",", ":"), ensure_ascii=False).encode())
    size += len(json.dumps(expected.tools, separators=(",", ":"), ensure_ascii=False).encode())
    assert counted.input_tokens == math.ceil(size / 4)
    assert sdk.messages.count_tokens(model="up/test-model", messages=messages).input_tokens > 0
    assert not server.requests  # no chat request upstream
    server.script(json_reply(completion("ok")))
    assert sdk.messages.create(**messages_body()).content[0].text == "ok"  # rpm = 1 still has its request
    reply = fetch("POST", gw.url + "/v1/messages/count_tokens", {"model": "up/m"}, {"x-api-key": KEY})
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    reply = fetch("POST", gw.url + "/v1/messages/count_tokens", messages_body(), {"x-api-key": "bad"})
    assert reply.status == 401 and reply.json()["error"]["type"] == "authentication_error"


# ------------------------------------------------------------------------------------ cache


def test_same_question_through_chat_then_messages_is_one_upstream_call(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.cached]\ntargets = ["up/a"]\ncache_ttl_s = 60\n')
    server.script(json_reply(completion("cached answer", usage=usage(3, 2))))
    first = chat(gw.url, "cached", max_tokens=50)
    assert first.status == 200 and first.headers["x-llmrelay-cache"] == "miss"
    reply = fetch("POST", gw.url + "/v1/messages", messages_body(model="cached"))
    assert reply.status == 200 and reply.headers["x-llmrelay-cache"] == "hit"
    assert reply.json()["content"] == [{"type": "text", "text": "cached answer"}]
    streamed = fetch("POST", gw.url + "/v1/messages", messages_body(model="cached", stream=True))
    assert streamed.headers["x-llmrelay-cache"] == "hit"
    assert block_texts(check_stream(events_of(streamed.body))) == ["cached answer"]
    assert len(server.requests) == 1


def test_metrics_and_access_log_through_the_door(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply(completion("a", usage=usage(2, 3))))
    assert fetch("POST", gw.url + "/v1/messages", messages_body()).status == 200
    metrics = asyncio.run(afetch("GET", gw.url + "/metrics")).body.decode()
    assert 'llmrelay_requests_total{model="test-model",provider="up",route="",status="200"} 1.0' in metrics
    assert any("POST /v1/messages 200" in line for line in gw.access_lines), gw.access_lines


# ------------------------------------------------------------------------------------ 9.1 rules through this door


def test_claude_alias_cap_effort_and_strict_fields(server: ScriptedServer, make_gateway) -> None:
    """What Claude Code sends on its first request: a claude-… id (aliased), max_tokens 32000 (lowered to the cap),
    a thinking budget (no effort for a provider that takes none), context_management (named; refused when
    strict)."""
    gw = make_gateway(
        '[routes.fast]\ntargets = ["plain/small"]\nmax_tokens_cap = 512\n'
        '[providers.plain]\napi_base = "{upstream}"\nreasoning_effort = false\n'
        '[aliases]\n"claude-*" = "fast"\n'
    )
    server.script(json_reply(completion("ok", usage=usage(2, 1))))
    body = messages_body(
        model="claude-opus-5-5",
        max_tokens=32000,
        thinking={"type": "enabled", "budget_tokens": 20000},
        context_management={"edits": []},
    )
    reply = post_messages(gw, body)
    assert reply.status == 200, reply.body
    ignored = [name.strip() for name in reply.headers["x-llmrelay-ignored"].split(",")]
    assert set(ignored) == {"context_management", "max_tokens>512", "reasoning_effort"}
    sent = upstream(server)
    assert sent["model"] == "small" and sent["max_tokens"] == 512 and "reasoning_effort" not in sent
    gw.gateway.config.server.strict_fields = True
    reply = post_messages(gw, body)
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert "context_management" in reply.json()["error"]["message"]
    reply = post_messages(gw, body, "/v1/messages/count_tokens")
    assert reply.status == 400 and "context_management" in reply.json()["error"]["message"]
    del body["context_management"]
    server.script(json_reply(completion("ok")))
    assert post_messages(gw, body).status == 200  # caps and effort drops stay drops under strict_fields
    assert len(server.requests) == 2
