"""The plain-answer shortcut of ``events_from_completion`` gives exactly the events of the full reading (ChunkState)
for every answer shape, and the same errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmrelay.errors import ResponseError
from llmrelay.providers import reading

MESSAGES: list[Any] = [
    {"role": "assistant", "content": "Hello"},
    {"role": "assistant", "content": ""},
    {"role": "assistant", "content": None},
    {"role": "assistant", "content": "Hi", "refusal": None, "annotations": []},
    {"role": "assistant", "content": None, "refusal": "I cannot"},
    {"role": "assistant", "content": "x", "reasoning_content": "think"},
    {"role": "assistant", "content": [{"type": "text", "text": "parts"}]},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "assistant", "content": "a", "audio": {"data": "AAA", "transcript": "t"}},
    {},
    None,
]
USAGES: list[Any] = [
    "absent",
    None,
    {},
    {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    {"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 0}},
    [],
    7,
]
FINISHES: list[Any] = ["absent", None, "stop", "length", "tool_calls", ""]


def _answer(message: Any, usage: Any, finish: Any, groq: bool) -> bytes:
    choice: dict[str, Any] = {"index": 0, "message": message}
    if finish != "absent":
        choice["finish_reason"] = finish
    data: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m"}
    data["choices"] = [choice]
    if usage != "absent":
        data["usage"] = usage
    if groq:
        data["x_groq"] = {"usage": {"prompt_tokens": 9, "completion_tokens": 1}}
    return orjson.dumps(data)


def _events(body: bytes) -> tuple[str, list[dict[str, Any] | str]] | str:
    try:
        events = reading.events_from_completion(body, "p", "m", "http://x")
    except ResponseError as error:
        return f"error: {error}"
    return "ok", [item if type(item) is str else {type(item).__name__: item.to_dict()} for item in events]


@pytest.mark.parametrize("groq", [False, True])
def test_the_plain_shortcut_reads_every_shape_as_the_full_reading(monkeypatch: pytest.MonkeyPatch, groq: bool) -> None:
    bodies = [_answer(message, usage, finish, groq) for message in MESSAGES for usage in USAGES for finish in FINISHES]
    bodies += [orjson.dumps({"choices": []}), orjson.dumps({"choices": [None]}), orjson.dumps({"choices": ["x"]})]
    fast = [_events(body) for body in bodies]
    monkeypatch.setattr(reading, "_plain_answer", lambda data, choices: None)
    full = [_events(body) for body in bodies]
    assert fast == full
    assert any(result[0] == "ok" and "Hello" in result[1] for result in fast)  # the shortcut's own case is covered
