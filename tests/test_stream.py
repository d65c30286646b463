"""Reading answers: stream endings, in-band errors, chunk shapes, event order, text fidelity."""

from __future__ import annotations

import json
import time

import pytest
from helpers import collect, collect_error, kinds, make_provider, of_type, text_of
from scripted_server import (
    CREATED,
    Reply,
    chunk,
    completion,
    json_reply,
    sse,
    sse_reply,
    text_reply,
    tool_call,
    tool_call_delta,
    usage,
)

from llmrelay.errors import (
    BadRequestError,
    ContextLengthError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamIncompleteError,
)
from llmrelay.responses import AudioResponse, FinishReason, ProviderInfo, Reasoning, ToolCalls, Usage

# ------------------------------------------------------------------ endings


def test_done_ends_the_stream_and_garbage_after_it_is_ignored(server) -> None:
    server.script(sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]", "this is not json", chunk("ignored")))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "ok"
    assert kinds(items) == ["info", "text", "finish"]


def test_done_without_finish_reason_is_complete(server) -> None:
    server.script(sse_reply(chunk("ok"), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert kinds(items) == ["info", "text"]


def test_eof_without_finish_reason_or_done_is_incomplete(server) -> None:
    server.script(sse_reply(chunk("part"), chunk("ial")))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "partial"
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == "partial"


def test_eof_after_finish_reason_without_done_is_complete(server) -> None:
    server.script(sse_reply(chunk("ok"), chunk(finish_reason="length")))
    items = collect(make_provider(server), stream=True)
    assert items[-1] == FinishReason("length")


def test_abrupt_close_mid_stream(server) -> None:
    server.script(sse_reply(chunk("Hello "), chunk("wor"), end="abrupt"))
    items, error = collect_error(make_provider(server), stream=True)
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == "Hello wor"
    assert text_of(items) == "Hello wor"


def test_reset_mid_stream(server) -> None:
    server.script(sse_reply(chunk("Hello "), end="reset"))
    _, error = collect_error(make_provider(server), stream=True)
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == "Hello "


def test_socket_left_open_after_finish_reason_ends_promptly(server) -> None:
    server.script(sse_reply(chunk("done"), chunk(finish_reason="stop"), usage_chunk(), end="keep_open"))
    started = time.monotonic()
    items = collect(make_provider(server), stream=True)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert text_of(items) == "done"
    assert kinds(items) == ["info", "text", "usage", "finish"]
    # The half-finished connection was closed, not returned to the pool.
    assert server.wait_for(lambda: server.requests[0].client_disconnected)


def test_socket_left_open_usage_trailer_in_grace_period_is_kept(server) -> None:
    server.script(
        Reply(
            headers=[("Content-Type", "text/event-stream")],
            writes=[sse(chunk("x"), chunk(finish_reason="stop")), 0.2, sse(usage_chunk(7, 3))],
            end="keep_open",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert of_type(items, Usage) == [Usage(7, 3, 10)]


def test_socket_left_open_without_finish_reason_times_out_as_incomplete(server) -> None:
    server.script(sse_reply(chunk("half"), end="keep_open"))
    started = time.monotonic()
    _, error = collect_error(make_provider(server), stream=True, timeout=0.3)
    assert time.monotonic() - started < 3
    assert isinstance(error, StreamIncompleteError)
    assert isinstance(error, TimeoutError)
    assert error.partial_text == "half"


def test_done_then_socket_left_open_ends_promptly(server) -> None:
    server.script(sse_reply(chunk("x"), chunk(finish_reason="stop"), "[DONE]", end="keep_open"))
    started = time.monotonic()
    items = collect(make_provider(server), stream=True)
    assert time.monotonic() - started < 2.0
    assert kinds(items) == ["info", "text", "finish"]


def test_abrupt_close_after_finish_reason_is_complete(server) -> None:
    server.script(sse_reply(chunk("whole"), chunk(finish_reason="stop"), end="abrupt"))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "whole"
    assert items[-1] == FinishReason("stop")


def test_stream_without_any_event_is_incomplete(server) -> None:
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=[b": just a comment\n\n"]))
    items, error = collect_error(make_provider(server), stream=True)
    assert items == []
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == ""


def usage_chunk(prompt: int = 5, completion_tokens: int = 2) -> dict:
    return chunk(choices=[], usage=usage(prompt, completion_tokens))


# ------------------------------------------------------------------ in-band errors


def test_error_object_in_data(server) -> None:
    error_obj = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limit"}}
    server.script(sse_reply(chunk("Some "), chunk("text"), error_obj))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "Some text"
    assert kinds(items) == ["info", "text", "text"]
    assert isinstance(error, RateLimitError)
    assert "Rate limit reached" in str(error)


def test_openrouter_error_chunk_with_finish_reason_error(server) -> None:
    error_chunk = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "model": "x",
        "error": {"code": 502, "message": "Provider returned error"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    server.script(sse_reply(chunk("partial "), error_chunk, "[DONE]"))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "partial "
    assert isinstance(error, ServerError)
    assert error.status == 502
    assert "Provider returned error" in str(error)


def test_error_event_without_error_key(server) -> None:
    body = sse(chunk("before")) + b'event: error\ndata: {"message": "context length exceeded", "code": 400}\n\n'
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=[body]))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "before"
    assert isinstance(error, ContextLengthError)
    assert "context length exceeded" in str(error)


def test_error_event_with_plain_text_payload(server) -> None:
    body = sse(chunk("before")) + b"event: error\ndata: upstream went away\n\n"
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=[body]))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "before"
    assert isinstance(error, ResponseError)
    assert "upstream went away" in str(error)


