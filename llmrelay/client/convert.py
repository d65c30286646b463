"""Between a provider's events and OpenAI's JSON shapes, both ways: the one place those rules live.

* Requests: :func:`chat_call_from_json` checks an OpenAI chat request body (the
  gateway's input) and :func:`provider_options` turns OpenAI parameters into the
  keywords of ``OpenaiTemplate.create_async_generator`` (the client's and the
  gateway's path alike).
* Whole answers: :func:`message_dict` and :func:`completion_dict` give the
  ``chat.completion`` JSON of an :class:`~llmrelay.responses.Answer` (:func:`completion_from_events`: of a
  non-streamed answer's events).
* Streams: a :class:`StreamShape` gives the delta each event adds and the
  ``chat.completion.chunk`` JSON around it, with one ``id``, ``created`` and
  ``model`` for the whole answer.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidRequestError
from ..responses import (
    Answer,
    AudioResponse,
    FinishReason,
    ImageResponse,
    ProviderInfo,
    Reasoning,
    ToolCallPiece,
    ToolCalls,
    Usage,
    finish_reason,
)

__all__ = [
    "ChatCall",
    "StreamShape",
    "chat_call_from_json",
    "chunk_dict",
    "completion_dict",
    "completion_from_events",
    "message_dict",
    "model_choosing_fields",
    "new_id",
    "provider_options",
    "tool_call_dicts",
]

# The chat parameters that are named arguments of create_async_generator; the rest go in as keywords.
NAMED_PARAMETERS = ("temperature", "max_tokens", "top_p", "stop")
# Parameters checked for their JSON type in a request body (name -> (types, what to say)).
_NUMBER = ((int, float), "a number")
_INTEGER = ((int,), "an integer")
_PARAMETER_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "max_tokens": _INTEGER,
    "max_completion_tokens": _INTEGER,
    "n": _INTEGER,
    "seed": _INTEGER,
    "top_logprobs": _INTEGER,
    "stream": ((bool,), "a boolean"),
    "logprobs": ((bool,), "a boolean"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "stop": ((str, list), "a string or a list of strings"),
    "tools": ((list,), "a list"),
    "tool_choice": ((str, dict), "a string or an object"),
    "response_format": ((dict,), "an object"),
    "stream_options": ((dict,), "an object"),
    "logit_bias": ((dict,), "an object"),
    "metadata": ((dict,), "an object"),
    "user": ((str,), "a string"),
    "reasoning_effort": ((str,), "a string"),
}
# Fields the gateway sets itself from what it checked (the authorised model and messages, its own streaming and usage
# request, one choice): a caller's pass-through field (``extra_body`` or an unknown field) can never replace them.
RESERVED_FIELDS = ("model", "messages", "stream", "stream_options", "n")
# Fields with which an upstream chooses another model than the one named (OpenRouter's fallback list and its
# routing mode): a key limited to some models may not send them (the gateway checks them, SPEC 8.2 ``models``).
MODEL_CHOOSING_FIELDS = ("models", "route")


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex


# ------------------------------------------------------------------------------------ requests


class ChatCall:
    """One chat request as a provider call: ``provider.create_async_generator(model, messages, stream=stream,
    **options)``; ``include_usage``: whether the caller asked for a usage chunk at the end of a stream."""

    __slots__ = ("include_usage", "messages", "model", "options", "stream")

    def __init__(
        self, model: str, messages: list[dict[str, Any]], stream: bool, include_usage: bool, options: dict[str, Any]
    ) -> None:
        self.model = model
        self.messages = messages
        self.stream = stream
        self.include_usage = include_usage
        self.options = options


def _invalid(message: str, param: str | None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code, status=400)


def chat_call_from_json(body: Any) -> ChatCall:
    """An OpenAI ``/v1/chat/completions`` request body as a provider call.

    Raises :class:`~llmrelay.errors.InvalidRequestError` (``param`` names the field) for a body that is not an
    object, a missing ``model`` or ``messages``, parameters of the wrong JSON type, ``n`` other than 1, and an
    ``extra_body`` that is not an object or that names a field of :data:`RESERVED_FIELDS`. Fields this module does
    not know are passed on to the provider as they are (``extra_data``): never dropped. ``extra_body``'s fields are
    merged over the body's (as the OpenAI SDKs do before sending); ``stream_options`` only says whether the caller
    wants the usage chunk (the gateway always asks the upstream for usage, which its ``tpm`` limits count).
    """
    if type(body) is not dict:
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if type(model) is not str or not model:
        raise _invalid("'model' is required and must be a non-empty string", "model")
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        raise _invalid("'messages' is required and must be a non-empty list of message objects", "messages")
    for index, message in enumerate(messages):
        if type(message) is not dict or type(message.get("role")) is not str:
            raise _invalid(f"messages[{index}] must be an object with a string 'role'", f"messages[{index}]")
    _check_types(body, "")
    extra_body = body.get("extra_body")
    if extra_body is not None:
        if type(extra_body) is not dict:
            raise _invalid(
                f"'extra_body' must be an object of extra body fields, not {_json_type(extra_body)}", "extra_body"
            )
        for name in (*RESERVED_FIELDS, "extra_body"):
            if name in extra_body:
                raise _invalid(
                    f"'extra_body' may not set {name!r}: the gateway sends the {name} it checked; "
                    f"give {name!r} at the top level of the body",
                    f"extra_body.{name}",
                )
        _check_types(extra_body, "extra_body.")
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid(f"'n' must be 1, not {n}: one choice is answered; make several requests for more", "n")
    stream_options = body.get("stream_options")
    include_usage = bool(stream_options.get("include_usage")) if type(stream_options) is dict else False
    params = {name: value for name, value in body.items() if name not in RESERVED_FIELDS and name != "extra_body"}
    if extra_body:
        params.update(extra_body)
    options = provider_options(params, known_only=False)
    overriding = [name for name in RESERVED_FIELDS if name in options.get("extra_data", ())]
    if overriding:  # every path above refuses these first; this is the last word on what reaches the upstream
        raise _invalid(f"the body may not set {overriding[0]!r} outside its own field", overriding[0])
    return ChatCall(model, messages, body.get("stream") is True, include_usage, options)


def _json_type(value: Any) -> str:
    return {
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }.get(type(value), "null")


def _check_types(fields: dict[str, Any], prefix: str) -> None:
    """The JSON type of every parameter :data:`_PARAMETER_TYPES` names; ``param`` is ``prefix + name``."""
    for name, value in fields.items():
        expected = _PARAMETER_TYPES.get(name)
        if expected is None or value is None:
            continue
        types, what = expected
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise _invalid(f"'{prefix}{name}' must be {what}, not {_json_type(value)}", prefix + name)
        if type(value) is float and not math.isfinite(value):
            raise _invalid(f"'{prefix}{name}' must be a finite number", prefix + name)
        if name == "stop" and type(value) is list and not all(type(item) is str for item in value):
            raise _invalid(f"'{prefix}stop' must be a string or a list of strings", prefix + name)


def model_choosing_fields(options: Mapping[str, Any]) -> list[str]:
    """The :data:`MODEL_CHOOSING_FIELDS` a call's provider options carry (as keywords or in ``extra_data``)."""
    extra = options.get("extra_data") or {}
    return [name for name in MODEL_CHOOSING_FIELDS if options.get(name) is not None or extra.get(name) is not None]


