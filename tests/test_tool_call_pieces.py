"""Tool calls streamed piece by piece (SPEC 8.5, 9.2.2, 9.2.4, 9.3.3): the reader's ``ToolCallPiece`` events, the
custom-tool input decoder, and each door's renderer — pure functions and objects, no socket."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from anthropic_support import block_texts, check_stream, events_of

from llmrelay.errors import ResponseError
from llmrelay.http.sse import SSEDecoder
from llmrelay.providers.reading import ChunkState, ToolCallAccumulator
from llmrelay.responses import (
    Answer,
    FinishReason,
    ProviderInfo,
    Reasoning,
    ToolCallPiece,
    ToolCalls,
    Usage,
    event_from_cache,
    event_to_cache,
)
from llmrelay.server.doors import chat, messages
from llmrelay.server.doors.calls import InputDecoder, LiveCalls
from llmrelay.server.doors.responses_render import ResponsesRenderer, answer
from llmrelay.server.doors.responses_request import custom_input, parse
from llmrelay.server.problems import Problem

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files"}
# An input with every kind of JSON escape: quotes, backslashes, control characters, \u escapes (one outside the
# BMP, as a surrogate pair), and raw non-ASCII text.
PATCH = '*** Begin Patch\n*** Add File: "a b.txt"\n+tab\there \\ slash/ é 🚀 \u0001\u2028 <end>\r\n*** End Patch\n'


def _escaped(text: str) -> str:
    """``{"input": text}`` as JSON with every non-ASCII character \\u-escaped (surrogate pairs included)."""
    return json.dumps({"input": text}, ensure_ascii=True)


def _deltas(*parts: tuple[int, dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [[{"index": index, **fields}] for index, fields in parts]


def _feed(state: ToolCallAccumulator, deltas: list[list[dict[str, Any]]]) -> list[ToolCallPiece]:
    made: list[ToolCallPiece] = []
    for delta in deltas:
        made.extend(state.add(delta))
    return made


# ------------------------------------------------------------------------------------ the reader (SPEC 2.6)


def test_one_piece_per_upstream_arguments_piece_joined_equal_the_final_arguments() -> None:
    calls = ToolCallAccumulator(pieces=True)
    pieces = _feed(
        calls,
        _deltas(
            (0, {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            (0, {"function": {"arguments": '{"ci'}}),
            (0, {"function": {"arguments": ""}}),  # an empty piece adds nothing
            (0, {"function": {"arguments": 'ty": "Oslo"}'}}),
            (1, {"id": "call_b", "function": {"name": "f", "arguments": "{}"}}),
        ),
    )
    assert pieces == [
        ToolCallPiece(0, "call_a", "get_weather", ""),
        ToolCallPiece(0, "call_a", "get_weather", '{"ci'),
        ToolCallPiece(0, "call_a", "get_weather", 'ty": "Oslo"}'),
        ToolCallPiece(1, "call_b", "f", "{}"),
    ]
    final = calls.result()
    for number, call in enumerate(final):
        joined = "".join(piece.arguments for piece in pieces if piece.index == number)
        assert joined == call["function"]["arguments"]
        assert {piece.id for piece in pieces if piece.index == number} == {call["id"]}


def test_without_the_option_the_events_are_spec_2_6s() -> None:
    state = ChunkState()
    delta = {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    assert state.take_delta(delta) == []
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert state.trailer() == [ToolCalls([call]), FinishReason("tool_calls")]
    pieced = ChunkState(pieces=True)
    assert pieced.take_delta(delta) == [ToolCallPiece(0, "c", "f", "{}")]
    assert pieced.trailer() == state.trailer()  # the complete calls still come once at the end


def test_a_call_opens_once_its_name_is_known_and_its_id_stays_the_one_announced() -> None:
    calls = ToolCallAccumulator(pieces=True)
    pieces = _feed(
        calls,
        _deltas(
            (0, {"function": {"arguments": '{"a"'}}),  # arguments before any name: kept for the first piece
            (0, {"function": {"name": "f", "arguments": ":"}}),
            (0, {"id": "late_id", "function": {"arguments": "1}"}}),  # an id after the first piece
        ),
    )
    assert pieces == [ToolCallPiece(0, "call_0", "f", '{"a":'), ToolCallPiece(0, "call_0", "f", "1}")]
    assert calls.result() == [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    plain = ToolCallAccumulator()  # without pieces nothing was announced: the upstream's id wins as before
    _feed(plain, _deltas((0, {"function": {"name": "f"}}), (0, {"id": "late_id"})))
    assert plain.result()[0]["id"] == "late_id"


def test_interleaved_calls_keep_their_numbers_and_object_arguments_become_json() -> None:
    calls = ToolCallAccumulator(pieces=True)
    pieces = _feed(
        calls,
        _deltas(
            (0, {"id": "a", "function": {"name": "f", "arguments": "["}}),
            (1, {"id": "b", "function": {"name": "g", "arguments": {"x": 1}}}),
            (0, {"function": {"arguments": "1]"}}),
        ),
    )
    assert [(piece.index, piece.id, piece.arguments) for piece in pieces] == [
        (0, "a", "["),
        (1, "b", '{"x":1}'),
        (0, "a", "1]"),
    ]
    assert [call["function"]["arguments"] for call in calls.result()] == ["[1]", '{"x":1}']


def test_the_piece_event_goes_through_the_cache_and_adds_nothing_to_an_answer() -> None:
    piece = ToolCallPiece(2, "call_x", "f", '{"a": "\\u00e9"}')
    assert event_from_cache(orjson.loads(orjson.dumps(event_to_cache(piece)))) == piece
    assert repr(piece) == "ToolCallPiece(arguments='{\"a\": \"\\\\u00e9\"}', id='call_x', index=2, name='f')"
    assert str(piece) == ""
    whole = Answer()
    whole.add(piece)
    assert whole.calls is None and whole.text == []


# ------------------------------------------------------------------------------------ the input decoder (9.2.2)


def _decode(pieces: list[str]) -> str:
    decoder = InputDecoder()
    return "".join(decoder.feed(piece) for piece in pieces)


@pytest.mark.parametrize("arguments", [_escaped(PATCH), json.dumps({"input": PATCH}, ensure_ascii=False)])
def test_the_input_decodes_the_same_however_the_arguments_are_split(arguments: str) -> None:
    expected = orjson.loads(arguments)["input"]
    assert _decode(list(arguments)) == expected  # one character at a time: every escape split
    for cut in range(len(arguments) + 1):
        assert _decode([arguments[:cut], arguments[cut:]]) == expected, cut
    for first in range(0, len(arguments), 7):  # three pieces, the middle one inside the \\u escapes
        for second in range(first, min(first + 14, len(arguments)) + 1):
            pieces = [arguments[:first], arguments[first:second], arguments[second:]]
            assert _decode(pieces) == expected, (first, second)


def test_a_surrogate_pair_split_inside_its_second_escape() -> None:
    decoder = InputDecoder()
    assert decoder.feed('{"input": "a\\ud83d') == "a"
    assert decoder.feed("\\ud") == ""
    assert decoder.feed('e80b"}') == "🚀b"
    assert decoder.feed("ignored after the end") == ""


def test_blanks_around_the_key_and_what_the_decoder_does_not_stream() -> None:
    assert _decode(['{ \n "input" ', ':\t"x\\ny"', "}"]) == "x\ny"
    assert _decode(['{"path": "a", "input": "x"}']) == ""  # another key first: the door sends it at the end
    assert _decode(['{"input": 5}']) == ""
    assert _decode(["not json"]) == ""
    assert _decode(['{"input": "a\\ud800b"}']) == "a"  # a lone surrogate: invalid JSON, decoding stops
    assert _decode(['{"input": "a\\q"}']) == "a"
    assert _decode(['{"inp', 'ut": "', "ok", '"}']) == "ok"


# ------------------------------------------------------------------------------------ the chat door (8.5)


def _chunks(raw: bytes) -> list[Any]:
    decoder = SSEDecoder()
    return [json.loads(data) for _, data in decoder.feed(raw) + decoder.flush() if data != b"[DONE]"]


def test_chat_forwards_one_tool_calls_entry_per_piece_and_the_unpieced_calls_at_the_end() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    render = chat.renderer(req, ProviderInfo("up", "m", "u"), "m")
    final = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},  # came with no pieces
    ]
    raw = render.start(ToolCallPiece(0, "a", "f", ""))
    raw += render.event(ToolCallPiece(0, "a", "f", '{"x"'))
    raw += render.event(ToolCallPiece(0, "a", "f", ": 1}"))
    raw += render.event(ToolCalls(final)) + render.event(FinishReason("stop")) + render.end()
    chunks = _chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None, "refusal": None}
    assert [d["tool_calls"] for d in deltas if "tool_calls" in d] == [
        [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"x"'}}],
        [{"index": 0, "function": {"arguments": ": 1}"}}],
        [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# ------------------------------------------------------------------------------------ the Responses door (9.2.4)


def _sse(data: bytes) -> list[dict[str, Any]]:
    events = []
    for block in data[:-2].split(b"\n\n"):
        kind, line = block.split(b"\n")
        payload = json.loads(line[6:])
        assert kind == b"event: " + payload["type"].encode()
        events.append(payload)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def _paired(events: list[dict[str, Any]]) -> None:
    """Every item added is done before the next is added, with its id and type unchanged."""
    open_item: dict[str, Any] | None = None
    for event in events:
        if event["type"] == "response.output_item.added":
            assert open_item is None, "an item added before the previous one is done"
            open_item = event["item"]
        elif event["type"] == "response.output_item.done":
            assert open_item is not None and (open_item["id"], open_item["type"]) == (
                event["item"]["id"],
                event["item"]["type"],
            )
            open_item = None
        elif "item_id" in event:
            assert open_item is not None and event["item_id"] == open_item["id"], event
    assert open_item is None


def _respond(request: Any, items: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    renderer = ResponsesRenderer(request, None, "m")
    raw = renderer.start(items[0]) + b"".join(renderer.event(item) for item in items[1:]) + renderer.end()
    events = _sse(raw)
    _paired(events)
    whole = Answer()
    for item in items:
        whole.add(item)
    return events, answer(request, whole, "m")


def _strip(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _strip(value) for key, value in data.items() if key not in ("id", "created_at")}
    if isinstance(data, list):
        return [_strip(value) for value in data]
    return data


def test_responses_function_and_custom_calls_stream_piece_by_piece() -> None:
    request = parse({"model": "m", "input": "go", "stream": True, "tools": [WEATHER, PATCH_TOOL]})
    arguments = _escaped(PATCH)
    cuts = [0, 3, 12, 13, 40, 41, 42, 60, len(arguments)]
    patch_pieces = [arguments[a:b] for a, b in itertools.pairwise(cuts)]
    final = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "apply_patch", "arguments": arguments}},
    ]
    items: list[Any] = [
        "Let me",
        ToolCallPiece(0, "call_a", "get_weather", ""),
        ToolCallPiece(0, "call_a", "get_weather", '{"city":'),
        ToolCallPiece(0, "call_a", "get_weather", '"Oslo"}'),
        *(ToolCallPiece(1, "call_b", "apply_patch", piece) for piece in ["", *patch_pieces]),
        ToolCalls(final),
        FinishReason("tool_calls"),
    ]
    events, whole = _respond(request, items)
    function_deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert function_deltas == ['{"city":', '"Oslo"}']
    custom_deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(custom_deltas) == PATCH and len(custom_deltas) > 3
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == PATCH == custom_input(arguments)
    completed = events[-1]["response"]
    assert _strip(completed["output"]) == _strip(whole["output"])
    assert [item["call_id"] for item in completed["output"][1:]] == ["call_a", "call_b"]


def test_responses_hold_a_later_call_and_text_until_the_open_call_closes() -> None:
    request = parse({"model": "m", "input": "go", "stream": True, "tools": [WEATHER]})
    final = [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "[1,2]"}},
        {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"z":0}'}},
    ]
    items: list[Any] = [
        ToolCallPiece(0, "a", "get_weather", "[1"),
        ToolCallPiece(1, "b", "get_weather", "{"),  # interleaved: call b waits
        "late text",  # text while a call is open waits too
        ToolCallPiece(0, "a", "get_weather", ",2]"),
        ToolCallPiece(1, "b", "get_weather", "}"),
        ToolCalls(final),  # call c came with no pieces
        FinishReason("tool_calls"),
    ]
    events, _ = _respond(request, items)
    order = [(e["type"].rsplit(".", 1)[-1], e.get("delta")) for e in events if "delta" in e or "item" in e]
    assert order == [
        ("added", None),
        ("delta", "[1"),
        ("delta", ",2]"),
        ("done", None),
        ("added", None),
        ("delta", "{"),
        ("delta", "}"),
        ("done", None),
        ("added", None),
        ("delta", '{"z":0}'),
        ("done", None),
        ("added", None),
        ("delta", "late text"),
        ("done", None),
    ]
    output = events[-1]["response"]["output"]
    assert [item.get("call_id") for item in output] == ["a", "b", "c", None]
    assert [item.get("arguments") for item in output[:3]] == ["[1,2]", "{}", '{"z":0}']


def test_responses_failure_with_a_call_open_marks_it_incomplete() -> None:
    request = parse({"model": "m", "input": "go", "stream": True, "tools": [WEATHER]})
    renderer = ResponsesRenderer(request, None, "m")
    raw = renderer.start(ToolCallPiece(0, "a", "get_weather", '{"ci'))
    raw += renderer.error(Problem(502, "upstream_error", "cut"))
    failed = _sse(raw)[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["output"][0]["arguments"] == '{"ci' and failed["output"][0]["status"] == "incomplete"


# ------------------------------------------------------------------------------------ the Messages door (9.3.3)


def _message_stream(items: list[Any]) -> list[dict[str, Any]]:
    req = messages.parse({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
    stream = messages.renderer(req, ProviderInfo("up", "m", "u"), "m")
    raw = stream.start(items[0]) + b"".join(stream.event(item) for item in items[1:]) + stream.end()
    return check_stream(events_of(raw))


def test_messages_one_input_json_delta_per_piece_and_waiting_calls_after() -> None:
    final = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"q": "x\\"y"}'}},
        {"id": "b.1", "type": "function", "function": {"name": "g", "arguments": '{"n": 2}'}},
        {"id": "c", "type": "function", "function": {"name": "h", "arguments": ""}},  # came with no pieces
    ]
    blocks = _message_stream(
        [
            Reasoning("hm"),
            ToolCallPiece(0, "a", "f", ""),
            ToolCallPiece(0, "a", "f", '{"q": "x\\'),
            ToolCallPiece(1, "b.1", "g", '{"n"'),  # interleaved: waits until call a closes
            Reasoning("more"),  # waits too
            ToolCallPiece(0, "a", "f", '"y"}'),
            ToolCallPiece(1, "b.1", "g", ": 2}"),
            ToolCalls(final),
            Usage(3, 4),
            FinishReason("tool_calls"),
        ]
    )
    assert [(b["type"], b.get("id"), b.get("name")) for b in blocks] == [
        ("thinking", None, None),
        ("tool_use", "a", "f"),
        ("tool_use", "b_1", "g"),
        ("tool_use", "c", "h"),
        ("thinking", None, None),
    ]
    assert [[d.get("partial_json") for d in b["deltas"]] for b in blocks[1:4]] == [
        ['{"q": "x\\', '"y"}'],
        ['{"n"', ": 2}"],
        [],
    ]
    assert block_texts(blocks) == ["hm", '{"q": "x\\"y"}', '{"n": 2}', "", "more"]


def test_messages_arguments_that_are_not_an_object_fail_the_stream_at_the_end() -> None:
    req = messages.parse({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
    stream = messages.renderer(req, None, "m")
    stream.start(ToolCallPiece(0, "a", "f", "[1]"))
    with pytest.raises(ResponseError, match="'f'"):
        stream.event(ToolCalls([{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]))


def test_live_calls_rule() -> None:
    live = LiveCalls()
    first, other = ToolCallPiece(0, "a", "f", "x"), ToolCallPiece(1, "b", "g", "y")
    assert live.take(first) and live.opens(first)
    assert not live.take(other) and not live.opens(other)
    assert live.hold("text")
    calls = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    open_call, rest = live.finish(calls)
    assert open_call == {"id": "a"}
    assert rest == [(1, {"id": "b"}, ["y"]), (2, {"id": "c"}, None)]
    assert live.later == ["text"] and not live.hold("after")