def test_error_event_with_empty_payload(server) -> None:
    body = sse(chunk("before")) + b"event: error\ndata:\n\n"
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=[body]))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "before"
    assert isinstance(error, ResponseError)


def test_in_band_server_error_type(server) -> None:
    server.script(sse_reply({"error": {"message": "boom", "type": "server_error"}}))
    _, error = collect_error(make_provider(server), stream=True)
    assert isinstance(error, ServerError)


def test_error_null_in_band_is_not_an_error(server) -> None:
    server.script(sse_reply(chunk("fine", error=None), chunk(finish_reason="stop", error=None), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "fine"


def test_non_json_data_payload(server) -> None:
    server.script(sse_reply(chunk("a"), "Internal Server Error"))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "a"
    assert isinstance(error, ResponseError)
    assert "Internal Server Error" in str(error)


def test_non_object_json_payload(server) -> None:
    server.script(sse_reply(chunk("a"), "[1, 2]"))
    _, error = collect_error(make_provider(server), stream=True)
    assert isinstance(error, ResponseError)
    assert "[1, 2]" in str(error)


def test_non_streamed_json_error_with_200(server) -> None:
    server.script(json_reply({"error": {"message": "bad model", "type": "invalid_request_error"}}))
    _, error = collect_error(make_provider(server))
    assert isinstance(error, BadRequestError)
    assert "bad model" in str(error)


# ------------------------------------------------------------------ chunk shapes


def test_azure_first_chunk_with_empty_choices_and_filter_results(server) -> None:
    first = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}],
    }
    server.script(
        sse_reply(
            first,
            chunk("Hi", model="gpt-4o-2024", content_filter_results={}),
            chunk(finish_reason="stop", model="gpt-4o-2024"),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "Hi"
    assert kinds(items) == ["info", "text", "finish"]


@pytest.mark.parametrize("choices", [[], None, False], ids=["empty", "null", "absent"])
def test_usage_trailer_choices_shapes(server, choices) -> None:
    trailer = chunk(choices=choices, usage=usage(11, 4))
    server.script(sse_reply(chunk("x"), chunk(finish_reason="stop"), trailer, "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert kinds(items) == ["info", "text", "usage", "finish"]
    assert of_type(items, Usage)[0].to_dict() == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def test_usage_on_the_last_content_chunk(server) -> None:
    server.script(sse_reply(chunk("x"), chunk("y", finish_reason="stop", usage=usage(3, 2)), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert kinds(items) == ["info", "text", "text", "usage", "finish"]
    assert of_type(items, Usage) == [Usage(3, 2, 5)]


def test_cumulative_usage_last_wins(server) -> None:
    server.script(
        sse_reply(
            chunk("a", usage=usage(10, 1)),
            chunk("b", usage=usage(10, 2)),
            chunk("c", usage=None),
            chunk(finish_reason="stop", usage=usage(10, 3)),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert of_type(items, Usage) == [Usage(10, 3, 13)]


def test_null_usage_does_not_erase_earlier_usage(server) -> None:
    server.script(
        sse_reply(chunk("a", usage=usage(4, 4)), chunk(finish_reason="stop"), chunk(choices=[], usage=None), "[DONE]")
    )
    assert of_type(collect(make_provider(server), stream=True), Usage) == [Usage(4, 4, 8)]


def test_groq_x_groq_usage(server) -> None:
    server.script(
        sse_reply(
            chunk("a"),
            chunk(finish_reason="stop", x_groq={"id": "req_1", "usage": usage(9, 8, queue_time=0.01)}),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    (found,) = of_type(items, Usage)
    assert (found.prompt_tokens, found.completion_tokens, found.total_tokens) == (9, 8, 17)
    assert found.queue_time == 0.01


def test_groq_x_groq_without_usage_keeps_earlier(server) -> None:
    server.script(
        sse_reply(
            chunk("a", x_groq={"id": "req_1"}),
            chunk(finish_reason="stop", x_groq={"id": "req_1", "usage": usage(2, 2)}),
            chunk(choices=[], x_groq={"id": "req_1"}),
            "[DONE]",
        )
    )
    assert of_type(collect(make_provider(server), stream=True), Usage) == [Usage(2, 2, 4)]


def test_no_usage_means_no_usage_event(server) -> None:
    server.script(sse_reply(chunk("a"), chunk(finish_reason="stop"), "[DONE]"))
    assert of_type(collect(make_provider(server), stream=True), Usage) == []


def test_reasoning_content_and_reasoning(server) -> None:
    server.script(
        sse_reply(
            chunk(reasoning_content="Think"),
            {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"reasoning": "ing..."}}]},
            {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": None, "reasoning": " more"}}]},
            chunk("Answer"),
            chunk(finish_reason="stop"),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert of_type(items, Reasoning) == [Reasoning("Think"), Reasoning("ing..."), Reasoning(" more")]
    assert text_of(items) == "Answer"
    assert kinds(items) == ["info", "reasoning", "reasoning", "reasoning", "text", "finish"]


def test_reasoning_beside_content_in_one_delta(server) -> None:
    both = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "A", "reasoning_content": "R"}}]}
    server.script(sse_reply(both, chunk(finish_reason="stop"), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "A"
    assert of_type(items, Reasoning) == [Reasoning("R")]


def test_non_streamed_reasoning(server) -> None:
    body = completion("Answer", reasoning_content="Because")
    server.script(json_reply(body))
    items = collect(make_provider(server))
    assert kinds(items) == ["info", "reasoning", "text", "finish"]
    assert items[1] == Reasoning("Because")
    body = completion("Answer")
    body["choices"][0]["message"]["reasoning"] = "Openrouter style"
    server.script(json_reply(body))
    assert of_type(collect(make_provider(server)), Reasoning) == [Reasoning("Openrouter style")]


def test_tool_calls_split_over_many_chunks(server) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    pieces = [arguments[i : i + 5] for i in range(0, len(arguments), 5)]
    server.script(
        sse_reply(
            chunk(role="assistant", content=None),
            chunk(tool_calls=[tool_call_delta(0, id="call_a", name="get_weather", arguments="")]),
            *[chunk(tool_calls=[tool_call_delta(0, arguments=piece)]) for piece in pieces],
            chunk(tool_calls=[tool_call_delta(1, id="call_b", name="get_time")]),
            chunk(tool_calls=[tool_call_delta(1, arguments='{"tz": "CET"}')]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert kinds(items) == ["info", "tools", "finish"]
    assert items[1].calls == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": arguments}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]
    assert json.loads(items[1].calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert items[-1] == FinishReason("tool_calls")


def test_tool_calls_without_index_two_calls(server) -> None:
    def delta(**fields):
        return {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [fields]}}]}

    server.script(
        sse_reply(
            delta(id="call_1", type="function", function={"name": "one", "arguments": '{"a"'}),
            delta(function={"arguments": ": 1}"}),
            delta(id="call_2", type="function", function={"name": "two", "arguments": ""}),
            delta(function={"arguments": '{"b": 2}'}),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    (calls,) = of_type(items, ToolCalls)
    assert calls.calls == [
        {"id": "call_1", "type": "function", "function": {"name": "one", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "two", "arguments": '{"b": 2}'}},
    ]


def test_tool_calls_without_index_in_one_delta_list(server) -> None:
    both = {
        "id": "c",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "one", "arguments": "{"}},
                        {"id": "call_2", "function": {"name": "two", "arguments": "{"}},
                    ]
                },
            }
        ],
    }
    more = {
        "id": "c",
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "}"}}, {"function": {"arguments": "}"}}]}}
        ],
    }
    server.script(sse_reply(both, more, chunk(finish_reason="tool_calls"), "[DONE]"))
    (calls,) = of_type(collect(make_provider(server), stream=True), ToolCalls)
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls.calls] == [
        ("call_1", "one", "{}"),
        ("call_2", "two", "{}"),
    ]