def provider_options(params: Mapping[str, Any], known_only: bool = True) -> dict[str, Any]:
    """OpenAI chat parameters as provider keywords: ``extra_body`` becomes ``extra_data``; ``None`` values are left
    out (so the provider's defaults apply). With ``known_only=False`` (a request body from the wire), parameters the
    provider class does not name go into ``extra_data`` instead of raising ``TypeError``."""
    if not params:
        return {}
    n = params.get("n")
    if n is not None and n != 1:
        raise ValueError(f"n must be 1, not {n!r}: one choice is read; make several requests instead")
    options: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    known = _known_parameters()
    for name, value in params.items():
        if value is None:
            continue
        if name == "extra_body":
            if not isinstance(value, Mapping):
                raise TypeError(f"extra_body must be a dict of extra body fields, not {type(value).__name__}")
            extra.update(value)
        elif known_only or name in known:
            options[name] = value
        else:
            extra[name] = value
    if extra:
        options["extra_data"] = {**options.get("extra_data", {}), **extra}
    return options


_KNOWN: frozenset[str] = frozenset()


def _known_parameters() -> frozenset[str]:
    """The chat parameters providers take by name (read lazily: importing the providers imports aiohttp)."""
    global _KNOWN
    if not _KNOWN:
        from ..providers.template import OPENAI_PARAMETERS

        _KNOWN = frozenset((*NAMED_PARAMETERS, *OPENAI_PARAMETERS))
    return _KNOWN


