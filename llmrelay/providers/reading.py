"""Reading an answer: a JSON completion, an event stream or plain text becomes text pieces and typed events.

Both shapes go through one :class:`ChunkState`: a whole ``message`` is read as
one big ``delta``, so the rules for reasoning, refusals, tool calls, audio, usage
and the finish reason are written once (SPEC 2.6).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .._text import content_text, shorten
from ..errors import RelayError, ResponseError, StreamIncompleteError
from ..http.session import TRANSPORT_ERRORS, Response, stream_error
from ..http.sse import SSEDecoder
from ..http.status import error_from_data, redact_error
from ..responses import (
    AudioResponse,
    FinishReason,
    ProviderInfo,
    Reasoning,
    ToolCallPiece,
    ToolCalls,
    Usage,
    finish_reason,
)
from ..typing import AsyncResult

__all__ = ["FINISH_GRACE", "ChunkState", "ToolCallAccumulator", "read_answer", "read_body", "read_response"]

FINISH_GRACE = 0.5  # seconds to wait for a usage trailer after finish_reason when [DONE] does not come


async def read_response(response: Response, name: str, model: str, timeout: float, pieces: bool = False) -> AsyncResult:
    """The events of an answer, read by its content type (whatever ``stream`` asked for); releases the response.
    ``pieces``: a streamed answer also yields a :class:`ToolCallPiece` per tool-call arguments piece."""
    content_type = response.content_type
    if content_type == "text/event-stream":
        async for item in read_event_stream(response, name, model, timeout, pieces):
            yield item
        return
    if content_type == "application/json" or content_type.endswith("+json"):
        body = await read_body(response, name, timeout)
        for item in events_from_completion(body, name, model, response.url):
            yield item
    elif content_type == "text/plain":
        text = (await read_body(response, name, timeout)).decode("utf-8", "replace")
        yield ProviderInfo(name, model, response.url)
        if text:
            yield text
    else:
        await response.release()
        raise ResponseError(
            f"unexpected content type {content_type or '(none)'!r} from {response.url}",
            status=response.status,
            provider=name,
        )


async def read_answer(response: Response, name: str, model: str, timeout: float, pieces: bool = False) -> list[Any]:
    """Every event of an answer at once (what :func:`read_response` yields), for a caller that wants the whole
    answer: a JSON completion is read without an async generator."""
    content_type = response.content_type
    if content_type == "application/json" or content_type.endswith("+json"):
        body = await read_body(response, name, timeout)
        return events_from_completion(body, name, model, response.url)
    return [item async for item in read_response(response, name, model, timeout, pieces)]


async def read_body(response: Response, name: str, timeout: float) -> bytes:
    """The whole body, then the connection goes back to the pool; transport failures become llmrelay errors."""
    try:
        return await response.read()
    except TRANSPORT_ERRORS as error:
        raise stream_error(
            error,
            partial_text="",
            url=response.url,
            timeout=timeout,
            provider=name,
            total_timeout=response.total_timeout,
            deadline=response.deadline,
        ) from None
    finally:
        await response.release()


def provider_info(name: str, data: dict[str, Any], model: str, url: str) -> ProviderInfo:
    """``ProviderInfo`` from the first chunk (or the whole answer): the model, id and time the server reports."""
    response_id, created, fingerprint = data.get("id"), data.get("created"), data.get("system_fingerprint")
    return ProviderInfo(
        name,
        data.get("model") or model,
        url,
        response_id if isinstance(response_id, str) else None,
        created if isinstance(created, int) else None,
        fingerprint if isinstance(fingerprint, str) else None,
    )


class ChunkState:
    """What an answer has produced so far, fed delta by delta (a whole message is one delta).

    ``take_delta`` returns the items to yield now (text, reasoning, and with ``pieces`` each
    :class:`ToolCallPiece`); tool calls, audio, usage and the finish reason are kept and
    come out of ``trailer()`` at the end.
    """

    __slots__ = ("audio_data", "audio_transcript", "calls", "finish", "text", "usage")

    def __init__(self, pieces: bool = False) -> None:
        self.text: list[str] = []
        self.calls = ToolCallAccumulator(pieces)
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.audio_data: list[str] = []
        self.audio_transcript: list[str] = []

    def take_delta(self, delta: dict[str, Any]) -> list[Any]:
        items: list[Any] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            items.append(Reasoning(reasoning))
        content = delta.get("content")
        if content:
            if type(content) is not str:
                content = content_text(content)
            if content:
                self.text.append(content)
                items.append(content)
        refusal = delta.get("refusal")
        if refusal:
            self.text.append(refusal)
            items.append(refusal)
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            items.extend(self.calls.add(tool_calls))
        audio = delta.get("audio")
        if audio:
            self.audio_data.append(audio.get("data") or "")
            self.audio_transcript.append(audio.get("transcript") or "")
        return items

    def take_usage(self, obj: dict[str, Any]) -> None:
        """The chunk's usage (Groq's ``x_groq.usage`` too); the last one seen wins."""
        usage = obj.get("usage")
        if not usage and "x_groq" in obj:
            usage = (obj["x_groq"] or {}).get("usage")
        if usage:
            if type(usage) is not dict:
                raise TypeError
            self.usage = usage

    def trailer(self) -> list[Any]:
        """The events after the text: tool calls, audio, usage, and the finish reason last."""
        items: list[Any] = []
        if self.calls:
            items.append(ToolCalls(self.calls.result()))
        if self.audio_data or self.audio_transcript:
            items.append(AudioResponse("".join(self.audio_data), "".join(self.audio_transcript)))
        if self.usage:
            items.append(Usage.from_dict(self.usage))
        if self.finish or self.calls:
            items.append(FinishReason(finish_reason(self.finish, bool(self.calls))))
        return items


def events_from_completion(body: bytes, name: str, model: str, url: str) -> list[Any]:
    """The events of a whole (non-streamed) chat completion."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ResponseError(f"the answer is not valid JSON: {shorten(body)!r}", provider=name) from None
    if not isinstance(data, dict):
        raise ResponseError(f"unexpected answer: {shorten(body)!r}", provider=name)
    if data.get("error") is not None:
        raise error_from_data(data, provider=name) or ResponseError(shorten(body), provider=name)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise ResponseError(f"the answer is not a chat completion: {shorten(body)!r}", provider=name)
    events: list[Any] = [provider_info(name, data, model, url)]
    plain = _plain_answer(data, choices)
    if plain is not None:
        events.extend(plain)
        return events
    state = ChunkState()
    try:
        choice = choices[0] if choices else {}
        events.extend(state.take_delta(choice.get("message") or {}))
        state.take_usage(data)
        state.finish = choice.get("finish_reason")
        if state.usage is not None and type(state.usage) is not dict:
            raise TypeError
    except (AttributeError, TypeError, KeyError):
        raise ResponseError(f"the answer has an unexpected shape: {shorten(body)!r}", provider=name) from None
    events.extend(state.trailer())
    return events