def test_complete_tool_calls_all_sent_as_index_0(server) -> None:
    def whole(call_id: str, name: str, arguments: str) -> dict:
        call = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        return chunk(tool_calls=[call])

    server.script(
        sse_reply(whole("call_a", "one", '{"a": 1}'), whole("call_b", "two", '{"b": 2}'), chunk(finish_reason="stop"))
    )
    items = collect(make_provider(server), stream=True)
    (calls,) = of_type(items, ToolCalls)
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls.calls] == [
        ("call_a", "one", '{"a": 1}'),
        ("call_b", "two", '{"b": 2}'),
    ]
    assert items[-1] == FinishReason("tool_calls")


def test_whole_tool_call_in_one_chunk_with_finish_reason(server) -> None:
    whole = chunk(
        tool_calls=[{"index": 0, "id": "call_z", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        finish_reason="tool_calls",
        usage=usage(1, 1),
    )
    server.script(sse_reply(whole, "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert kinds(items) == ["info", "tools", "usage", "finish"]
    assert items[1].calls == [{"id": "call_z", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


def test_finish_reason_stop_with_tool_calls_becomes_tool_calls(server) -> None:
    server.script(
        sse_reply(
            chunk(tool_calls=[tool_call_delta(0, id="c1", name="f", arguments="{}")]), chunk(finish_reason="stop")
        )
    )
    items = collect(make_provider(server), stream=True)
    assert items[-1] == FinishReason("tool_calls")
    server.script(json_reply(completion(None, tool_calls=[tool_call("f", {"x": 1})], finish_reason="stop")))
    items = collect(make_provider(server))
    assert kinds(items) == ["info", "tools", "finish"]
    assert items[1].calls[0]["function"] == {"name": "f", "arguments": '{"x":1}'}
    assert items[-1] == FinishReason("tool_calls")


def test_audio_output_streamed_and_not(server) -> None:
    def audio_chunk(**audio) -> dict:
        return {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"audio": audio}}]}

    server.script(
        sse_reply(
            audio_chunk(id="a1", transcript="Hel"),
            audio_chunk(data="UklG", transcript="lo"),
            audio_chunk(data="Rg=="),
            chunk(finish_reason="stop"),
            "[DONE]",
        )
    )
    items = collect(make_provider(server), stream=True)
    assert of_type(items, AudioResponse) == [AudioResponse("UklGRg==", "Hello")]
    assert kinds(items)[-2:] == ["AudioResponse", "finish"]
    body = completion(None)
    body["choices"][0]["message"]["audio"] = {"id": "a1", "data": "UklGRg==", "transcript": "Hello"}
    server.script(json_reply(body))
    assert of_type(collect(make_provider(server)), AudioResponse) == [AudioResponse("UklGRg==", "Hello")]


def test_event_order_and_provider_info_model(server) -> None:
    server.script(
        sse_reply(
            chunk(role="assistant", content="", model="served-model-v2"),
            chunk("Hi", model="served-model-v2"),
            chunk(tool_calls=[tool_call_delta(0, id="c1", name="f", arguments="{}")], model="served-model-v2"),
            chunk(finish_reason="stop", model="served-model-v2"),
            chunk(choices=[], usage=usage(1, 2), model="served-model-v2"),
            "[DONE]",
        )
    )
    provider = make_provider(server)
    items = collect(provider, model="asked-model", stream=True)
    assert kinds(items) == ["info", "text", "tools", "usage", "finish"]
    info = items[0]
    assert (info.name, info.model) == (provider.get_name(), "served-model-v2")
    assert info.url == f"{server.base}/chat/completions"
    assert server.requests[0].json()["model"] == "asked-model"


def test_provider_info_falls_back_to_requested_model(server) -> None:
    server.script(sse_reply(chunk("x", model=""), chunk(finish_reason="stop", model=""), "[DONE]"))
    items = collect(make_provider(server), model="asked", stream=True)
    assert items[0] == ProviderInfo(items[0].name, "asked", f"{server.base}/chat/completions", "chatcmpl-1", CREATED)


@pytest.mark.parametrize("stream", [True, False])
def test_provider_info_carries_the_server_id_created_and_fingerprint(server, stream: bool) -> None:
    fields = {"id": "chatcmpl-abc", "created": 1234, "system_fingerprint": "fp_1"}
    if stream:
        server.script(sse_reply(chunk("x", **fields), chunk(finish_reason="stop", **fields), "[DONE]"))
    else:
        server.script(json_reply(completion("x", **fields)))
    (info,) = of_type(collect(make_provider(server), model="m", stream=stream), ProviderInfo)
    assert (info.id, info.created, info.system_fingerprint) == ("chatcmpl-abc", 1234, "fp_1")


def test_non_streamed_event_order(server) -> None:
    body = completion("Hello", tool_calls=[tool_call("f", "{}")], usage=usage(2, 3), model="served")
    server.script(json_reply(body))
    items = collect(make_provider(server), model="asked")
    assert kinds(items) == ["info", "text", "tools", "usage", "finish"]
    assert items[0].model == "served"


def test_content_type_decides_not_stream_flag(server) -> None:
    server.script(json_reply(completion("json answer")))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "json answer"
    server.script(sse_reply(chunk("sse answer"), chunk(finish_reason="stop"), "[DONE]"))
    items = collect(make_provider(server), stream=False)
    assert text_of(items) == "sse answer"


def test_text_plain_body_is_text(server) -> None:
    server.script(text_reply("  plain\nanswer  "))
    items = collect(make_provider(server))
    assert text_of(items) == "  plain\nanswer  "
    assert isinstance(items[0], ProviderInfo)


def test_unknown_content_type_raises_naming_it(server) -> None:
    server.script(Reply(headers=[("Content-Type", "application/xml")], writes=[b"<a/>"], body_mode="length"))
    _, error = collect_error(make_provider(server))
    assert isinstance(error, ResponseError)
    assert "application/xml" in str(error)


def test_think_tags_stay_text(server) -> None:
    server.script(sse_reply(chunk("<think>hmm</think>"), chunk("Answer"), chunk(finish_reason="stop"), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert text_of(items) == "<think>hmm</think>Answer"
    assert of_type(items, Reasoning) == []


def test_choice_with_other_index_is_ignored(server) -> None:
    other = {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "OTHER"}}]}
    server.script(sse_reply(chunk("mine"), other, chunk(finish_reason="stop"), "[DONE]"))
    assert text_of(collect(make_provider(server), stream=True)) == "mine"


@pytest.mark.parametrize(
    "weird",
    [
        {"id": "c", "model": "m", "choices": ["nope"]},
        {"id": "c", "model": "m", "choices": {"0": {}}},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": "text"}]},
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": 5}}]},
        {"id": "c", "model": "m", "choices": [], "usage": "lots"},
    ],
    ids=["choice-str", "choices-dict", "delta-str", "content-int", "usage-str"],
)
def test_malformed_chunk_shapes_raise_response_error(server, weird) -> None:
    server.script(sse_reply(chunk("a"), weird, chunk(finish_reason="stop"), "[DONE]"))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "a"
    assert type(error) is ResponseError
    assert "unexpected shape" in str(error)


@pytest.mark.parametrize(
    "weird",
    [
        {"choices": ["nope"]},
        {"choices": [{"message": "text"}]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": ["x"]}}]},
        {"object": "something else"},
    ],
)
def test_malformed_completion_shapes_raise_response_error(server, weird) -> None:
    server.script(json_reply(weird))
    _, error = collect_error(make_provider(server))
    assert type(error) is ResponseError


def test_content_as_list_of_parts(server) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "parts"}]
    body = completion(None)
    body["choices"][0]["message"]["content"] = parts
    server.script(json_reply(body))
    assert text_of(collect(make_provider(server))) == "Hello parts"
    streamed = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": parts}}]}
    server.script(sse_reply(streamed, chunk(finish_reason="stop"), "[DONE]"))
    assert text_of(collect(make_provider(server), stream=True)) == "Hello parts"


# ------------------------------------------------------------------ fidelity

FIDELITY_PIECES = ["\n\n  ", "Leading", " spaces", " and\n", "trailing ", "  \n", "\t", " \u00a0", "\n\n"]


def test_whitespace_preserved_exactly_streamed(server) -> None:
    server.script(sse_reply(*[chunk(piece) for piece in FIDELITY_PIECES], chunk(finish_reason="stop"), "[DONE]"))
    items = collect(make_provider(server), stream=True)
    assert [item for item in items if isinstance(item, str)] == FIDELITY_PIECES


def test_streamed_text_equals_non_streamed_content(server) -> None:
    answer = "".join(FIDELITY_PIECES) + "ünïcødé 😀 \r\n end "
    pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    server.script(sse_reply(*[chunk(piece) for piece in pieces], chunk(finish_reason="stop"), "[DONE]"))
    streamed = text_of(collect(make_provider(server), stream=True))
    server.script(json_reply(completion(answer)))
    whole = text_of(collect(make_provider(server)))
    assert streamed == whole == answer
