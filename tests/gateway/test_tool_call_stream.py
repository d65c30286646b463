"""Tool calls streamed as they arrive, through every chat-like door (SPEC 8.5, 9.2.2, 9.2.4, 9.3.3), over real
sockets: the gateway in front of the scripted server, which sends each call's arguments in several pieces.

Raw SSE shows one door delta per upstream arguments piece and the arguments byte-exact; the official SDKs' stream
helpers end with the same answer as the non-streamed request; a cached stream replays its pieces."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic_support import check_stream, events_of
from raw import fetch
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse_reply, tool_call, usage
from scripted_server import tool_call_delta as delta

# Every kind of JSON escape in a custom tool's input: quotes, backslashes, control characters, \u escapes (one a
# surrogate pair) and raw non-ASCII text.
PATCH = '*** Begin Patch\n*** Add File: "a b.txt"\n+tab\there \\ é 🚀 \u0001 <end>\r\n*** End Patch\n'
PATCH_ARGUMENTS = json.dumps({"input": PATCH}, ensure_ascii=True)
WEATHER_PIECES = ['{"ci', 'ty": "Os', "lo, ", 'Nor\\u00e9"}']


def _patch_pieces() -> list[str]:
    """The custom tool's arguments cut inside its escapes: after ``\\u00``, inside the second ``\\u`` escape of a
    surrogate pair, between a backslash and the quote or ``u`` it escapes (each piece still completes some text)."""
    text = PATCH_ARGUMENTS
    cuts = [
        text.index("***") + 2,
        text.index('\\"a b') + 1,
        text.index("\\u00e9") + 4,
        text.index("\\ud83d") + 9,
        text.index("\\u0001") + 1,
        len(text) - 6,
    ]
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


PATCH_PIECES = _patch_pieces()
CALLS = [("call_w1", "get_weather", WEATHER_PIECES), ("call_p2", "apply_patch", PATCH_PIECES)]
KEY = "sk-llmrelay-tool-pieces-0123456789"

_opened: list[Any] = []


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def streamed(calls: list[tuple[str, str, list[str]]] = CALLS, text: str = "") -> Reply:
    """The upstream's stream: each call's header (id, name, ``""``), then one chunk per arguments piece."""
    chunks: list[Any] = [chunk(role="assistant", content=text or None)]
    for index, (call_id, name, pieces) in enumerate(calls):
        chunks.append(chunk(tool_calls=[delta(index, id=call_id, name=name, arguments="")]))
        chunks.extend(chunk(tool_calls=[delta(index, arguments=piece)]) for piece in pieces)
    chunks += [chunk(finish_reason="tool_calls"), chunk(choices=[], usage=usage(9, 4)), "[DONE]"]
    return sse_reply(*chunks)


def whole(calls: list[tuple[str, str, list[str]]] = CALLS, text: str = "") -> Reply:
    made = [tool_call(name, "".join(pieces), call_id) for call_id, name, pieces in calls]
    return json_reply(completion(text or None, tool_calls=made, finish_reason="tool_calls", usage=usage(9, 4)))


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _gateway(make_gateway: Any, toml: str = "") -> Any:
    return make_gateway(f'[[keys]]\nname = "k"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n' + toml)


def _openai(gw: Any) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=gw.base, api_key=KEY, max_retries=0)
    _opened.append(sdk)
    return sdk


def _events(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body[:-2].split(b"\n\n"):
        kind, data = block.split(b"\n")
        payload = json.loads(data[len(b"data: ") :])
        assert kind == b"event: " + payload["type"].encode()
        events.append(payload)
    return events


def _without_ids(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            key: _without_ids(value)
            for key, value in data.items()
            if key not in ("id", "created_at", "parsed", "parsed_arguments")
        }
    if isinstance(data, list):
        return [_without_ids(value) for value in data]
    return data


# ------------------------------------------------------------------------------------ chat (8.5)

CHAT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "apply_patch", "parameters": {"type": "object"}}},
]


def test_chat_forwards_one_tool_calls_entry_per_upstream_piece(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(streamed())
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "tools": CHAT_TOOLS}
    reply = fetch("POST", gw.url + "/v1/chat/completions", body, _auth())
    assert reply.status == 200
    entries = [
        entry for c in reply.chunks() if c["choices"] for entry in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    for index, (call_id, name, pieces) in enumerate(CALLS):
        mine = [entry for entry in entries if entry["index"] == index]
        assert mine[0] == {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        assert [entry["function"] for entry in mine[1:]] == [{"arguments": piece} for piece in pieces]
        assert "".join(entry["function"]["arguments"] for entry in mine) == "".join(pieces)  # byte-exact
    assert reply.chunks()[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_sdk_stream_accumulates_to_the_non_streamed_answer(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(whole(), streamed())
    sdk = _openai(gw)
    params: dict[str, Any] = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "tools": CHAT_TOOLS}
    created = sdk.chat.completions.create(**params)
    with sdk.chat.completions.stream(**params) as stream:
        final = stream.get_final_completion()
    made, got = created.choices[0].message, final.choices[0].message

    def calls(message: Any) -> list[tuple[str, str, str, str]]:
        return [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls or []]

    assert calls(got) == calls(made)
    assert [arguments for *_, arguments in calls(got)] == ["".join(WEATHER_PIECES), PATCH_ARGUMENTS]
    assert final.choices[0].finish_reason == created.choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------------------------ responses (9.2.2, 9.2.4)

RESPONSES_TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch", "description": "Edit files"},
]


def test_responses_one_delta_per_upstream_piece_and_the_input_decoded(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(streamed(text="On it."))
    body = {"model": "up/m", "input": "go", "stream": True, "tools": RESPONSES_TOOLS}
    events = _events(fetch("POST", gw.url + "/v1/responses", body, _auth()).body)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    arguments = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert arguments == WEATHER_PIECES
    inputs = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(inputs) == len(PATCH_PIECES)  # one per upstream piece, each cut inside an escape
    assert "".join(inputs) == PATCH  # the JSON-string escaping undone, byte-exact
    assert inputs[0] == "**" and inputs[3] == "é " and inputs[4].startswith("🚀 ") and inputs[-1] == "ch\n"
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == PATCH
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["arguments"] == "".join(WEATHER_PIECES)
    kinds = [e["type"] for e in events]
    first_delta = kinds.index("response.function_call_arguments.delta")
    assert kinds[first_delta - 1] == "response.output_item.added"  # opened at the call's first piece
    output = events[-1]["response"]["output"]
    assert [(item["type"], item.get("call_id")) for item in output] == [
        ("message", None),
        ("function_call", "call_w1"),
        ("custom_tool_call", "call_p2"),
    ]


def test_responses_sdk_stream_final_response_equals_the_non_streamed_one(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(whole(text="On it."), streamed(text="On it."))
    sdk = _openai(gw)
    params: dict[str, Any] = {"model": "up/m", "input": "go", "tools": RESPONSES_TOOLS}
    created = sdk.responses.create(**params)
    with sdk.responses.stream(**params) as stream:
        final = stream.get_final_response()
    assert _without_ids(final.model_dump(exclude={"output_parsed"})) == _without_ids(created.model_dump())
    assert [item.call_id for item in final.output[1:]] == ["call_w1", "call_p2"]  # type: ignore[union-attr]
    assert final.output[2].input == PATCH  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ messages (9.3.3)

MESSAGES_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]
WEATHER_ONLY = [("call_w1", "get_weather", WEATHER_PIECES), ("call.w2", "get_weather", ['{"city"', ': "Rome"}'])]


def test_messages_one_input_json_delta_per_upstream_piece(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(streamed(WEATHER_ONLY, text="Checking."))
    body = {"model": "up/m", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    reply = fetch("POST", gw.url + "/v1/messages", {**body, "tools": MESSAGES_TOOLS}, {"x-api-key": KEY})
    blocks = check_stream(events_of(reply.body))
    assert [(b["type"], b.get("id")) for b in blocks] == [
        ("text", None),
        ("tool_use", "call_w1"),
        ("tool_use", "call_w2"),
    ]
    assert [[d["partial_json"] for d in b["deltas"]] for b in blocks[1:]] == [WEATHER_PIECES, ['{"city"', ': "Rome"}']]


def test_messages_sdk_stream_final_message_equals_the_non_streamed_one(server: ScriptedServer, make_gateway) -> None:
    gw = _gateway(make_gateway)
    server.script(whole(WEATHER_ONLY, text="Checking."), streamed(WEATHER_ONLY, text="Checking."))
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=20)
    _opened.append(sdk)
    params: dict[str, Any] = {
        "model": "up/m",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": MESSAGES_TOOLS,
    }
    created = sdk.messages.create(**params)
    with sdk.messages.stream(**params) as stream:
        final = stream.get_final_message()
    assert final.model_dump(exclude={"id"}) == created.model_dump(exclude={"id"})
    assert [block.input for block in final.content[1:]] == [{"city": "Oslo, Noré"}, {"city": "Rome"}]  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ the cache


def test_a_cached_stream_replays_its_pieces_and_a_cached_answer_its_whole_calls(
    server: ScriptedServer, make_gateway
) -> None:
    gw = _gateway(make_gateway, '[routes.cached]\ntargets = ["up/test-model"]\ncache_ttl_s = 60\n')
    server.script(streamed(), whole())
    body = {"model": "cached", "input": "go", "stream": True, "tools": RESPONSES_TOOLS}
    first = fetch("POST", gw.url + "/v1/responses", body, _auth())
    again = fetch("POST", gw.url + "/v1/responses", body, _auth())
    assert again.headers.get("x-llmrelay-cache") == "hit" and len(server.requests) == 1

    def deltas(reply: Any) -> list[tuple[str, str]]:
        return [(e["type"], e["delta"]) for e in _events(reply.body) if e["type"].endswith(".delta")]

    assert deltas(again) == deltas(first)
    assert [d for kind, d in deltas(again) if kind == "response.function_call_arguments.delta"] == WEATHER_PIECES
    # A non-streamed answer in the cache (no pieces) streams each call whole.
    other = {"model": "cached", "input": "other", "tools": RESPONSES_TOOLS}
    fetch("POST", gw.url + "/v1/responses", other, _auth())
    replayed = fetch("POST", gw.url + "/v1/responses", {**other, "stream": True}, _auth())
    assert replayed.headers.get("x-llmrelay-cache") == "hit" and len(server.requests) == 2
    assert deltas(replayed) == [
        ("response.function_call_arguments.delta", "".join(WEATHER_PIECES)),
        ("response.custom_tool_call_input.delta", PATCH),
    ]
