"""The batch runner's shortcuts for the common case give what the general path gives, byte for byte: the
``chat.completion`` of an answer's events, and the second reading of a checked input line."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmrelay.batch.inputs import Line, parse_line
from llmrelay.batch.lines import failure_record, new_id, success_record
from llmrelay.batch.runner import _checked_before, _read_checked
from llmrelay.client.convert import completion_dict, completion_from_events
from llmrelay.errors import RateLimitError
from llmrelay.responses import (
    Answer,
    AudioResponse,
    FinishReason,
    ImageResponse,
    ProviderInfo,
    Reasoning,
    ToolCalls,
    Usage,
)


class _Text(str):
    """A str subclass: text for ``Answer``, but not the exact type the shortcut reads."""


class _Info(ProviderInfo):
    __slots__ = ()


INFO = ProviderInfo("P", "served", "http://upstream/v1/chat/completions", "chatcmpl-1", 1700000000, "fp")
CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]

EVENTS: list[list[Any]] = [
    [INFO, "Hello, world", Usage(12, 20, 32), FinishReason("stop")],  # the common answer
    [INFO, "Hel", "lo", Usage(1, 2), FinishReason("length")],
    [INFO, "", FinishReason("stop")],
    [INFO],
    [INFO, "text"],
    [INFO, ProviderInfo("Q", "other", "u", "chatcmpl-2", 5), "a", Usage(1, 1), Usage(3, 4, 7, cached=1)],
    [INFO, "a", FinishReason("stop"), FinishReason("content_filter")],
    [INFO, Usage(5, 0, None, prompt_tokens_details={"cached_tokens": 2})],
    # events the shortcut does not read: the whole list goes through Answer
    [INFO, Reasoning("think"), "answer", FinishReason("stop")],
    [INFO, ToolCalls(CALLS), Usage(1, 2), FinishReason("stop")],
    [INFO, "before", ToolCalls(CALLS), FinishReason("tool_calls")],
    [INFO, AudioResponse("ZGF0YQ==", "words"), FinishReason("stop")],
    [INFO, ImageResponse(["http://image/1.png"], "a cat")],
    [INFO, _Text("a str subclass"), "and a str", FinishReason("stop")],
    [_Info("P", "served", "u", "chatcmpl-3", 7), "from a ProviderInfo subclass"],
]


def _folded(events: list[Any], model: str) -> dict[str, Any]:
    answer = Answer()
    for event in events:
        answer.add(event)
    return completion_dict(answer, model)


@pytest.mark.parametrize("events", EVENTS)
def test_completion_from_events_is_completion_dict_of_the_folded_answer(events: list[Any]) -> None:
    assert orjson.dumps(completion_from_events(events, "asked")) == orjson.dumps(_folded(events, "asked"))


@pytest.mark.parametrize(
    "events",
    [
        ["no info", FinishReason("stop")],
        [],
        [Reasoning("r"), "t"],
        [ProviderInfo("P", "", "u"), "no id, no time, no model from the server"],
    ],
)
def test_completion_from_events_without_server_identity(events: list[Any]) -> None:
    """No id or time from the server: a new id and the current time on both paths (compared without them)."""
    ours, theirs = completion_from_events(events, "asked"), _folded(events, "asked")
    for data in (ours, theirs):
        assert data.pop("id").startswith("chatcmpl-")
        assert type(data.pop("created")) is int
    assert orjson.dumps(ours) == orjson.dumps(theirs)


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _line(**fields: Any) -> bytes:
    data = {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": BODY}
    data.update(fields)
    return orjson.dumps({name: value for name, value in data.items() if value is not _GONE}) + b"\n"


_GONE = object()

RAW_LINES = [
    _line(),
    _line(url="/v1/embeddings", body={"model": "e", "input": "x"}),
    _line(url="/v1/responses", body={"model": "m", "input": "x", "stream": False}),
    _line(custom_id='ü-ñ \\ "quoted"'),
    orjson.dumps({"body": BODY, "url": "/v1/chat/completions", "method": "POST", "custom_id": "reordered"}),
    # lines that changed since the check: parse_line names the problem on both paths
    b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": ',
    b"[1, 2]\n",
    b'"a string"\n',
    _line(custom_id=""),
    _line(custom_id=7),
    _line(custom_id=None),
    _line(custom_id=_GONE),
    _line(method="GET"),
    _line(method=_GONE),
    _line(url="/v1/completions"),
    _line(url=["/v1/chat/completions"]),
    _line(url=None),
    _line(body=[]),
    _line(body=None),
    _line(body={**BODY, "stream": True}),
    _line(extra=1),
    _line(url=_GONE, extra=1),
]


@pytest.mark.parametrize("raw", RAW_LINES)
def test_reading_a_checked_line_again_is_parse_line(raw: bytes) -> None:
    ours, theirs = _read_checked(3, raw), parse_line(3, raw, _checked_before)
    if isinstance(theirs, str):
        assert ours == theirs
        return
    assert isinstance(ours, Line)
    fields = ("number", "custom_id", "url", "body", "raw")
    assert [getattr(ours, name) for name in fields] == [getattr(theirs, name) for name in fields]


def test_a_record_id_is_its_request_id_with_batch_in_front() -> None:
    first, second = new_id("req_"), new_id("req_")
    assert first != second
    records = [
        orjson.loads(success_record("a", first, {"object": "chat.completion"})),
        orjson.loads(failure_record("b", second, RateLimitError("slow down", status=429))),
        orjson.loads(failure_record("c", second, ConnectionError("refused"))),
    ]
    assert [record["id"] for record in records] == ["batch_" + first, "batch_" + second, "batch_" + second]
    assert records[0]["response"]["request_id"] == first and records[0]["id"].startswith("batch_req_")
    assert records[2]["response"] is None and records[2]["error"]["message"] == "refused"
