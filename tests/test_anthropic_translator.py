"""The Anthropic Messages door's pure translators (SPEC 9.3), without a socket."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from anthropic_support import block_texts, check_stream, events_of

from llmrelay.errors import InvalidRequestError, ResponseError, http_status
from llmrelay.responses import Answer, FinishReason, ProviderInfo, Reasoning, ToolCalls, Usage
from llmrelay.server.doors import messages
from llmrelay.server.doors.anthropic_request import estimate_tokens, parse_count_request, parse_request
from llmrelay.server.doors.anthropic_response import (
    PING_EVENT,
    MessageStream,
    error_object,
    message_object,
    tool_id,
)
from llmrelay.server.problems import Problem


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **fields}


def refused(data: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request(data)
    assert caught.value.status == 400
    return caught.value


# ------------------------------------------------------------------------------ 9.3.1 request


def test_minimal_request_is_the_chat_call_a_chat_caller_would_make() -> None:
    req = parse_request(body())
    assert req.call.model == "claude-x"
    assert req.call.messages == [{"role": "user", "content": "Hi"}]
    assert req.call.options == {"max_tokens": 100}
    assert req.call.stream is False
    assert req.ignored == []


def test_max_tokens_is_required_and_named() -> None:
    data = body()
    del data["max_tokens"]
    error = refused(data)
    assert error.param == "max_tokens" and "max_tokens" in error.message
    assert refused(body(max_tokens="9")).param == "max_tokens"
    assert refused(body(max_tokens=0)).param == "max_tokens"
    assert refused(body(max_tokens=True)).param == "max_tokens"


def test_count_request_needs_no_max_tokens() -> None:
    data = body()
    del data["max_tokens"]
    assert parse_count_request(data).call.options == {}


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], None),
        ({"max_tokens": 5, "messages": []}, "model"),
        (body(messages=[]), "messages"),
        (body(messages="hi"), "messages"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (body(temperature="hot"), "temperature"),
        (body(stop_sequences=["a", 1]), "stop_sequences"),
        (body(stream="yes"), "stream"),
        (body(metadata={"user_id": 7}), "metadata.user_id"),
        (body(tool_choice={"type": "sometimes"}), "tool_choice"),
        (body(thinking={"type": "enabled", "budget_tokens": "big"}), "thinking.budget_tokens"),
        (body(system=[{"type": "image"}]), "system[0]"),
    ],
)
def test_wrong_fields_are_refused_naming_them(data: Any, param: str | None) -> None:
    error = refused(data)
    assert error.param == param
    assert error.code == ("invalid_json" if param is None else "invalid_request")


def test_system_string_and_blocks_become_the_first_system_message() -> None:
    assert parse_request(body(system="Be brief.")).call.messages[0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."},
    ]
    req = parse_request(body(system=blocks))
    assert req.call.messages == [{"role": "system", "content": "One.\nTwo."}, {"role": "user", "content": "Hi"}]
    assert req.ignored == []  # cache_control is accepted without a word


def test_system_message_inside_messages_stays_at_its_position() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": [{"type": "text", "text": "mid"}]},
        {"role": "user", "content": "b"},
    ]
    assert parse_request(body(messages=messages)).call.messages == [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "mid"},
        {"role": "user", "content": "b"},
    ]


def test_text_and_image_blocks() -> None:
    content = [
        {"type": "text", "text": "What is "},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
    ]
    req = parse_request(body(messages=[{"role": "user", "content": content}]))
    assert req.call.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is "},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
            ],
        }
    ]
    single = parse_request(body(messages=[{"role": "user", "content": [{"type": "text", "text": "x y"}]}]))
    assert single.call.messages == [{"role": "user", "content": "x y"}]


def test_tool_use_and_tool_result_round_trip_with_results_first() -> None:
    messages = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Running."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\n"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                    "is_error": True,
                },
            ],
        },
    ]
    req = parse_request(body(messages=messages))
    assert req.call.messages == [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "Running.",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt\n"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "onetwo"},
        {"role": "user", "content": "here you go"},
    ]
    assert req.ignored == []


def test_user_message_of_only_tool_results_adds_no_empty_user_message() -> None:
    messages = [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    assert parse_request(body(messages=messages)).call.messages == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "t", "content": ""},
    ]


def test_tool_result_with_an_image_keeps_its_parts() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0"}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "shot"}, image]}
    req = parse_request(body(messages=[{"role": "user", "content": [result]}]))
    assert req.call.messages[0]["content"] == [
        {"type": "text", "text": "shot"},
        {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0"}},
    ]


def test_tool_reference_in_a_tool_result_is_dropped_and_named() -> None:
    content = [{"type": "tool_reference", "tool_name": "Later"}, {"type": "text", "text": "found"}]
    result = {"type": "tool_result", "tool_use_id": "t", "content": content}
    req = parse_request(body(messages=[{"role": "user", "content": [result]}]))
    assert req.call.messages == [{"role": "tool", "tool_call_id": "t", "content": "found"}]
    assert req.ignored == ["content:tool_reference"] and req.ignored_params == [
        "messages[0].content[0].content[0].type"
    ]


def test_document_blocks_and_file_sources_are_refused_as_unsupported() -> None:
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    error = refused(body(messages=[{"role": "user", "content": ["x", document][1:]}]))
    assert error.code == "unsupported_parameter" and error.param == "messages[0].content[0].type"
    image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    error = refused(body(messages=[{"role": "user", "content": [image]}]))
    assert error.code == "unsupported_parameter" and error.param == "messages[0].content[0].source"
    unknown = {"type": "search_result", "source": "s", "title": "t", "content": []}
    assert refused(body(messages=[{"role": "user", "content": [unknown]}])).code == "unsupported_parameter"


def test_server_tool_blocks_are_dropped_and_named() -> None:
    content = [
        {"type": "text", "text": "found"},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
    ]
    req = parse_request(body(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]))
    assert req.call.messages[1] == {"role": "assistant", "content": "found"}
    assert req.ignored == ["content:server_tool_use", "content:web_search_tool_result"]
    assert req.ignored_params == ["messages[1].content[1].type", "messages[1].content[2].type"]


def test_tools_translate_and_server_and_deferred_tools_are_dropped_and_named() -> None:
    tools = [
        {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}, "cache_control": {}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
        {"type": "custom", "name": "Exact", "input_schema": {"type": "object"}, "strict": True},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    req = parse_request(body(tools=tools))
    assert req.call.options["tools"] == [
        {
            "type": "function",
            "function": {"name": "Bash", "parameters": {"type": "object"}, "description": "Run a command"},
        },
        {"type": "function", "function": {"name": "Exact", "parameters": {"type": "object"}, "strict": True}},
    ]
    assert req.ignored == ["tools:web_search", "tools:Later", "tools:str_replace_based_edit_tool"]
    assert req.ignored_params == ["tools[1].type", "tools[2].defer_loading", "tools[4].type"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice_map(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    options = parse_request(body(tools=[{"name": "f", "input_schema": {}}], tool_choice=choice)).call.options
    assert {name: options[name] for name in expected if name in options} == expected
    assert ("parallel_tool_calls" in options) == ("parallel_tool_calls" in expected)


def test_tool_choice_naming_a_dropped_tool_is_refused() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    assert refused(body(tools=tools, tool_choice={"type": "tool", "name": "web_search"})).param == "tool_choice.name"
    assert refused(body(tools=tools, tool_choice={"type": "any"})).param == "tool_choice"
    options = parse_request(body(tools=tools, tool_choice={"type": "auto"})).call.options
    assert "tool_choice" not in options and "tools" not in options


def test_sampling_stop_top_k_and_user() -> None:
    req = parse_request(
        body(
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1", "other": 1},
            service_tier="auto",
        )
    )
    options = req.call.options
    assert options["temperature"] == 0.5 and options["top_p"] == 0.9 and options["stop"] == ["END"]
    assert options["user"] == "u-1"
    assert options["extra_data"] == {"top_k": 40}  # passed through as is
    assert req.ignored == []  # metadata and service_tier only tune the service


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 4095}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 16383}, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, "high"),
        ({"type": "disabled"}, None),
        ({"type": "adaptive", "display": "summarized"}, None),
    ],
)
def test_thinking_budget_becomes_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    req = parse_request(body(thinking=thinking))
    assert req.call.options.get("reasoning_effort") == effort
    assert req.ignored == []


def test_output_config_effort_and_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = parse_request(
        body(
            thinking={"type": "enabled", "budget_tokens": 1024},
            output_config={"effort": "medium", "format": {"type": "json_schema", "schema": schema}},
        )
    )
    assert req.call.options["reasoning_effort"] == "medium"
    assert req.call.options["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert refused(body(output_config={"effort": "extreme"})).param == "output_config.effort"


def test_claude_code_fields_are_dropped_and_named_never_fatal() -> None:
    req = parse_request(
        body(
            context_management={"edits": []},
            container="c1",
            mcp_servers=[],
            brand_new_field=1,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "future_key": 1}]}],
            tools=[{"name": "f", "input_schema": {}, "input_examples": []}],
        )
    )
    assert req.ignored == [
        "text.future_key",
        "tool.input_examples",
        "context_management",
        "container",
        "brand_new_field",
    ]
    assert req.ignored_params == [
        "messages[0].content[0].future_key",
        "tools[0].input_examples",
        "context_management",
        "container",
        "brand_new_field",
    ]


def test_stream_flag() -> None:
    assert parse_request(body(stream=True)).call.stream is True


def test_estimate_is_utf8_json_length_over_four_rounded_up() -> None:
    req = parse_request(body(messages=[{"role": "user", "content": "héllo wörld"}], tools=[{"name": "f"}]))
    size = len(json.dumps(req.call.messages, separators=(",", ":"), ensure_ascii=False).encode())
    size += len(json.dumps(req.tools, separators=(",", ":"), ensure_ascii=False).encode())
    assert req.estimate_tokens() == math.ceil(size / 4) == estimate_tokens(req.call.messages, req.tools)


# ------------------------------------------------------------------------------ 9.3.2 answer


def answer_of(*items: Any) -> Answer:
    answer = Answer()
    for item in items:
        answer.add(item)
    return answer


CALL = {"id": "call:1/x", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}}


def test_message_object_blocks_in_order_and_usage() -> None:
    usage = Usage(20, 7, prompt_tokens_details={"cached_tokens": 5})
    answer = answer_of(
        ProviderInfo("up", "m", "u"), Reasoning("think"), "Hel", "lo", ToolCalls([CALL]), usage, FinishReason("stop")
    )
    message = message_object(answer, "claude-x", 99)
    assert message["id"].startswith("msg_") and message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-x"
    assert message["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "call_1_x", "name": "Bash", "input": {"command": "ls"}},
    ]
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == {
        "input_tokens": 15,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
    }


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_stop_reason_map(reason: str, expected: str) -> None:
    assert message_object(answer_of("x", FinishReason(reason)), "m", 1)["stop_reason"] == expected


def test_no_usage_falls_back_to_the_request_count() -> None:
    message = message_object(answer_of("x"), "m", 42)
    assert message["usage"]["input_tokens"] == 42 and message["usage"]["output_tokens"] == 0
    assert message["content"] == [{"type": "text", "text": "x"}]


def test_tool_ids_are_sanitized_and_never_empty() -> None:
    assert tool_id("call_ab-9") == "call_ab-9"
    assert tool_id("fc.1:2 3") == "fc_1_2_3"
    assert tool_id("").startswith("toolu_") and tool_id(None).startswith("toolu_")


@pytest.mark.parametrize("arguments", ["[1, 2]", "not json", '"text"', "3"])
def test_arguments_that_are_not_an_object_are_a_502_naming_the_tool(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "Weird", "arguments": arguments}}
    with pytest.raises(ResponseError) as caught:
        message_object(answer_of(ToolCalls([call])), "m", 1)
    assert "Weird" in str(caught.value) and http_status(caught.value) == 502


def test_empty_arguments_are_an_empty_input() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "NoArgs", "arguments": ""}}
    assert message_object(answer_of(ToolCalls([call])), "m", 1)["content"][0]["input"] == {}


# ------------------------------------------------------------------------------ 9.3.3 stream


def render(*items: Any, input_tokens: int = 11) -> tuple[bytes, list[bytes]]:
    stream = MessageStream("claude-x", input_tokens, "req-1")
    pieces = [stream.start(items[0])] + [stream.event(item) for item in items[1:]] + [stream.end()]
    return b"".join(pieces), pieces


def test_stream_text_only() -> None:
    body_bytes, pieces = render("Hel", "lo", " wörld", Usage(3, 4), FinishReason("stop"))
    events = events_of(body_bytes)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 11
    blocks = check_stream(events)
    assert block_texts(blocks) == ["Hello wörld"]
    assert [len(events_of(piece)) for piece in pieces[1:3]] == [1, 1]  # one delta per upstream piece
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 0},
    }


def test_stream_thinking_text_tools_each_block_closed_before_the_next() -> None:
    second = {"id": "call_2", "type": "function", "function": {"name": "Read", "arguments": ""}}
    body_bytes, _ = render(
        ProviderInfo("up", "m", "u"),
        Reasoning("a"),
        Reasoning("b"),
        "T",
        ToolCalls([CALL, second]),
        FinishReason("stop"),
    )
    events = events_of(body_bytes)
    blocks = check_stream(events)
    assert [block["type"] for block in blocks] == ["thinking", "text", "tool_use", "tool_use"]
    assert blocks[0]["signature"] == "" and blocks[0]["thinking"] == ""
    assert blocks[2]["id"] == "call_1_x" and blocks[2]["name"] == "Bash" and blocks[2]["input"] == {}
    assert block_texts(blocks) == ["ab", "T", '{"command":"ls"}', ""]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_reasoning_after_text_opens_a_new_block() -> None:
    blocks = check_stream(events_of(render("x", Reasoning("r"), "y")[0]))
    assert [block["type"] for block in blocks] == ["text", "thinking", "text"]


def test_stream_of_no_event_at_all() -> None:
    stream = MessageStream("m", 5)
    events = events_of(stream.start(None) + stream.end())
    assert check_stream(events) == [] and events[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_stream_with_nothing_but_a_finish() -> None:
    events = events_of(render(FinishReason("length"))[0])
    assert check_stream(events) == []
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_stream_bad_arguments_raise_before_writing_anything() -> None:
    stream = MessageStream("m", 1)
    stream.start("x")
    bad = {"id": "c", "type": "function", "function": {"name": "Weird", "arguments": "[]"}}
    with pytest.raises(ResponseError, match="Weird"):
        stream.event(ToolCalls([CALL, bad]))


def test_stream_error_event_and_ping() -> None:
    stream = MessageStream("m", 1, "req-9")
    data = stream.start("x") + stream.error(Problem(502, "upstream_error", "the upstream broke off"))
    events = events_of(data)
    check_stream(events)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "the upstream broke off"}, "request_id": "req-9"},
    )
    assert events_of(PING_EVENT) == [("ping", {"type": "ping"})]
    assert stream.keepalive == PING_EVENT


def test_text_is_byte_exact_through_json_escapes() -> None:
    pieces = ['"quoted"\n', "\u2028 \x00 é 🙂", "</script>"]
    blocks = check_stream(events_of(render(*pieces)[0]))
    assert block_texts(blocks) == ["".join(pieces)]


# ------------------------------------------------------------------------------ 9.3.5 errors


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (500, "api_error"),
        (405, "invalid_request_error"),
    ],
)
def test_error_types_by_status(status: int, kind: str) -> None:
    assert error_object(status, "m", None, "r") == {
        "type": "error",
        "error": {"type": kind, "message": "m"},
        "request_id": "r",
    }


def test_error_message_names_the_field() -> None:
    assert error_object(400, "must be an integer", "max_tokens")["error"]["message"] == (
        "must be an integer (field: max_tokens)"
    )
    assert error_object(400, "'max_tokens' is required", "max_tokens")["error"]["message"] == "'max_tokens' is required"


def test_door_error_body_carries_the_request_id_the_exchange_set() -> None:
    problem = Problem(429, "rate_limit_exceeded", "slow down", headers={"Retry-After": "3"})
    problem.request_id = "req-7"
    assert messages.error_body(problem) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req-7",
    }


def test_door_answer_and_renderer_use_the_request_count() -> None:
    req = messages.parse(body())
    req.input_tokens = 77
    assert messages.answer(req, answer_of("x"), "m")["usage"]["input_tokens"] == 77
    renderer = messages.renderer(req, None, "m")
    assert events_of(renderer.start("x"))[0][1]["message"]["usage"]["input_tokens"] == 77