_PLAIN_MESSAGE = frozenset(("role", "content", "refusal", "annotations"))


def _plain_answer(data: dict[str, Any], choices: list[Any]) -> list[Any] | None:
    """The events after ``ProviderInfo`` of the common answer — a message of text only, usage as an object or
    none — as :class:`ChunkState` would make them, without it; None for any other answer (read in full)."""
    choice = choices[0] if choices else None
    if type(choice) is not dict:
        return None
    message = choice.get("message")
    usage = data.get("usage")
    if (
        type(message) is not dict
        or not message.keys() <= _PLAIN_MESSAGE
        or message.get("refusal")
        or not (usage is None or type(usage) is dict)
        or (not usage and "x_groq" in data)
    ):
        return None
    content = message.get("content")
    if content is not None and type(content) is not str:
        return None
    events: list[Any] = [content] if content else []
    if usage:
        events.append(Usage.from_dict(usage))
    finish = choice.get("finish_reason")
    if finish:
        events.append(FinishReason(finish_reason(finish, False)))
    return events


async def read_event_stream(
    response: Response,
    name: str,
    model: str,
    timeout: float,
    pieces: bool = False,
    secrets: tuple[str | None, ...] = (),
) -> AsyncResult:
    """The events of a streamed answer (SPEC 2.6): text as it arrives, the rest at the end (``pieces``: tool-call
    arguments pieces as they arrive too). An error raised here has the ``secrets`` cut out of it."""
    try:
        url = response.url
        decoder = SSEDecoder()
        feed = decoder.feed
        read = response.read_chunk
        loads = orjson.loads
        state = ChunkState(pieces)
        text = state.text
        info_pending = True
        finished_at = 0.0
        complete = False
        try:
            while not complete:
                try:
                    if state.finish is None:
                        chunk = await read()
                    else:
                        remaining = finished_at + FINISH_GRACE - time.monotonic()
                        if remaining <= 0:
                            break
                        chunk = await _read_within(read, remaining)
                except TRANSPORT_ERRORS as error:  # includes the idle-read and grace-period timeouts
                    if state.finish is not None:
                        break  # finish_reason came: what is missing is at most the [DONE] / usage trailer
                    raise stream_error(
                        error,
                        partial_text="".join(text),
                        url=url,
                        timeout=timeout,
                        provider=name,
                        total_timeout=response.total_timeout,
                        deadline=response.deadline,
                    ) from None
                events = feed(chunk) if chunk else decoder.flush()
                try:
                    for event, data in events:
                        if event != b"message":
                            if event == b"error":
                                raise _stream_error_event(data, name)
                            continue
                        if not data:
                            continue
                        if data == b"[DONE]":
                            complete = True
                            break
                        try:
                            obj = loads(data)
                        except orjson.JSONDecodeError:
                            raise ResponseError(
                                f"a stream event is not JSON: {shorten(data)!r}", provider=name
                            ) from None
                        if type(obj) is not dict:
                            raise ResponseError(
                                f"a stream event is not a JSON object: {shorten(data)!r}", provider=name
                            )
                        if "error" in obj and obj["error"] is not None:
                            raise error_from_data(obj, provider=name) or ResponseError(shorten(data), provider=name)
                        if info_pending:
                            info_pending = False
                            yield provider_info(name, obj, model, url)
                        choices = obj.get("choices")
                        if choices:
                            choice = choices[0]
                            if choice.get("index", 0) != 0:
                                choice = next((c for c in choices if c.get("index", 0) == 0), None)
                            if choice:
                                delta = choice.get("delta")
                                if delta:
                                    content = delta.get("content")
                                    if content and type(content) is str and len(delta) == 1:  # the hot path
                                        text.append(content)
                                        yield content
                                    else:
                                        for item in state.take_delta(delta):
                                            yield item
                                reason = choice.get("finish_reason")
                                if reason and state.finish is None:
                                    state.finish = reason
                                    finished_at = time.monotonic()
                        if obj.get("usage") or "x_groq" in obj:  # OpenAI sends "usage": null on every chunk
                            state.take_usage(obj)
                except (AttributeError, TypeError, KeyError):
                    # A chunk whose choices / delta / usage are not the objects the API defines.
                    raise ResponseError(
                        f"a stream event has an unexpected shape: {shorten(data)!r}", provider=name
                    ) from None
                if not chunk:
                    break
            if not complete and state.finish is None:
                raise _incomplete(name, "".join(text))
        finally:
            await response.release(drain=complete)
        for item in state.trailer():
            yield item
    except RelayError as error:
        redact_error(error, secrets)
        raise


