"""The Responses API door's translators (SPEC 9.2.1-9.2.4), as plain functions: no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmrelay.errors import InvalidRequestError
from llmrelay.responses import Answer, FinishReason, ProviderInfo, Reasoning, ToolCalls, Usage
from llmrelay.server.doors.responses_render import ResponsesRenderer, answer, error_body
from llmrelay.server.doors.responses_request import parse, with_history
from llmrelay.server.doors.responses_store import RESPONSE_ID, conversation, input_items_page, record, stored_response
from llmrelay.server.problems import Problem


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "Hi", **fields}


def refused(data: Any, **flags: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse(data, **flags)
    assert caught.value.status == 400
    return caught.value


# ------------------------------------------------------------------------------------ 9.2.1 input


def test_string_input_and_instructions() -> None:
    request = parse(body(instructions="Be brief.", input="Hi \u00e9 "))
    assert request.call.model == "m"
    assert request.call.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi \u00e9 "},
    ]
    assert request.call.stream is False
    assert request.call.options == {}
    assert request.ignored == []
    assert request.store is True
    [item] = request.items
    assert item["id"].startswith("msg_")
    assert item["type"] == "message" and item["role"] == "user"
    assert item["content"] == [{"type": "input_text", "text": "Hi \u00e9 "}]


def test_message_items_roles_and_parts() -> None:
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {
            "type": "message",
            "role": "user",
            "id": "msg_1",
            "status": "completed",
            "content": [
                {"type": "input_text", "text": "look: "},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
    ]
    request = parse(body(input=items))
    assert request.call.messages == [
        {"role": "system", "content": "rules"},
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look: "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "ab"},
    ]
    assert request.ignored == []
    assert request.items[2]["id"] == "msg_1"  # a client's id is kept
    assert all(item["id"] for item in request.items)


def test_function_calls_join_and_outputs_become_tool_messages() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "c1",
            "name": "get",
            "arguments": '{"a":1}',
            "status": "completed",
        },
        {"type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "custom_tool_call", "call_id": "c3", "name": "apply_patch", "input": '*** Begin\n"x"'},
        {"type": "custom_tool_call_output", "call_id": "c3", "output": "done"},
    ]
    request = parse(body(input=items))
    assert request.call.messages == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "get", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c3",
                    "type": "function",
                    "function": {
                        "name": "apply_patch",
                        "arguments": json.dumps({"input": '*** Begin\n"x"'}, separators=(",", ":")),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c3", "content": "done"},
    ]
    assert request.ignored == []  # reasoning items are dropped without a word (clients echo them back)


def test_hosted_tool_items_are_dropped_and_named() -> None:
    items = [{"type": "web_search_call", "id": "ws_1", "status": "completed"}, {"role": "user", "content": "Hi"}]
    request = parse(body(input=items))
    assert request.call.messages == [{"role": "user", "content": "Hi"}]
    assert request.ignored == ["input:web_search_call"]
    error = refused(body(input=items), strict=True)
    assert (error.code, error.param) == ("unknown_parameter", "input[0].type")


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}, "input[0].content[0].type"),
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "input[0].content[0].type"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
        ({"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}, "input[0].content[0].file_id"),
    ],
)
def test_inputs_that_would_change_the_answer_are_refused(item: dict[str, Any], param: str) -> None:
    error = refused(body(input=[item]))
    assert (error.code, error.param) == ("unsupported_parameter", param)
    assert param in error.message


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"input": "Hi"}, "model"),
        ({"model": "m"}, "input"),
        (body(input=[]), "input"),
        (body(input=[{"role": "robot", "content": "x"}]), "input[0].role"),
        (body(input=[{"type": "function_call", "call_id": "c", "name": "f"}]), "input[0].arguments"),
        (body(input=[42]), "input[0]"),
        (body(max_output_tokens="5"), "max_output_tokens"),
        (body(max_output_tokens=0), "max_output_tokens"),
        (body(temperature=True), "temperature"),
        (body(tools={"type": "function"}), "tools"),
        (body(tools=[{"type": "function"}]), "tools[0].name"),
        (body(tool_choice="sometimes"), "tool_choice"),
        (body(text={"format": {"type": "json_schema", "name": "x"}}), "text.format.schema"),
    ],
)
def test_wrong_requests_name_their_field(data: dict[str, Any], param: str) -> None:
    error = refused(data)
    assert (error.code, error.param) == ("invalid_request", param)


def test_not_an_object() -> None:
    assert refused([1]).code == "invalid_json"


# ------------------------------------------------------------------------------------ 9.2.2 parameters

CUSTOM = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Patch files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def test_tools_function_namespace_custom_and_hosted() -> None:
    tools = [
        {"type": "function", "name": "shell", "description": "Run", "parameters": {"type": "object"}, "strict": False},
        {"type": "web_search", "external_web_access": False},
        {"type": "namespace", "name": "mcp__fs", "tools": [{"type": "function", "name": "read", "parameters": {}}]},
        CUSTOM,
        {"type": "tool_search", "execution": "client", "description": "Find", "parameters": {"type": "object"}},
        {"type": "image_generation"},
    ]
    request = parse(body(tools=tools, tool_choice="auto", parallel_tool_calls=False))
    assert request.call.options["tools"] == [
        {
            "type": "function",
            "function": {"name": "shell", "description": "Run", "parameters": {"type": "object"}, "strict": False},
        },
        {"type": "function", "function": {"name": "read", "parameters": {}}},
        {
            "type": "function",
            "function": {
                "name": "apply_patch",
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": "The raw input of the tool"}},
                    "required": ["input"],
                    "additionalProperties": False,
                },
                "description": 'Patch files.\n\nThe input must follow this lark grammar:\nstart: "*** Begin Patch"',
            },
        },
        {
            "type": "function",
            "function": {"name": "tool_search", "description": "Find", "parameters": {"type": "object"}},
        },
    ]
    assert request.call.options["tool_choice"] == "auto"
    assert request.call.options["parallel_tool_calls"] is False
    assert request.custom == {"apply_patch"}
    assert request.ignored == ["tools:web_search", "tools:image_generation"]
    assert request.echo["tools"] == tools  # the response object repeats the tools as sent
    error = refused(body(tools=tools), strict=True)
    assert (error.code, error.param) == ("unknown_parameter", "tools[1].type")


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "shell"}, {"type": "function", "function": {"name": "shell"}}),
        ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
    ],
)
def test_tool_choice(choice: Any, sent: Any) -> None:
    tools = [{"type": "function", "name": "shell"}, CUSTOM]
    assert parse(body(tools=tools, tool_choice=choice)).call.options["tool_choice"] == sent


def test_sampling_limits_reasoning_and_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = parse(
        body(
            max_output_tokens=64,
            temperature=0.5,
            top_p=0.9,
            user="u1",
            reasoning={"effort": "low", "summary": "auto"},
            text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        )
    )
    assert request.call.options == {
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u1",
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
    }
    assert request.ignored == []
    assert parse(body(text={"format": {"type": "json_object"}})).call.options == {
        "response_format": {"type": "json_object"}
    }
    assert parse(body(text={"format": {"type": "text"}}, reasoning={"summary": "auto"})).call.options == {}


def test_silent_named_and_refused_fields() -> None:
    quiet = body(
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        service_tier="auto",
        safety_identifier="s",
        stream_options={"include_obfuscation": False},
        metadata={"a": "b"},
        client_metadata={"x": 1},
        store=False,
        user="u",
        truncation="disabled",
        background=False,
    )
    request = parse(quiet)
    assert request.ignored == []
    assert request.store is False
    assert request.echo["metadata"] == {"a": "b"}
    named = parse(body(context_management=[{"type": "x"}], max_tool_calls=3, brand_new=1, text={"verbosity": "low"}))
    assert named.ignored == ["text.verbosity", "context_management", "max_tool_calls", "brand_new"]
    assert named.call.options == {}
    for field in ("context_management", "max_tool_calls", "brand_new"):
        error = refused(body(**{field: 1}), strict=True)
        assert (error.code, error.param) == ("unknown_parameter", field)
    for field, value in (
        ("background", True),
        ("conversation", "conv_1"),
        ("prompt", {"id": "p"}),
        ("truncation", "auto"),
    ):
        error = refused(body(**{field: value}))
        assert (error.code, error.param) == ("unsupported_parameter", field)


def test_previous_response_id_when_storing_is_off() -> None:
    assert parse(body(previous_response_id="resp_1")).previous_response_id == "resp_1"
    error = refused(body(previous_response_id="resp_1"), storing=False)
    assert (error.code, error.param) == ("unsupported_parameter", "previous_response_id")
    assert "store_responses" in error.message
    assert parse(body(store=True), storing=False).store is False


def test_history_comes_before_the_input_not_the_instructions() -> None:
    request = parse(
        body(instructions="Now this.", input=[{"type": "function_call_output", "call_id": "c1", "output": "42"}])
    )
    history = [
        {"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"id": "fc_a", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "status": "completed"},
    ]
    with_history(request, history)
    assert request.call.messages == [
        {"role": "system", "content": "Now this."},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]


# ------------------------------------------------------------------------------------ 9.2.3 answer


def whole(*events: Any) -> Answer:
    folded = Answer()
    for event in events:
        folded.add(event)
    return folded


USAGE = Usage(10, 5, 15, prompt_tokens_details={"cached_tokens": 3}, completion_tokens_details={"reasoning_tokens": 2})


def test_answer_object() -> None:
    request = parse(body(instructions="I", metadata={"k": "v"}, max_output_tokens=9))
    info = ProviderInfo("up", "served-model", "http://x")
    data = answer(request, whole(info, Reasoning("think"), "Hel", "lo", USAGE, FinishReason("stop")), "m")
    assert data["id"] == request.id and data["id"].startswith("resp_")
    assert (data["object"], data["status"], data["model"]) == ("response", "completed", "served-model")
    assert data["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    reasoning, message = data["output"]
    assert reasoning["id"].startswith("rs_") and message["id"].startswith("msg_")
    assert reasoning == {
        "type": "reasoning",
        "id": reasoning["id"],
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "think"}],
    }
    assert message == {
        "type": "message",
        "id": message["id"],
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}],
    }
    assert data["error"] is None and data["incomplete_details"] is None
    assert (data["instructions"], data["metadata"], data["max_output_tokens"]) == ("I", {"k": "v"}, 9)
    assert data["store"] is True and data["previous_response_id"] is None and data["truncation"] == "disabled"
    assert data["text"] == {"format": {"type": "text"}} and data["tool_choice"] == "auto" and data["tools"] == []


def test_answer_tool_calls_and_incomplete() -> None:
    request = parse(body(tools=[{"type": "function", "name": "f"}, CUSTOM]))
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input": "a\\n\\"b\\""}'}},
    ]
    data = answer(request, whole(ToolCalls(calls), FinishReason("tool_calls")), "m")
    assert data["status"] == "completed" and data["model"] == "m" and data["usage"] is None
    call, custom = data["output"]
    assert call == {
        "type": "function_call",
        "id": call["id"],
        "call_id": "c1",
        "name": "f",
        "arguments": '{"x": 1}',
        "status": "completed",
    }
    assert custom == {
        "type": "custom_tool_call",
        "id": custom["id"],
        "call_id": "c2",
        "name": "apply_patch",
        "input": 'a\n"b"',
        "status": "completed",
    }
    assert call["id"].startswith("fc_") and custom["id"].startswith("ctc_")
    cut = answer(request, whole("abc", FinishReason("length")), "m")
    assert (cut["status"], cut["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    filtered = answer(request, whole("abc", FinishReason("content_filter")), "m")
    assert (filtered["status"], filtered["incomplete_details"]) == ("incomplete", {"reason": "content_filter"})


# ------------------------------------------------------------------------------------ 9.2.4 stream


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    assert data.endswith(b"\n\n")
    for block in data[:-2].split(b"\n\n"):
        kind_line, data_line = block.split(b"\n")
        assert kind_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        payload = json.loads(data_line[6:])
        assert payload["type"] == kind_line[7:].decode()
        events.append((payload["type"], payload))
    return events


def render(request: Any, *items: Any, model: str = "m") -> tuple[ResponsesRenderer, list[tuple[str, dict[str, Any]]]]:
    info = next((item for item in items if isinstance(item, ProviderInfo)), None)
    renderer = ResponsesRenderer(request, info, model)
    rest = [item for item in items if not isinstance(item, ProviderInfo)]
    out = renderer.start(rest[0] if rest else None)
    for item in rest[1:]:
        out += renderer.event(item)
    out += renderer.end()
    return renderer, sse_events(out)


def strip_ids(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: strip_ids(value) for key, value in data.items() if key not in ("id", "created_at")}
    if isinstance(data, list):
        return [strip_ids(value) for value in data]
    return data


def test_stream_event_sequence() -> None:
    request = parse(body(stream=True, tools=[{"type": "function", "name": "f"}, CUSTOM]))
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "apply_patch", "arguments": '{"input":"p\\n"}'}},
    ]
    info = ProviderInfo("up", "served", "u")
    items = (info, Reasoning("r1"), Reasoning("r2"), "He", "llo", ToolCalls(calls), USAGE, FinishReason("tool_calls"))
    renderer, events = render(request, *items)
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created = events[0][1]["response"]
    assert (created["status"], created["output"], created["model"], created["id"]) == (
        "in_progress",
        [],
        "served",
        request.id,
    )
    assert [data["delta"] for kind, data in events if kind.endswith("text.delta")] == ["r1", "r2", "He", "llo"]
    assert events[11][1]["text"] == "Hello" and events[5][1]["text"] == "r1r2"
    assert events[19][1]["delta"] == "p\n" and events[20][1]["input"] == "p\n"
    final = events[-1][1]["response"]
    assert final["id"] == request.id and final["status"] == "completed" and final["usage"]["total_tokens"] == 15
    done_items = [data["item"] for kind, data in events if kind == "response.output_item.done"]
    assert final["output"] == done_items  # the completed items keep the ids they were streamed with
    added_ids = [data["item"]["id"] for kind, data in events if kind == "response.output_item.added"]
    assert [item["id"] for item in done_items] == added_ids
    assert renderer.final == final
    non_streamed = answer(request, whole(*items), "m")
    assert strip_ids(final) == strip_ids(non_streamed)


def test_stream_of_nothing_and_incomplete() -> None:
    request = parse(body(stream=True))
    _, events = render(request)
    assert [kind for kind, _ in events] == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1][1]["response"]["output"] == []
    _, events = render(request, "ab", FinishReason("length"))
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_failure_after_output() -> None:
    request = parse(body(stream=True))
    renderer = ResponsesRenderer(request, None, "m")
    out = (
        renderer.start("par")
        + renderer.event("tial")
        + renderer.error(Problem(502, "upstream_error", "the upstream broke"))
    )
    events = sse_events(out)
    assert [kind for kind, _ in events][-1] == "response.failed"
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["id"] == request.id
    assert failed["error"] == {"code": "upstream_error", "message": "the upstream broke"}
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["content"][0]["text"] == "partial"


def test_error_body_shape() -> None:
    assert error_body(Problem(400, "unsupported_parameter", "no", "background")) == {
        "error": {
            "message": "no",
            "type": "invalid_request_error",
            "param": "background",
            "code": "unsupported_parameter",
        }
    }
    assert error_body(Problem(429, "rate_limit_exceeded", "slow"))["error"]["type"] == "rate_limit_error"


# ------------------------------------------------------------------------------------ 9.2.5 records


def test_record_conversation_and_input_items_pages() -> None:
    earlier = [{"id": "msg_old", "type": "message", "role": "user", "content": "before"}]
    items = [{"role": "user", "content": f"m{number}"} for number in range(5)]
    request = parse(body(input=items))
    data = answer(request, whole("out"), "m")
    stored = record(request, data, earlier)
    assert stored_response(stored) == data
    chain = conversation(stored)
    assert chain[0] == earlier[0]
    assert [item["content"] for item in chain[1:6]] == [f"m{number}" for number in range(5)]
    assert chain[6] == data["output"][0]
    own = [item["id"] for item in request.items]
    page = input_items_page(stored, {})
    assert [item["id"] for item in page["data"]] == own[::-1]  # newest first, as OpenAI lists them
    assert (page["first_id"], page["last_id"], page["has_more"]) == (own[4], own[0], False)
    first = input_items_page(stored, {"order": "asc", "limit": "2"})
    assert [item["id"] for item in first["data"]] == own[:2] and first["has_more"] is True
    rest = input_items_page(stored, {"order": "asc", "after": first["last_id"]})
    assert [item["id"] for item in rest["data"]] == own[2:] and rest["has_more"] is False
    for query, param in (({"order": "up"}, "order"), ({"limit": "0"}, "limit"), ({"after": "x"}, "after")):
        with pytest.raises(InvalidRequestError) as caught:
            input_items_page(stored, query)
        assert caught.value.param == param
    assert RESPONSE_ID.fullmatch(request.id)
    assert not RESPONSE_ID.fullmatch("resp_../x")
