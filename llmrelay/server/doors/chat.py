"""The chat completions door, ``POST /v1/chat/completions`` (SPEC 8.3-8.5): OpenAI's own shape.

Pure translators over :mod:`llmrelay.client.convert` (where the OpenAI-shape rules live): no I/O, no aiohttp.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...client.convert import StreamShape, chat_call_from_json, completion_dict
from ...http.sse import DONE_EVENT, KEEPALIVE_COMMENT, encode_data
from ...responses import Answer, ProviderInfo
from ..problems import Problem
from . import DoorRequest

__all__ = ["ChatRenderer", "answer", "error_body", "parse", "renderer"]

_MARK = "\x00llmrelay-text\x00"
_MARK_JSON = orjson.dumps(_MARK)


def parse(body: dict[str, Any]) -> DoorRequest:
    """Every chat parameter goes upstream as it is (unknown ones too): nothing is dropped here."""
    return DoorRequest(chat_call_from_json(body))


def answer(req: DoorRequest, answer: Answer, model: str) -> dict[str, Any]:
    return completion_dict(answer, model)


def error_body(problem: Problem) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": problem.message, "type": problem.type, "param": problem.param, "code": problem.code}}


def renderer(req: DoorRequest, info: ProviderInfo | None, model: str) -> ChatRenderer:
    return ChatRenderer(StreamShape(info, model, "", req.call.include_usage))


def _text_template(shape: StreamShape) -> tuple[bytes, bytes]:
    """The SSE event of a text piece, split around the text: built once per stream from the shape's own chunk
    (so the OpenAI-shape rules stay in one place), then only the piece is encoded per event."""
    event = encode_data(orjson.dumps(shape.chunk({"content": _MARK})))
    head, found, tail = event.partition(_MARK_JSON)
    assert found, "the text chunk does not hold its text"
    return head, tail


def _events(chunks: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"".join([encode_data(dumps(chunk)) for chunk in chunks])


class ChatRenderer:
    """``chat.completion.chunk`` events: the role chunk with the first event, one chunk per event, the finish
    chunk, the usage chunk when asked for, ``[DONE]``."""

    __slots__ = ("head", "shape", "tail")
    keepalive = KEEPALIVE_COMMENT

    def __init__(self, shape: StreamShape) -> None:
        self.shape = shape
        self.head, self.tail = _text_template(shape)

    def start(self, first: Any) -> bytes:
        shape = self.shape
        return _events(shape.start(first) if first is not None else [shape.chunk(shape.role_delta(""))])

    def event(self, item: Any) -> bytes:
        if type(item) is str:  # the hot path: the shape's own text chunk, with only the text encoded
            return self.head + orjson.dumps(item) + self.tail
        delta = self.shape.delta(item)
        if delta is None:
            return b""
        return encode_data(orjson.dumps(self.shape.chunk(delta)))

    def end(self) -> bytes:
        return _events(self.shape.end()) + DONE_EVENT

    def error(self, problem: Problem) -> bytes:
        # After the first byte the status line is gone: the error goes in-band, and no [DONE] follows.
        return encode_data(orjson.dumps(error_body(problem)))