if sys.version_info >= (3, 11):

    async def _read_within(read: Callable[[], Awaitable[bytes]], seconds: float) -> bytes:
        """``await read()``, or ``asyncio.TimeoutError`` after ``seconds`` (no task per read, unlike ``wait_for``)."""
        async with asyncio.timeout(seconds):
            return await read()

else:  # Python 3.10

    async def _read_within(read: Callable[[], Awaitable[bytes]], seconds: float) -> bytes:
        return await asyncio.wait_for(read(), seconds)


def _take_call_delta(call: dict[str, Any], delta: dict[str, Any]) -> str:
    """Fold one delta into its call; the arguments piece it brought (``""``: none)."""
    call_id = delta.get("id")
    if call_id:
        call["id"] = call_id
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function")
    if not function:
        return ""
    name = function.get("name")
    if name and name != call["name"]:
        call["name"] = call["name"] + name if call["name"] else name
    arguments = function.get("arguments")
    if arguments is None:
        return ""
    piece = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    call["arguments"].append(piece)
    return piece


def _incomplete(name: str, partial: str) -> RelayError:
    return StreamIncompleteError(
        f"the stream ended before the answer was complete (no finish_reason, no [DONE]) after {len(partial)} characters",
        partial_text=partial,
        provider=name,
    )


