"""An answer in Anthropic's Messages shape (SPEC 9.3.2, 9.3.3, 9.3.5): pure translators, no I/O.

* :func:`message_object` — a whole :class:`~llmrelay.responses.Answer` as the ``message`` JSON;
* :class:`MessageStream` — one streamed answer as SSE bytes, event by event, every event with its ``event:`` line;
* :func:`error_object` — the error body, its ``type`` by HTTP status.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ...client.convert import new_id
from ...errors import ResponseError
from ...responses import Answer, FinishReason, Reasoning, ToolCallPiece, ToolCalls, Usage, finish_reason
from ..problems import Problem
from .calls import LiveCalls

__all__ = [
    "PING_EVENT",
    "MessageStream",
    "error_object",
    "error_type",
    "message_object",
    "stop_reason",
    "tool_id",
    "tool_input",
    "usage_object",
]

PING_EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")


# ------------------------------------------------------------------------------------ pieces


def stop_reason(reason: str) -> str:
    """A chat ``finish_reason`` as Anthropic's ``stop_reason`` (an unknown one ends the turn)."""
    return _STOP_REASONS.get(reason, "end_turn")


def tool_id(call_id: Any) -> str:
    """An upstream tool-call id made to match ``^[a-zA-Z0-9_-]+$`` (a new one when it has nothing usable)."""
    if type(call_id) is str and call_id:
        return _NOT_ID.sub("_", call_id)
    return new_id("toolu_")


