"""``POST /v1/responses`` (SPEC 9.2) over real sockets: the official ``openai`` SDK and raw HTTP against the gateway
in front of the scripted server, asserting what the upstream received field by field."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
from raw import fetch
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse_reply, tool_call, usage

KEY = "sk-llmrelay-responses-0123456789"
OTHER = "sk-llmrelay-responses-other-0123"
KEYS = "".join(
    f'[[keys]]\nname = "{name}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    for name, key in (("alice", KEY), ("bob", OTHER))
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PIECES = ["Hel", "lo", ", wörld 🚀\n", '"quoted" \\ <think>x</think>', " ", "\r\n"]


_opened: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    """Every SDK client a test opened is closed after it, passed or failed: none leaves a pooled socket behind."""
    yield
    while _opened:
        _opened.pop().close()


def client(gw: Any, key: str = KEY) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=gw.base, api_key=key, max_retries=0)
    _opened.append(sdk)
    return sdk


def streamed(*pieces: str, reasoning: tuple[str, ...] = (), finish: str = "stop", **extra: Any) -> Reply:
    return sse_reply(
        chunk(role="assistant", content="", model="served-1"),
        *(chunk(reasoning_content=piece, model="served-1") for piece in reasoning),
        *(chunk(piece, model="served-1") for piece in pieces),
        chunk(finish_reason=finish, model="served-1"),
        chunk(choices=[], usage=usage(7, len(pieces)), model="served-1"),
        "[DONE]",
        **extra,
    )


def without_ids(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: without_ids(value) for key, value in data.items() if key not in ("id", "created_at", "parsed")}
    if isinstance(data, list):
        return [without_ids(value) for value in data]
    return data


def sse_events(body: bytes) -> list[dict[str, Any]]:
    events = []
    assert body.endswith(b"\n\n"), body[-200:]
    for block in body[:-2].split(b"\n\n"):
        if block.startswith(b":"):
            continue
        kind, data = block.split(b"\n")
        payload = json.loads(data[len(b"data: ") :])
        assert kind == b"event: " + payload["type"].encode()
        events.append(payload)
    return events


# ------------------------------------------------------------------------------------ text


def test_create_text(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(json_reply(completion("Hello there", model="served-1", usage=usage(4, 2))))
    raw = client(gw).responses.with_raw_response.create(
        model="up/test-model",
        instructions="Be brief.",
        input="Hi",
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.9,
        metadata={"run": "1"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
    )
    assert "x-llmrelay-ignored" not in raw.headers  # tune-only fields are accepted without a word
    assert raw.headers["x-llmrelay-provider"] == "up" and raw.headers["x-llmrelay-model"] == "served-1"
    response = raw.parse()
    assert response.output_text == "Hello there"
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == "served-1" and response.metadata == {"run": "1"} and response.instructions == "Be brief."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (4, 2, 6)
    sent = server.requests[0].json()
    assert sent["model"] == "test-model"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stream"]) == (50, 0.3, 0.9, False)
    for field in ("metadata", "include", "prompt_cache_key", "instructions", "input", "max_output_tokens", "store"):
        assert field not in sent


def test_stream_final_response_equals_the_non_streamed_answer(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    sdk = client(gw)
    server.script(streamed(*PIECES))
    deltas: list[str] = []
    kinds: list[str] = []
    with sdk.responses.stream(model="up/test-model", input="Hi") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert deltas == PIECES  # one delta per upstream piece, byte-exact
    assert final.output_text == "".join(PIECES)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert server.requests[0].json()["stream"] is True
    assert server.requests[0].json()["stream_options"] == {"include_usage": True}
    server.script(json_reply(completion("".join(PIECES), model="served-1", usage=usage(7, len(PIECES)))))
    whole = sdk.responses.create(model="up/test-model", input="Hi")
    assert without_ids(final.to_dict()) == without_ids(whole.to_dict())
    assert server.requests[1].json()["messages"] == server.requests[0].json()["messages"]


def test_reasoning_plain_and_streamed(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    sdk = client(gw)
    server.script(streamed("42", reasoning=("Let me ", "think.")))
    with sdk.responses.stream(model="up/test-model", input="6*7?", reasoning={"effort": "low"}) as stream:
        reasoning = [event.delta for event in stream if event.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    assert reasoning == ["Let me ", "think."]
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Let me think." and final.output_text == "42"
    assert server.requests[0].json()["reasoning_effort"] == "low"
    server.script(json_reply(completion("42", reasoning_content="Let me think.", model="served-1")))
    whole = sdk.responses.create(model="up/test-model", input="6*7?", reasoning={"effort": "high", "summary": "auto"})
    assert [item.type for item in whole.output] == ["reasoning", "message"]
    assert whole.output[0].content[0].text == "Let me think."
    assert server.requests[1].json()["reasoning_effort"] == "high"


# ------------------------------------------------------------------------------------ tools


def test_tool_call_round_trip_through_previous_response_id(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    sdk = client(gw)
    server.script(
        json_reply(
            completion(None, tool_calls=[tool_call("get_weather", {"city": "Paris"})], finish_reason="tool_calls")
        )
    )
    first = sdk.responses.create(
        model="up/test-model",
        input="Weather in Paris?",
        tools=[WEATHER, {"type": "web_search"}],
        tool_choice="auto",
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_1"
    assert json.loads(call.arguments) == {"city": "Paris"}
    sent = server.requests[0].json()
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == "auto"
    server.script(streamed("Sunny", "."))
    with sdk.responses.stream(
        model="up/test-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny, 24 C"}],
        tools=[WEATHER],
    ) as stream:
        second = stream.get_final_response()
    assert second.output_text == "Sunny." and second.previous_response_id == first.id
    assert server.requests[1].json()["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"},
    ]


def test_streamed_tool_calls_and_custom_tools(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    patch = '*** Begin Patch\n*** Add File: a.txt\n+hi "there"\n*** End Patch\n'
    custom = {"type": "custom", "name": "apply_patch", "description": "Edit files", "format": {"type": "text"}}
    namespace = {"type": "namespace", "name": "mcp__fs", "description": "fs", "tools": [WEATHER]}
    deltas = [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": ""}},
        {"index": 1, "function": {"arguments": json.dumps({"input": patch})}},
    ]
    server.script(
        sse_reply(
            chunk(role="assistant", content=None),
            *(chunk(tool_calls=[delta]) for delta in deltas),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    body = {"model": "up/test-model", "input": "go", "stream": True, "tools": [namespace, custom]}
    reply = fetch("POST", gw.url + "/v1/responses", body, {"Authorization": f"Bearer {KEY}"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.body)
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "response.completed"
    assert [event["delta"] for event in events if event["type"] == "response.function_call_arguments.delta"] == [
        '{"city":',
        '"Oslo"}',
    ]  # one delta per upstream arguments piece (9.2.4)
    assert [event["delta"] for event in events if event["type"] == "response.custom_tool_call_input.delta"] == [patch]
    final = events[-1]["response"]
    assert [(item["type"], item["name"], item["call_id"]) for item in final["output"]] == [
        ("function_call", "get_weather", "call_a"),
        ("custom_tool_call", "apply_patch", "call_b"),
    ]
    assert final["output"][1]["input"] == patch
    sent_tools = server.requests[0].json()["tools"]
    assert [tool["function"]["name"] for tool in sent_tools] == ["get_weather", "apply_patch"]
    assert sent_tools[1]["function"]["parameters"]["required"] == ["input"]


# ------------------------------------------------------------------------------------ raw SSE


def test_raw_sse_invariants(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(streamed(*PIECES, reasoning=("a", "b")))
    reply = fetch(
        "POST",
        gw.url + "/v1/responses",
        {"model": "up/x", "input": "Hi", "stream": True},
        {"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status == 200 and reply.headers["cache-control"] == "no-cache"
    assert b"[DONE]" not in reply.body
    events = sse_events(reply.body)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    ids = {event["response"]["id"] for event in events if "response" in event}
    assert len(ids) == 1
    opened: list[str] = []
    for event in events:  # every added has its done, in order, nested properly
        kind = event["type"]
        if kind.endswith(".added"):
            opened.append(kind.rsplit(".", 1)[0])
        elif kind in ("response.output_item.done", "response.content_part.done"):
            assert opened.pop() == kind.rsplit(".", 1)[0]
    assert opened == []
    texts = [event["delta"] for event in events if event["type"] == "response.output_text.delta"]
    assert texts == PIECES
    done = next(event for event in events if event["type"] == "response.output_text.done")
    assert done["text"] == "".join(PIECES)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["input_tokens"] == 7


def test_failure_after_output_is_response_failed(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(sse_reply(chunk(role="assistant", content=""), chunk("par"), chunk("tial"), end="abrupt"))
    reply = fetch(
        "POST",
        gw.url + "/v1/responses",
        {"model": "up/x", "input": "Hi", "stream": True},
        {"Authorization": f"Bearer {KEY}"},
    )
    events = sse_events(reply.body)
    assert [event["type"] for event in events][-1] == "response.failed"
    assert "response.completed" not in [event["type"] for event in events]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error" and failed["error"]["message"]
    assert failed["id"] == events[0]["response"]["id"]
    with client(gw) as sdk, pytest.raises(openai.APIError):
        with sdk.responses.stream(model="up/x", input="Hi") as stream:
            server.script(sse_reply(chunk("cut"), end="abrupt"))
            stream.get_final_response()


def test_caller_hang_up_cancels_the_upstream(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(sse_reply(chunk(role="assistant", content=""), chunk("a"), end="keep_open"))

    async def read_then_close() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
            body = {"model": "up/x", "input": "Hi", "stream": True}
            response = await session.post(gw.url + "/v1/responses", json=body)
            assert response.status == 200
            await response.content.readuntil(b'"delta":"a"')
            response.close()

    asyncio.run(read_then_close())
    assert server.wait_for(lambda: server.requests and server.requests[0].client_disconnected, 1.0)
    assert server.wait_for(lambda: gw.gateway.inflight == 0, 2.0)
    assert [line for line in gw.access_lines if " 499 " in line]


# ------------------------------------------------------------------------------------ errors


def bad_request(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    error = caught.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "invalid_request_error"
    return error


def test_errors_and_ignored_fields(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    sdk = client(gw)
    for extra, param in (
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_1"}, "conversation"),
    ):
        error = bad_request(lambda extra=extra: sdk.responses.create(model="up/x", input="Hi", **extra))
        assert (error["code"], error["param"]) == ("unsupported_parameter", param)
    file_input = [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]
    error = bad_request(lambda: sdk.responses.create(model="up/x", input=file_input))
    assert (error["code"], error["param"]) == ("unsupported_parameter", "input[0].content[0].type")
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", previous_response_id="resp_nope"))
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", max_output_tokens="many"))  # type: ignore[arg-type]
    assert (error["code"], error["param"]) == ("invalid_request", "max_output_tokens")
    assert server.requests == []  # none of these reached the upstream
    with client(gw, "sk-llmrelay-wrong") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="up/x", input="Hi")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nowhere/x", input="Hi")
    server.script(json_reply(completion("ok")))
    raw = sdk.responses.with_raw_response.create(
        model="up/x",
        input="Hi",
        tools=[{"type": "web_search"}, {"type": "image_generation"}],
        extra_body={"context_management": [{"type": "compaction"}], "max_tool_calls": 2},
    )
    assert (
        raw.headers["x-llmrelay-ignored"]
        == "tools:web_search, tools:image_generation, context_management, max_tool_calls"
    )
    sent = server.requests[0].json()
    assert "tools" not in sent and "context_management" not in sent and "max_tool_calls" not in sent


def test_strict_fields_refuses_named_drops(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS, settings="strict_fields = true")
    sdk = client(gw)
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", tools=[{"type": "web_search"}]))
    assert (error["code"], error["param"]) == ("unknown_parameter", "tools[0].type")
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", extra_body={"brand_new": 1}))
    assert (error["code"], error["param"]) == ("unknown_parameter", "brand_new")
    assert server.requests == []


# ------------------------------------------------------------------------------------ stored responses


def test_retrieve_input_items_delete_per_key(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    sdk, other = client(gw), client(gw, OTHER)
    server.script(json_reply(completion("Stored answer", usage=usage(3, 2))))
    items = [
        {"role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "input_text", "text": "Q"}]},
    ]
    created = sdk.responses.create(model="up/x", input=items)
    fetched = sdk.responses.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()
    listed = sdk.responses.input_items.list(created.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "message"]
    assert [item.role for item in listed.data] == ["developer", "user"]  # as received
    assert all(item.id for item in listed.data)
    assert [item.id for item in sdk.responses.input_items.list(created.id).data] == [item.id for item in listed.data][
        ::-1
    ]
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)  # another key's response
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)
    error = bad_request(lambda: other.responses.create(model="up/x", input="Hi", previous_response_id=created.id))
    assert error["code"] == "previous_response_not_found"
    deleted = fetch("DELETE", f"{gw.base}/responses/{created.id}", headers={"Authorization": f"Bearer {KEY}"})
    assert deleted.status == 200 and deleted.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", previous_response_id=created.id))
    assert error["code"] == "previous_response_not_found"
    missing = fetch("GET", f"{gw.base}/responses/resp_unknown", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status == 404 and missing.error["code"] == "not_found"
    server.script(json_reply(completion("Not kept")))
    unkept = sdk.responses.create(model="up/x", input="Hi", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unkept.id)
    assert len(server.requests) == 2


def test_anonymous_scope_and_a_streamed_response_is_stored(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    sdk = client(gw, "anything")
    server.script(streamed("kept"))
    with sdk.responses.stream(model="up/x", input="Hi") as stream:
        final = stream.get_final_response()
    assert without_ids(sdk.responses.retrieve(final.id).to_dict()) == without_ids(final.to_dict())
    assert sdk.responses.retrieve(final.id).output[0].id == final.output[0].id


def test_store_responses_off(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(settings="store_responses = false")
    sdk = client(gw, "anything")
    server.script(json_reply(completion("ok")))
    created = sdk.responses.create(model="up/x", input="Hi")
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    error = bad_request(lambda: sdk.responses.create(model="up/x", input="Hi", previous_response_id=created.id))
    assert (error["code"], error["param"]) == ("unsupported_parameter", "previous_response_id")
    assert "store_responses" in error["message"]


# ------------------------------------------------------------------------------------ the pipeline through this door


def test_cache_limits_and_access_log_through_the_door(server: ScriptedServer, make_gateway) -> None:
    limited = KEYS.replace('name = "bob"', 'name = "bob"\nrpm = 1')
    gw = make_gateway(limited + '[routes.cached]\ntargets = ["up/test-model"]\ncache_ttl_s = 60\n')
    sdk = client(gw)
    server.script(json_reply(completion("Cached answer", usage=usage(3, 2))))
    # The same question through the chat door, then through this one: the cache is keyed on the translated call.
    asked = sdk.chat.completions.create(model="cached", messages=[{"role": "user", "content": "Hi"}])
    assert asked.choices[0].message.content == "Cached answer"
    raw = sdk.responses.with_raw_response.create(model="cached", input="Hi")
    assert raw.headers["x-llmrelay-cache"] == "hit" and raw.parse().output_text == "Cached answer"
    with sdk.responses.stream(model="cached", input="Hi") as stream:  # replayed from the cache as events
        assert stream.get_final_response().output_text == "Cached answer"
    assert len(server.requests) == 1
    assert [line for line in gw.access_lines if "POST /v1/responses 200" in line and "key=alice" in line]
    other = client(gw, OTHER)
    server.script(json_reply(completion("one")))
    other.responses.create(model="up/x", input="Hi")
    with pytest.raises(openai.RateLimitError) as caught:
        other.responses.create(model="up/x", input="Hi")
    assert caught.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert caught.value.response.headers["retry-after"]
    assert "/v1/responses" in fetch("GET", gw.url + "/v1/nowhere").error["message"]  # the route table lists it
    wrong = fetch("PUT", f"{gw.base}/responses", {"model": "up/x"}, {"Authorization": f"Bearer {KEY}"})
    assert wrong.status == 405 and wrong.error["code"] == "method_not_allowed"


def test_replicas_share_stored_responses_through_redis(server: ScriptedServer, spawn_gateway, redis) -> None:
    pytest.importorskip("redis")
    env = {"LLMRELAY_REDIS_URL": redis.url}
    a, b = spawn_gateway(KEYS, env=env), spawn_gateway(KEYS, env=env)
    server.script(json_reply(completion(None, tool_calls=[tool_call("get_weather", {"city": "Oslo"})])))
    first = client(a).responses.create(model="up/x", input="Weather in Oslo?", tools=[WEATHER])
    assert client(b).responses.retrieve(first.id).output[0].call_id == "call_1"
    with pytest.raises(openai.NotFoundError):
        client(b, OTHER).responses.retrieve(first.id)
    server.script(json_reply(completion("Cold.")))
    second = client(b).responses.create(
        model="up/x",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "-3 C"}],
    )
    assert second.output_text == "Cold."
    assert [message["role"] for message in server.requests[1].json()["messages"]] == ["user", "assistant", "tool"]
    client(a).responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client(b).responses.retrieve(first.id)