def _stream_error_event(data: bytes, name: str) -> RelayError:
    try:
        obj = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        obj = None
    if obj is not None:
        error = error_from_data(obj, provider=name)
        if error is not None:
            return error
    return ResponseError(f"the server sent an error event: {shorten(data)!r}", provider=name)


class ToolCallAccumulator:
    """Joins streamed tool-call deltas into complete calls (a whole message's calls are one delta list).

    With ``index``, deltas of one index belong to one call. Without it, a delta
    with a new ``id`` starts a call, and a delta without ``id`` continues the call
    last started at the same position of the delta list. Arguments sent as JSON
    objects become JSON strings; a call without an id gets ``call_<n>``.

    With ``pieces``, ``add`` also makes a :class:`ToolCallPiece` per arguments piece as it arrives: a call's first
    one once its name is known (with the arguments so far), then one per non-empty piece. Its id is fixed then (the
    upstream's, else ``call_<n>``), so the final calls keep the id their pieces announced.
    """

    __slots__ = ("_by_key", "_by_position", "_calls", "pieces")

    def __init__(self, pieces: bool = False) -> None:
        self.pieces = pieces
        self._calls: list[dict[str, Any]] = []
        self._by_key: dict[Any, dict[str, Any]] = {}
        self._by_position: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: list[dict[str, Any]]) -> list[ToolCallPiece]:
        """Take one delta list; the :class:`ToolCallPiece` events it makes (none unless ``pieces``)."""
        made: list[ToolCallPiece] = []
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                raise TypeError("a tool call is not an object")
            call = self._call_of(position, delta)
            piece = _take_call_delta(call, delta)
            if self.pieces and call["name"]:
                shown = call["shown"]
                if shown is None:  # the call's first piece: its id and name are fixed from here on
                    shown = call["shown"] = call["id"] or f"call_{call['n']}"
                    made.append(ToolCallPiece(call["n"], shown, call["name"], "".join(call["arguments"])))
                elif piece:
                    made.append(ToolCallPiece(call["n"], shown, call["name"], piece))
        return made

    def _call_of(self, position: int, delta: dict[str, Any]) -> dict[str, Any]:
        """The call a delta belongs to (a new one when it starts a call)."""
        call_id = delta.get("id")
        index = delta.get("index")
        if index is not None:
            key: Any = ("index", index)
        elif call_id:
            key = ("id", call_id)
        else:
            current = self._by_position.get(position)
            key = None if current is None else current["_key"]
        call = self._by_key.get(key) if key is not None else None
        if call is not None and call_id and call["id"] and call_id != call["id"]:
            call = None  # a new id at a used index: a new call (servers that send every call as index 0)
        if call is None:
            key = key if key is not None else ("position", position, len(self._calls))
            call = {"_key": key, "n": len(self._calls), "id": "", "type": "function", "name": "", "arguments": []}
            call["shown"] = None  # the id its pieces announced (with ``pieces``)
            self._by_key[key] = call
            self._calls.append(call)
        self._by_position[position] = call
        return call

    def result(self) -> list[dict[str, Any]]:
        return [
            {
                "id": call["shown"] or call["id"] or f"call_{number}",
                "type": call["type"],
                "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
            }
            for number, call in enumerate(self._calls)
        ]
