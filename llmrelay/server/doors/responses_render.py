"""An answer as an OpenAI Responses API response object, whole (9.2.3) or as its event stream (9.2.4).

Pure functions and one small class per stream, no I/O. The stream and the whole answer build their output items
with the same functions, so ``responses.stream()``'s final response equals the non-streamed answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...responses import (
    Answer,
    FinishReason,
    ImageResponse,
    ProviderInfo,
    Reasoning,
    ToolCallPiece,
    ToolCalls,
    Usage,
    finish_reason,
)
from ..problems import Problem
from .calls import InputDecoder, LiveCalls
from .responses_request import ResponsesRequest, custom_input, new_item_id

__all__ = ["ResponsesRenderer", "answer", "error_body", "response_object", "usage_dict"]

KEEPALIVE = b": keep-alive\n\n"
_DELTA_TAIL = b',"logprobs":[],"sequence_number":'


def error_body(problem: Problem) -> dict[str, Any]:
    """8.4's OpenAI error body (9.2.6)."""
    return {"error": {"message": problem.message, "type": problem.type, "param": problem.param, "code": problem.code}}


def usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    """Chat usage in the Responses shape."""
    if usage is None:
        return None
    prompt_details = usage.details.get("prompt_tokens_details") or {}
    completion_details = usage.details.get("completion_tokens_details") or {}
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.total_tokens,
    }


def _status(reason: str | None, has_calls: bool) -> tuple[str, dict[str, str] | None]:
    reason = finish_reason(reason, has_calls)
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    request: ResponsesRequest,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": request.id,
        "object": "response",
        "created_at": request.created_at,
        "status": status,
        "model": model,
        "output": output,
        "usage": usage,
        "error": error,
        "incomplete_details": incomplete,
        **request.echo,
    }


# ------------------------------------------------------------------------------------ items


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [text_part(text)] if text is not None else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def call_item(
    call: dict[str, Any], custom: frozenset[str], done: bool = True, item_id: str | None = None
) -> dict[str, Any]:
    """One chat tool call as a ``function_call`` item, or a ``custom_tool_call`` item for a custom tool (``done``:
    complete, else as it is announced, before its arguments or input stream in)."""
    function = call.get("function") or {}
    name = function.get("name") or ""
    arguments = function.get("arguments") or ""
    status = "completed" if done else "in_progress"
    if name in custom:
        item_id = item_id or new_item_id("ctc_")
        return {
            "type": "custom_tool_call",
            "id": item_id,
            "call_id": call.get("id") or item_id,
            "name": name,
            "input": custom_input(arguments) if done else "",
            "status": status,
        }
    item_id = item_id or new_item_id("fc_")
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.get("id") or item_id,
        "name": name,
        "arguments": arguments if done else "",
        "status": status,
    }


def answer(request: ResponsesRequest, whole: Answer, model: str) -> dict[str, Any]:
    """The non-streamed response object of a whole answer (9.2.3)."""
    info = whole.info
    reported = info.model if info is not None and info.model else model
    output: list[dict[str, Any]] = []
    if whole.reasoning:
        output.append(reasoning_item(new_item_id("rs_"), "".join(whole.reasoning)))
    if whole.text:
        output.append(message_item(new_item_id("msg_"), whole.content))
    for call in whole.calls or ():
        output.append(call_item(call, request.custom))
    status, incomplete = _status(whole.reason, bool(whole.calls))
    return response_object(request, reported, status, output, usage_dict(whole.usage), incomplete)


# ------------------------------------------------------------------------------------ streams