def tool_input(call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, parsed arguments) of a chat tool call; arguments that are not a JSON object raise ``ResponseError``
    (502: the upstream answered something Anthropic's shape cannot carry). Empty arguments are ``{}``."""
    function = call.get("function") or {}
    name = function.get("name") or ""
    arguments = function.get("arguments")
    if type(arguments) is dict:
        return name, arguments
    if arguments is None or (type(arguments) is str and not arguments.strip()):
        return name, {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    if type(parsed) is not dict:
        raise ResponseError(f"the upstream called the tool {name!r} with arguments that are not a JSON object")
    return name, parsed


def _cached_tokens(usage: Usage) -> int:
    details = usage.details.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if type(details) is dict else usage.details.get("cached_tokens")
    return cached if type(cached) is int and cached > 0 else 0


def usage_object(usage: Usage | None, input_tokens: int) -> dict[str, Any]:
    """Anthropic usage from chat usage: ``input_tokens`` excludes the cached part (Anthropic counts it apart, in
    ``cache_read_input_tokens``); without upstream usage, ``input_tokens`` is the request's count (9.3.4)."""
    if usage is None:
        return {"input_tokens": input_tokens, "output_tokens": 0, "cache_read_input_tokens": 0}
    cached = min(_cached_tokens(usage), usage.prompt_tokens)
    return {
        "input_tokens": usage.prompt_tokens - cached,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": cached,
    }


def _tool_blocks(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = []
    for call in calls:
        name, arguments = tool_input(call)
        blocks.append({"type": "tool_use", "id": tool_id(call.get("id")), "name": name, "input": arguments})
    return blocks


def message_object(answer: Answer, model: str, input_tokens: int) -> dict[str, Any]:
    """The non-streamed ``message``: blocks ``thinking``, ``text``, then one ``tool_use`` per call."""
    content: list[dict[str, Any]] = []
    reasoning = answer.reasoning_content
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = answer.content
    if text:
        content.append({"type": "text", "text": text})
    if answer.calls:
        content.extend(_tool_blocks(answer.calls))
    usage = usage_object(answer.usage, input_tokens)
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(answer.finish_reason),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
        },
    }


def error_type(status: int) -> str:
    """SPEC 9.3.5: the error ``type`` for an HTTP status."""
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def error_object(status: int, message: str, param: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}, "request_id"}``; Anthropic bodies have no ``param``, so
    a field the message does not name yet is added to it."""
    if param and param not in message:
        message = f"{message} (field: {param})"
    return {"type": "error", "error": {"type": error_type(status), "message": message}, "request_id": request_id}


# ------------------------------------------------------------------------------------ streams


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageStream:
    """One streamed answer as Anthropic SSE: ``start(first)``, ``event(item)`` per upstream event, ``end()``, or
    ``error(...)`` after output. Blocks are indexed from 0, never reused; one is closed before the next opens;
    each delta has its block's type. An empty text or reasoning piece adds nothing (no empty block is opened)."""

    __slots__ = (
        "_head",
        "block",
        "called",
        "index",
        "input_tokens",
        "live",
        "model",
        "reason",
        "request_id",
        "sent",
        "usage",
    )

    keepalive = PING_EVENT

    def __init__(self, model: str, input_tokens: int, request_id: str | None = None) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.request_id = request_id
        self.block: str | None = None  # the open block's type
        self.index = -1  # the open (or last) block's index
        self.usage: Usage | None = None
        self.reason: str | None = None
        self.called = False
        self._head = b""  # the text delta's bytes before the text, for the open text block
        self.live = LiveCalls()
        self.sent: list[str] = []  # the open tool_use block's arguments pieces so far

    def start(self, first: Any) -> bytes:
        """``message_start``, then the first event's bytes (``first`` is ``None`` when the upstream sent none)."""
        message: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        head = _event(b"message_start", {"type": "message_start", "message": message})
        return head if first is None else head + self.event(first)

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.block = kind
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        return out + _event(b"content_block_start", start)

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self.index})

    def text(self, piece: str) -> bytes:
        if not piece:
            return b""
        out = b""
        if self.block != "text":
            out = self._open("text", {"type": "text", "text": ""})
            self._head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,' % self.index
        return out + self._head + b'"delta":{"type":"text_delta","text":' + orjson.dumps(piece) + b"}}\n\n"

    def thinking(self, piece: str) -> bytes:
        if not piece:
            return b""
        out = b""
        if self.block != "thinking":
            out = self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        delta = {
            "type": "content_block_delta",
            "index": self.index,
            "delta": {"type": "thinking_delta", "thinking": piece},
        }
        return out + _event(b"content_block_delta", delta)

    def _tool_delta(self, piece: str) -> bytes:
        if not piece:
            return b""
        self.sent.append(piece)
        delta = {"type": "input_json_delta", "partial_json": piece}
        return _event(b"content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def piece(self, piece: ToolCallPiece) -> bytes:
        """A piece of a call's arguments as it arrives (the first call live; see :mod:`.calls`)."""
        live = self.live
        if not live.take(piece):
            return b""
        out = b""
        if live.opens(piece):
            self.called = True
            self.sent = []
            out = self._open("tool_use", {"type": "tool_use", "id": tool_id(piece.id), "name": piece.name, "input": {}})
        return out + self._tool_delta(piece.arguments)

    def tools(self, calls: list[dict[str, Any]]) -> bytes:
        """The complete calls: the open one finished, the others one block each (their waiting pieces, one delta
        each; a call that came with no pieces: its parsed arguments in one delta), then what waited for them."""
        self.called = self.called or bool(calls)
        parsed = [tool_input(call) for call in calls]  # raises before a block of the complete calls is written
        open_call, rest = self.live.finish(calls)
        out = []
        if open_call is not None and self.block == "tool_use":
            arguments = (open_call.get("function") or {}).get("arguments") or ""
            sent = "".join(self.sent)
            if arguments.startswith(sent):
                out.append(self._tool_delta(arguments[len(sent) :]))
        for number, call, pieces in rest:
            name, arguments = parsed[number]
            block = {"type": "tool_use", "id": tool_id(call.get("id")), "name": name, "input": {}}
            out.append(self._open("tool_use", block))
            if pieces is not None:
                self.sent = []
                out.extend(self._tool_delta(piece) for piece in pieces)
            elif arguments:
                out.append(self._tool_delta(orjson.dumps(arguments).decode()))
        out.extend(self.event(item) for item in self.live.later)
        self.live.later.clear()
        return b"".join(out)

    def event(self, item: Any) -> bytes:
        """One upstream event's SSE bytes (``b""`` when it adds nothing now)."""
        if type(item) is str:
            return b"" if self.block == "tool_use" and self.live.hold(item) else self.text(item)
        if isinstance(item, ToolCallPiece):
            return self.piece(item)
        if isinstance(item, Reasoning):
            return b"" if self.block == "tool_use" and self.live.hold(item) else self.thinking(item.token)
        if isinstance(item, ToolCalls):
            return self.tools(item.calls)
        if isinstance(item, Usage):
            self.usage = item
        elif isinstance(item, FinishReason):
            self.reason = item.reason
        elif isinstance(item, str):
            return self.text(str(item))
        return b""

    def end(self) -> bytes:
        """Close the open block; ``message_delta`` with the stop reason and usage; ``message_stop``."""
        reason = stop_reason(finish_reason(self.reason, self.called))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": usage_object(self.usage, self.input_tokens),
        }
        return self._close() + _event(b"message_delta", delta) + _event(b"message_stop", {"type": "message_stop"})

    def error(self, problem: Problem) -> bytes:
        """The in-band error after output (9.3.3): ``event: error`` with the 9.3.5 body; the stream ends there."""
        return _event(b"error", error_object(problem.status, problem.message, problem.param, self.request_id))
