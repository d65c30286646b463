"""The chat and images doors' translators, and the events' cache form: pure functions, tested without a socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from orjson import dumps

from llmrelay.errors import InvalidArgumentError, InvalidRequestError
from llmrelay.http.sse import SSEDecoder, encode_data
from llmrelay.responses import (
    Answer,
    AudioResponse,
    FinishReason,
    ImageResponse,
    ProviderInfo,
    Reasoning,
    ToolCalls,
    Usage,
    event_from_cache,
    event_to_cache,
)
from llmrelay.server.doors import chat, images
from llmrelay.server.problems import GatewayError, Problem, problem_of

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def _events(raw: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    return [data for _, data in decoder.feed(raw) + decoder.flush()]


def _chunks(raw: bytes) -> list[Any]:
    return [json.loads(data) for data in _events(raw) if data != b"[DONE]"]


def test_parse_keeps_every_parameter_and_drops_nothing() -> None:
    req = chat.parse(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.5,
            "brand_new_field": {"x": 1},
        }
    )
    call = req.call
    assert (call.model, call.stream, call.include_usage) == ("m", True, True)
    assert call.options["temperature"] == 0.5
    assert call.options["extra_data"] == {"brand_new_field": {"x": 1}}
    assert req.ignored == [] and req.ignored_params == []


def test_parse_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        chat.parse({"model": "m", "messages": [], "temperature": 1})
    assert caught.value.param == "messages"
    with pytest.raises(InvalidRequestError) as caught:
        chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})
    assert caught.value.param == "temperature"


def test_drop_records_name_and_param() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    req.drop("tools:web_search", "tools[3].type")
    req.drop("context_management")
    assert req.ignored == ["tools:web_search", "context_management"]
    assert req.ignored_params == ["tools[3].type", "context_management"]


def test_stream_text_is_one_event_per_piece_byte_exact() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True})
    renderer = chat.renderer(req, ProviderInfo("up", "m-1", "u", id="id-1", created=5), "m")
    pieces = ["Hé", 'l"l\n', "o 🚀"]
    raw = renderer.start(pieces[0]) + b"".join(renderer.event(piece) for piece in pieces[1:])
    raw += renderer.event(FinishReason("stop")) + renderer.end()
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = _chunks(raw)
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("id-1", 5, "m-1", "chat.completion.chunk")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == pieces
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_text_template_gives_the_same_bytes_as_the_shape() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True})
    renderer = chat.renderer(req, None, "m")
    shape = renderer.shape
    for piece in ("plain", "\u2028 line separator", "\x00nul", "\\"):
        assert renderer.event(piece) == encode_data(dumps(shape.chunk({"content": piece})))


def test_stream_usage_reasoning_tool_calls_and_empty_answer() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    req = chat.parse({**body, "stream_options": {"include_usage": True}})
    renderer = chat.renderer(req, None, "m")
    raw = renderer.start(Reasoning("think")) + renderer.event(ToolCalls([CALL])) + renderer.event(Usage(3, 4))
    assert renderer.event(FinishReason("stop")) == b""  # kept for the end
    chunks = _chunks(raw + renderer.end())
    assert chunks[0]["choices"][0]["delta"]["content"] is None  # null before reasoning / tool calls
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 7
    empty = chat.renderer(chat.parse(body), None, "m")
    chunks = _chunks(empty.start(None) + empty.end())
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]


def test_in_band_error_and_error_body() -> None:
    problem = Problem(502, "upstream_error", "the upstream failed", None)
    body = chat.error_body(problem)
    assert body == {"error": {"message": "the upstream failed", "type": "invalid_request_error", "param": None,
                              "code": "upstream_error"}}  # fmt: skip
    renderer = chat.renderer(chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}]}), None, "m")
    assert _events(renderer.error(problem)) == [json.dumps(body, separators=(",", ":")).encode()]
    assert chat.error_body(Problem(429, "rate_limit_exceeded", "slow"))["error"]["type"] == "rate_limit_error"


def test_problem_of_gateway_relay_and_value_errors() -> None:
    problem = problem_of(GatewayError(429, "rate_limit_exceeded", "slow", headers={"Retry-After": "3"}))
    assert (problem.status, problem.code, problem.headers) == (429, "rate_limit_exceeded", {"Retry-After": "3"})
    problem = problem_of(InvalidRequestError("'x' is wrong", param="x", code="invalid_request", status=400))
    assert (problem.status, problem.code, problem.param) == (400, "invalid_request", "x")
    problem = problem_of(InvalidArgumentError("aspect_ratio '7:1' is not one of 1:1", "aspect_ratio"))
    assert (problem.status, problem.code, problem.param) == (400, "invalid_request", "aspect_ratio")
    for bug in (ValueError("not enough values to unpack"), TypeError("'NoneType' object is not subscriptable")):
        problem = problem_of(bug)  # the gateway's own failure: a 500 that shows nothing of it
        assert (problem.status, problem.code, problem.param) == (500, "internal_error", None)
        assert problem.message == "the gateway failed; see its log"


def test_answer_is_a_chat_completion() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    answer = Answer()
    for item in (ProviderInfo("up", "m-1", "u", id="id-9"), "Hel", "lo", FinishReason("stop"), Usage(1, 2)):
        answer.add(item)
    data = chat.answer(req, answer, "m")
    assert data["id"] == "id-9" and data["model"] == "m-1" and data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "Hello" and data["usage"]["total_tokens"] == 3


def test_images_parse_options_extra_and_errors() -> None:
    req = images.parse(
        {"model": "up/i", "prompt": "a cat", "size": None, "width": 512, "height": 256, "user": "u", "seed": 3}
    )
    assert (req.model, req.prompt) == ("up/i", "a cat")
    assert req.options == {"width": 512, "height": 256}  # the shared option names: width/height become size upstream
    assert req.extra == {"seed": 3}
    assert images.parse({"prompt": "p"}).model == ""
    for body, param in (({"model": "m"}, "prompt"), ({"prompt": "p", "model": 3}, "model")):
        with pytest.raises(InvalidRequestError) as caught:
            images.parse(body)
        assert caught.value.param == param


@pytest.mark.parametrize(
    "item",
    [
        "text",
        Reasoning("r"),
        ToolCalls([CALL]),
        Usage(1, 2, cached_tokens=3),
        FinishReason("length"),
        ImageResponse(["https://x/1.png"], "alt"),
        AudioResponse("QUJD", "abc"),
    ],
)
def test_each_event_round_trips_through_its_cache_form(item: Any) -> None:
    stored = json.loads(json.dumps(event_to_cache(item)))
    assert event_from_cache(stored) == item


def test_provider_info_is_cached_as_name_and_model() -> None:
    stored = event_to_cache(ProviderInfo("up", "m-1", "http://secret-host/v1", id="x"))
    assert stored == ["i", "up", "m-1"]
    back = event_from_cache(stored)
    assert (back.name, back.model, back.url) == ("up", "m-1", "cache")