class ResponsesRenderer:
    """The SSE events of one streamed response (9.2.4), event by event.

    ``start`` gives ``response.created`` and ``response.in_progress`` (and the first upstream event's), ``event``
    one upstream event's, ``end`` the open item's closing events and ``response.completed`` (or ``incomplete``),
    ``error`` a ``response.failed``. ``final`` is the finished response object once ``end`` ran (what is stored).
    A tool call's item opens at its first ``ToolCallPiece`` and gets one delta per piece (a custom tool's: the input
    text the piece completes); what waits while it is open, and the calls that came with no pieces, follow at the
    complete ``ToolCalls`` (:mod:`.calls`).
    """

    keepalive = KEEPALIVE

    def __init__(self, request: ResponsesRequest, info: ProviderInfo | None, model: str) -> None:
        self.request = request
        self.model = info.model if info is not None and info.model else model
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the reasoning or message item being streamed
        self.pieces: list[str] = []  # its text so far
        self.usage: Usage | None = None
        self.reason: str | None = None
        self.calls = False
        self.final: dict[str, Any] | None = None
        self.delta_head = b""  # the open message's text delta event up to its delta
        self.call: _OpenCall | None = None  # the call item being streamed
        self.live = LiveCalls()

    def _sse(self, kind: str, fields: dict[str, Any]) -> bytes:
        fields["sequence_number"] = self.sequence
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"

    def _object(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.request, self.model, status, **extra)

    def start(self, first: Any = None) -> bytes:
        snapshot = self._object("in_progress", output=[])
        head = self._sse("response.created", {"response": snapshot})
        head += self._sse("response.in_progress", {"response": snapshot})
        return head if first is None else head + self.event(first)

    # -------------------------------------------------------------------- items

    def _open(self, item: dict[str, Any]) -> bytes:
        self.open = item
        self.pieces = []
        self.output.append(item)
        return self._sse("response.output_item.added", {"output_index": len(self.output) - 1, "item": item})

    def _open_message(self) -> bytes:
        out = self._close() + self._open(message_item(new_item_id("msg_"), None, "in_progress"))
        place = {"item_id": self.open["id"], "output_index": len(self.output) - 1, "content_index": 0}  # type: ignore[index]
        kind = "response.output_text.delta"
        self.delta_head = (
            b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **place})[:-1] + b',"delta":'
        )
        return out + self._sse("response.content_part.added", {**place, "part": text_part("")})

    def _close(self) -> bytes:
        """The closing events of the open item (nothing when none is open)."""
        item = self.open
        if item is None:
            return b""
        self.open = None
        text = "".join(self.pieces)
        index = len(self.output) - 1
        place = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "reasoning":
            done = reasoning_item(item["id"], text)
            out = self._sse("response.reasoning_text.done", {**place, "text": text})
        else:
            done = message_item(item["id"], text)
            out = self._sse("response.output_text.done", {**place, "text": text, "logprobs": []})
            out += self._sse("response.content_part.done", {**place, "part": text_part(text)})
        self.output[index] = done
        return out + self._sse("response.output_item.done", {"output_index": index, "item": done})

    def _open_call(self, call: dict[str, Any]) -> bytes:
        """Announce a call's item (its arguments or input stream in after)."""
        out = self._close()
        item = call_item(call, self.request.custom, done=False)
        index = len(self.output)
        self.output.append(item)
        self.call = _OpenCall(index, item)
        self.calls = True
        return out + self._sse("response.output_item.added", {"output_index": index, "item": item})

    def _call_piece(self, piece: str) -> bytes:
        """One arguments piece of the open call: its delta event (a custom tool's: the input text it completes)."""
        call = self.call
        assert call is not None
        call.raw.append(piece)
        return self._call_delta(call, call.decoder.feed(piece) if call.decoder is not None else piece)

    def _call_delta(self, call: _OpenCall, text: str) -> bytes:
        if not text:
            return b""
        call.sent.append(text)
        kind = "response.custom_tool_call_input.delta" if call.decoder else "response.function_call_arguments.delta"
        return self._sse(kind, {"item_id": call.item["id"], "output_index": call.index, "delta": text})

    def _close_call(self, final: dict[str, Any] | None) -> bytes:
        """The open call complete (``final``: its complete form; ``None``: what its pieces carried): what its
        deltas did not carry yet, its ``.done`` events, ``output_item.done``."""
        call = self.call
        assert call is not None
        self.call = None
        arguments = "".join(call.raw) if final is None else (final.get("function") or {}).get("arguments") or ""
        announced = {"id": call.item["call_id"], "function": {"name": call.item["name"], "arguments": arguments}}
        item = call_item(announced, self.request.custom, item_id=call.item["id"])
        whole = item["input"] if call.decoder is not None else item["arguments"]
        sent = "".join(call.sent)
        out = self._call_delta(call, whole[len(sent) :]) if whole.startswith(sent) else b""
        place = {"item_id": item["id"], "output_index": call.index}
        if call.decoder is not None:
            out += self._sse("response.custom_tool_call_input.done", {**place, "input": whole})
        else:
            done = {**place, "name": item["name"], "arguments": whole}
            out += self._sse("response.function_call_arguments.done", done)
        self.output[call.index] = item
        return out + self._sse("response.output_item.done", {"output_index": call.index, "item": item})

    def _whole_call(self, call: dict[str, Any], pieces: list[str] | None) -> bytes:
        """A call rendered at the end: its pieces that waited, one delta each (none: its arguments in one)."""
        out = self._open_call(call)
        arguments = (call.get("function") or {}).get("arguments") or ""
        for piece in pieces if pieces is not None else [arguments]:
            out += self._call_piece(piece)
        return out + self._close_call(call)

    def _piece(self, piece: ToolCallPiece) -> bytes:
        live = self.live
        if not live.take(piece):
            return b""
        out = b""
        if live.opens(piece):
            out = self._open_call({"id": piece.id, "function": {"name": piece.name}})
        return out + self._call_piece(piece.arguments)

    def _calls(self, calls: list[dict[str, Any]]) -> bytes:
        """The complete calls: the open one closed, then the others, then what waited for them."""
        open_call, rest = self.live.finish(calls)
        out = self._close_call(open_call) if self.call is not None else self._close()
        for _, call, pieces in rest:
            out += self._whole_call(call, pieces)
        for item in self.live.later:
            out += self.event(item)
        self.live.later.clear()
        return out

    # ------------------------------------------------------------------- events

    def text(self, piece: str) -> bytes:
        """The hot path: the delta event's bytes around the piece are built once per message item."""
        out = b"" if self.open is not None and self.open["type"] == "message" else self._open_message()
        self.pieces.append(piece)
        sequence = self.sequence
        self.sequence += 1
        return out + self.delta_head + orjson.dumps(piece) + _DELTA_TAIL + str(sequence).encode() + b"}\n\n"

    def reasoning(self, piece: str) -> bytes:
        out = b""
        if self.open is None or self.open["type"] != "reasoning":
            out = self._close() + self._open(reasoning_item(new_item_id("rs_"), ""))
        self.pieces.append(piece)
        place = {"item_id": self.open["id"], "output_index": len(self.output) - 1, "content_index": 0}  # type: ignore[index]
        return out + self._sse("response.reasoning_text.delta", {**place, "delta": piece})

    def event(self, item: Any) -> bytes:
        """One upstream event as its SSE events (``b""`` when it adds none)."""
        if type(item) is str:
            return b"" if self.call is not None and self.live.hold(item) else self.text(item)
        if isinstance(item, ToolCallPiece):
            return self._piece(item)
        if isinstance(item, Reasoning):
            return b"" if self.call is not None and self.live.hold(item) else self.reasoning(item.token)
        if isinstance(item, ToolCalls):
            return self._calls(item.calls)
        if isinstance(item, Usage):
            self.usage = item
        elif isinstance(item, FinishReason):
            self.reason = item.reason
        elif isinstance(item, ImageResponse):
            return self.text(str(item))
        elif isinstance(item, ProviderInfo):
            pass
        elif isinstance(item, str):
            return self.text(str(item))
        return b""

    def end(self) -> bytes:
        """The open item's closing events, then ``response.completed`` (or ``response.incomplete``)."""
        out = self._calls([]) if self.call is not None else self._close()
        status, incomplete = _status(self.reason, self.calls)
        self.final = self._object(status, output=self.output, usage=usage_dict(self.usage), incomplete=incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._sse(kind, {"response": self.final})

    def error(self, problem: Problem) -> bytes:
        """A failure after ``response.created`` (a :class:`~llmrelay.server.problems.Problem`: ``code``,
        ``message``): ``response.failed``, then the stream ends."""
        code, message = problem.code, problem.message
        item = self.open
        if item is not None:  # what was streamed of it, marked incomplete
            text = "".join(self.pieces)
            partial = (
                reasoning_item(item["id"], text) if item["type"] == "reasoning" else message_item(item["id"], text)
            )
            self.output[-1] = {**partial, "status": "incomplete"}
        call = self.call
        if call is not None:  # the call being streamed, with what its deltas carried
            field = "input" if call.decoder is not None else "arguments"
            self.output[call.index] = {**call.item, field: "".join(call.sent), "status": "incomplete"}
            self.call = None
        failed = self._object(
            "failed", output=self.output, usage=usage_dict(self.usage), error={"code": code, "message": message}
        )
        self.open = None
        return self._sse("response.failed", {"response": failed})


class _OpenCall:
    """A call item being streamed: its place, the item as announced, what its deltas carried."""

    __slots__ = ("decoder", "index", "item", "raw", "sent")

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        self.item = item
        self.decoder = InputDecoder() if item["type"] == "custom_tool_call" else None
        self.raw: list[str] = []  # the arguments pieces
        self.sent: list[str] = []  # what the delta events carried