# ------------------------------------------------------------------------------ whole answers


def tool_call_dicts(calls: list[dict[str, Any]], indexed: bool) -> list[dict[str, Any]]:
    """Tool calls in OpenAI's shape; ``indexed`` for stream deltas (each with its ``index``)."""
    result = []
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        item: dict[str, Any] = {"index": index} if indexed else {}
        item["id"] = call.get("id")
        item["type"] = call.get("type") or "function"
        item["function"] = {"name": function.get("name") or "", "arguments": function.get("arguments") or ""}
        result.append(item)
    return result


def message_dict(answer: Any) -> dict[str, Any]:
    """The assistant ``message`` of a ``chat.completion`` for an :class:`~llmrelay.responses.Answer`."""
    calls, audio = answer.calls, answer.audio
    content: str | None = answer.content if answer.text else (None if calls or audio else "")
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning_content
    if audio is not None:
        message["audio"] = {"data": audio.data, "transcript": audio.transcript}
    if calls:
        message["tool_calls"] = tool_call_dicts(calls, indexed=False)
    return message


def answer_identity(info: ProviderInfo | None, model: str) -> tuple[str, int, str]:
    """(id, created, model) of an answer: what the server reported, else a new id, now and the asked model."""
    if info is None:
        return new_id(), int(time.time()), model
    return info.id or new_id(), info.created or int(time.time()), info.model or model


def completion_dict(answer: Any, model: str) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` JSON of an :class:`~llmrelay.responses.Answer`."""
    return _completion(answer.info, model, message_dict(answer), answer.finish_reason, answer.usage)


def completion_from_events(events: list[Any], model: str) -> dict[str, Any]:
    """``completion_dict`` of the :class:`~llmrelay.responses.Answer` folded from ``events`` (a non-streamed
    answer's events, e.g. ``complete_events``'s). The common answer — provider info, text, usage, a finish reason —
    is read without building the ``Answer``; any other event folds the whole list into one."""
    info: ProviderInfo | None = None
    usage: Usage | None = None
    reason: str | None = None
    text: list[str] = []
    for item in events:
        kind = type(item)
        if kind is str:
            text.append(item)
        elif kind is ProviderInfo:
            if info is None:
                info = item
        elif kind is Usage:
            usage = item
        elif kind is FinishReason:
            reason = item.reason
        else:
            answer = Answer()
            for event in events:
                answer.add(event)
            return completion_dict(answer, model)
    message = {"role": "assistant", "content": "".join(text), "refusal": None}
    return _completion(info, model, message, finish_reason(reason, False), usage)


def _completion(
    info: ProviderInfo | None, model: str, message: dict[str, Any], finish: str, usage: Usage | None
) -> dict[str, Any]:
    response_id, created, model = answer_identity(info, model)
    data: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        data["usage"] = usage.to_dict()
    return data


# ------------------------------------------------------------------------------------ streams


def chunk_dict(
    response_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    usage_key: bool = False,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``usage_key``: write ``"usage": null`` when there is none (as OpenAI does on
    every chunk once usage was asked for)."""
    data: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        data["usage"] = usage
    elif usage_key:
        data["usage"] = None
    return data


class StreamShape:
    """What one streamed answer looks like in OpenAI's shape, event by event.

    ``role_delta(first)`` is the first chunk's delta; ``delta(item)`` the delta an event adds (``None`` for
    ``Usage`` / ``FinishReason``, which are kept for the end); ``finish_reason`` and ``usage`` are known once the
    events are read. ``chunk(delta)``, ``start(first)`` and ``end()`` give whole chunk dicts.
    """

    __slots__ = ("calls", "created", "id", "include_usage", "model", "pieced", "provider", "reason", "usage")

    def __init__(self, info: ProviderInfo | None, model: str, provider: str, include_usage: bool) -> None:
        self.id, self.created, self.model = answer_identity(info, model)
        self.provider = info.name if info is not None else provider
        self.include_usage = include_usage
        self.calls = False
        self.pieced: set[int] = set()  # the calls whose pieces were streamed (not repeated by ToolCalls)
        self.reason: str | None = None
        self.usage: Usage | None = None

    @staticmethod
    def role_delta(first: Any) -> dict[str, Any]:
        # OpenAI's first chunk: the role, with content "" before text and null before tool calls.
        content = None if isinstance(first, (ToolCalls, ToolCallPiece, Reasoning, AudioResponse)) else ""
        return {"role": "assistant", "content": content, "refusal": None}

    def delta(self, item: Any) -> dict[str, Any] | None:
        if type(item) is str:
            return {"content": item}
        if isinstance(item, Reasoning):
            return {"reasoning_content": item.token}
        if isinstance(item, ToolCallPiece):
            return {"tool_calls": [self._piece(item)]}
        if isinstance(item, ToolCalls):
            self.calls = True
            calls = tool_call_dicts(item.calls, indexed=True)
            if self.pieced:  # only the calls that came with no pieces
                calls = [call for call in calls if call["index"] not in self.pieced]
            return {"tool_calls": calls} if calls else None
        if isinstance(item, Usage):
            self.usage = item
        elif isinstance(item, ProviderInfo):
            pass
        elif isinstance(item, AudioResponse):
            return {"audio": {"data": item.data, "transcript": item.transcript}}
        elif isinstance(item, ImageResponse):
            return {"content": str(item)}
        elif isinstance(item, str):
            return {"content": str(item)}
        else:  # FinishReason
            self.reason = item.reason
        return None

    def _piece(self, piece: ToolCallPiece) -> dict[str, Any]:
        """One ``delta.tool_calls`` entry per piece: the call's first one with its ``id``, ``type`` and name."""
        self.calls = True
        if piece.index in self.pieced:
            return {"index": piece.index, "function": {"arguments": piece.arguments}}
        self.pieced.add(piece.index)
        function = {"name": piece.name, "arguments": piece.arguments}
        return {"index": piece.index, "id": piece.id, "type": "function", "function": function}

    @property
    def finish_reason(self) -> str:
        return finish_reason(self.reason, self.calls)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return chunk_dict(self.id, self.created, self.model, [choice], None, self.include_usage)

    def start(self, first: Any) -> list[dict[str, Any]]:
        """The role chunk, then the first event's chunk (if it adds a delta)."""
        chunks = [self.chunk(self.role_delta(first))]
        delta = self.delta(first)
        if delta is not None:
            chunks.append(self.chunk(delta))
        return chunks

    def end(self) -> list[dict[str, Any]]:
        """The finish chunk, then (when usage was asked for and is known) the usage chunk with ``choices: []``."""
        chunks = [self.chunk({}, self.finish_reason)]
        if self.include_usage and self.usage is not None:
            chunks.append(chunk_dict(self.id, self.created, self.model, [], self.usage.to_dict()))
        return chunks
