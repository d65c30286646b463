"""The OpenAI-shaped objects the client returns.

Two kinds of classes, both cheap to build (no validation, no pydantic):

* plain ``__slots__`` classes for the objects on the streaming hot path and the
  fixed envelope (:class:`ChatCompletionChunk`, :class:`ChunkChoice`,
  :class:`ChatCompletion`, :class:`Choice`);
* thin dict-backed wrappers (:class:`DictObject`) for everything whose keys vary
  by provider (messages, deltas, tool calls, usage, models, images): attribute
  access reads the dict, nested dicts and lists of dicts are wrapped on first
  access, a documented field the server did not send reads as ``None``.

``to_dict()`` always returns a fresh deep copy in the JSON shape of the OpenAI
API; ``model_dump()`` / ``model_dump_json()`` are aliases for code written against
the ``openai`` SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MemberDescriptorType
from typing import Any, ClassVar

import orjson

from .convert import chunk_dict

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "DictObject",
    "Embedding",
    "EmbeddingUsage",
    "Function",
    "Image",
    "ImagesResponse",
    "Model",
    "ModelList",
]


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, scalars); much cheaper than ``copy.deepcopy``."""
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    if isinstance(value, OpenAIObject):
        return value.to_dict()
    return value


class OpenAIObject:
    """Base of every client object: ``to_dict()``, JSON, ``repr`` and equality by content."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self, **_: Any) -> str:
        """The object as compact JSON text (the OpenAI API's shape)."""
        return orjson.dumps(self.to_dict()).decode()

    def model_dump(self, **_: Any) -> dict[str, Any]:
        """Alias of :meth:`to_dict`, for code written against the ``openai`` SDK."""
        return self.to_dict()

    def model_dump_json(self, **_: Any) -> str:
        """Alias of :meth:`to_json`, for code written against the ``openai`` SDK."""
        return self.to_json()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


class DictObject(OpenAIObject):
    """Attribute access over a JSON object (``obj.name`` reads ``data["name"]``).

    Nested objects are wrapped on first access (the class named in ``_nested``,
    else :class:`DictObject`) and cached; a name in ``_fields`` that the data
    lacks reads as ``None``; any other missing name raises ``AttributeError``.
    Setting an attribute writes the data.
    """

    __slots__ = ("_cache", "_data")
    _fields: ClassVar[frozenset[str]] = frozenset()
    _nested: ClassVar[dict[str, type[DictObject]]] = {}

    def __init__(self, data: dict[str, Any]) -> None:
        _set_data(self, data)  # the slot's own setter: __setattr__ writes the data, and this is the hot path

    def __getattr__(self, name: str) -> Any:
        if name[:1] == "_":  # private names, and the cache slot before its first use
            raise AttributeError(name)
        try:
            value = self._data[name]
        except KeyError:
            if name in self._fields:
                return None
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None
        if type(value) is dict or type(value) is list:
            try:
                cache = self._cache
            except AttributeError:
                cache = {}
                _set_cache(self, cache)
            if name in cache:
                return cache[name]
            wrapper = self._nested.get(name, DictObject)
            if type(value) is dict:
                value = wrapper(value)
            else:
                value = [wrapper(item) if type(item) is dict else item for item in value]
            cache[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name[:1] == "_" or type(getattr(type(self), name, None)) is MemberDescriptorType:
            object.__setattr__(self, name, value)  # a slot of the object itself (also: unpickling)
            return
        if isinstance(value, OpenAIObject):
            value = value.to_dict()
        elif type(value) is list:
            value = [item.to_dict() if isinstance(item, OpenAIObject) else item for item in value]
        self._data[name] = value
        try:
            self._cache.pop(name, None)
        except AttributeError:
            pass

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:
        """``getattr(obj, name, default)`` for keys that may be absent."""
        return getattr(self, name) if name in self._data else default

    def to_dict(self) -> dict[str, Any]:
        return _copy(self._data)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._data, *self._fields})


_set_data = DictObject._data.__set__  # type: ignore[attr-defined]
_set_cache = DictObject._cache.__set__  # type: ignore[attr-defined]


def _field(name: str) -> property:
    """A fast read-only accessor for a scalar field (skips ``__getattr__``'s failed lookup)."""

    def get(self: DictObject) -> Any:
        return self._data.get(name)

    return property(get, doc=f"``{name}``, or None when absent")


# ------------------------------------------------------------------ chat objects


class Function(DictObject):
    """``{"name", "arguments"}`` of a tool call; ``arguments`` is a JSON string."""

    __slots__ = ()
    _fields = frozenset(("name", "arguments"))


class ChatCompletionMessageToolCall(DictObject):
    """``{"id", "type": "function", "function": {"name", "arguments"}}``."""

    __slots__ = ()
    _fields = frozenset(("id", "type", "function"))
    _nested: ClassVar[dict[str, type[DictObject]]] = {"function": Function}


class ChatCompletionMessage(DictObject):
    """The assistant's message: ``role``, ``content``, ``refusal``, and ``tool_calls`` /
    ``reasoning_content`` / ``audio`` when the answer had them."""

    __slots__ = ()
    _fields = frozenset(
        ("role", "content", "refusal", "reasoning_content", "tool_calls", "audio", "function_call", "annotations")
    )
    _nested: ClassVar[dict[str, type[DictObject]]] = {"tool_calls": ChatCompletionMessageToolCall}
    role = _field("role")
    content = _field("content")
    refusal = _field("refusal")
    reasoning_content = _field("reasoning_content")

    def to_param(self) -> dict[str, Any]:
        """The message as a request message: every non-null field (``content`` is always kept)."""
        return {key: _copy(value) for key, value in self._data.items() if value is not None or key == "content"}


class ChoiceDeltaToolCallFunction(DictObject):
    """A streamed piece of a tool call's function: ``name`` and/or ``arguments``."""

    __slots__ = ()
    _fields = frozenset(("name", "arguments"))


class ChoiceDeltaToolCall(DictObject):
    """A streamed tool call: ``index``, ``id``, ``type``, ``function``."""

    __slots__ = ()
    _fields = frozenset(("index", "id", "type", "function"))
    _nested: ClassVar[dict[str, type[DictObject]]] = {"function": ChoiceDeltaToolCallFunction}


class ChoiceDelta(DictObject):
    """What one chunk adds to the message (only the keys it carries appear in ``to_dict()``)."""

    __slots__ = ()
    _fields = frozenset(("role", "content", "refusal", "reasoning_content", "tool_calls", "audio", "function_call"))
    _nested: ClassVar[dict[str, type[DictObject]]] = {"tool_calls": ChoiceDeltaToolCall}
    role = _field("role")
    content = _field("content")
    refusal = _field("refusal")
    reasoning_content = _field("reasoning_content")


class CompletionUsage(DictObject):
    """Token counts: ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` and whatever details
    the server sent (``prompt_tokens_details.cached_tokens`` …)."""

    __slots__ = ()
    _fields = frozenset(
        ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details")
    )
    prompt_tokens = _field("prompt_tokens")
    completion_tokens = _field("completion_tokens")
    total_tokens = _field("total_tokens")


class Choice(OpenAIObject):
    """One choice of a :class:`ChatCompletion` (the client always returns exactly one)."""

    __slots__ = ("finish_reason", "index", "message")
    logprobs: ClassVar[None] = None

    def __init__(self, index: int, message: ChatCompletionMessage, finish_reason: str | None) -> None:
        self.index = index
        self.message = message
        self.finish_reason = finish_reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "message": self.message.to_dict(),
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }


class ChatCompletion(OpenAIObject):
    """A whole answer, as ``chat.completions.create(stream=False)`` returns it.

    ``provider`` (not part of ``to_dict()``) names the provider that answered;
    ``model`` is the model the server reported.
    """

    __slots__ = ("choices", "created", "id", "model", "provider", "usage")
    object: ClassVar[str] = "chat.completion"
    system_fingerprint: ClassVar[None] = None
    service_tier: ClassVar[None] = None

    def __init__(
        self,
        id: str,
        created: int,
        model: str,
        choices: list[Choice],
        usage: CompletionUsage | None = None,
        provider: str | None = None,
    ) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.choices = choices
        self.usage = usage
        self.provider = provider

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice.to_dict() for choice in self.choices],
        }
        if self.usage is not None:
            data["usage"] = self.usage.to_dict()
        return data


class ChunkChoice(OpenAIObject):
    """One choice of a :class:`ChatCompletionChunk`: the ``delta`` and, on the last chunk, ``finish_reason``."""

    __slots__ = ("delta", "finish_reason", "index")
    logprobs: ClassVar[None] = None

    def __init__(self, index: int, delta: ChoiceDelta, finish_reason: str | None = None) -> None:
        self.index = index
        self.delta = delta
        self.finish_reason = finish_reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "delta": self.delta.to_dict(),
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }


class ChatCompletionChunk(OpenAIObject):
    """One piece of a streamed answer.

    ``usage`` is set on the final usage chunk (whose ``choices`` is empty);
    ``provider`` (not part of ``to_dict()``) names the provider that answered.
    """

    __slots__ = ("_usage_key", "choices", "created", "id", "model", "provider", "usage")
    object: ClassVar[str] = "chat.completion.chunk"
    system_fingerprint: ClassVar[None] = None
    service_tier: ClassVar[None] = None

    def __init__(
        self,
        id: str,
        created: int,
        model: str,
        choices: list[ChunkChoice],
        usage: CompletionUsage | None = None,
        provider: str | None = None,
        usage_key: bool = False,
    ) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.choices = choices
        self.usage = usage
        self.provider = provider
        self._usage_key = usage_key  # emit "usage": null, as OpenAI does on every chunk when usage was asked for

    def to_dict(self) -> dict[str, Any]:
        return chunk_dict(
            self.id,
            self.created,
            self.model,
            [choice.to_dict() for choice in self.choices],
            self.usage.to_dict() if self.usage is not None else None,
            self._usage_key,
        )


# ------------------------------------------------------------- models and images


class Model(DictObject):
    """A model the provider lists: ``id``, ``object`` (``"model"``), ``created``, ``owned_by``."""

    __slots__ = ()
    _fields = frozenset(("id", "object", "created", "owned_by"))
    id = _field("id")
    owned_by = _field("owned_by")


class ModelList(OpenAIObject):
    """What ``models.list()`` returns: iterable over :class:`Model`, with ``data`` and ``object == "list"``."""

    __slots__ = ("data", "provider")
    object: ClassVar[str] = "list"

    def __init__(self, data: list[Model], provider: str | None = None) -> None:
        self.data = data
        self.provider = provider

    def __iter__(self) -> Iterator[Model]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Model:
        return self.data[index]

    def to_dict(self) -> dict[str, Any]:
        return {"object": "list", "data": [model.to_dict() for model in self.data]}


class Image(DictObject):
    """One generated image: ``url`` or ``b64_json`` (as the server sent it), maybe ``revised_prompt``."""

    __slots__ = ()
    _fields = frozenset(("url", "b64_json", "revised_prompt"))


class ImagesResponse(DictObject):
    """What ``images.generate()`` returns: the server's answer (``created``, ``data`` …) as sent.

    ``provider`` and ``model`` (not part of ``to_dict()``) say who made the images.
    """

    __slots__ = ("model", "provider")
    _fields = frozenset(("created", "data", "usage"))
    _nested: ClassVar[dict[str, type[DictObject]]] = {"data": Image}

    def __init__(self, data: dict[str, Any], provider: str | None = None, model: str | None = None) -> None:
        super().__init__(data)
        object.__setattr__(self, "provider", provider)
        object.__setattr__(self, "model", model)


# ------------------------------------------------------------------------ embeddings


class Embedding(DictObject):
    """One vector: ``index`` (its input's position), ``embedding`` (floats, or a base64 string), ``object``."""

    __slots__ = ()
    _fields = frozenset(("object", "index", "embedding"))
    index = _field("index")


class EmbeddingUsage(DictObject):
    """``prompt_tokens`` and ``total_tokens`` of an embeddings request."""

    __slots__ = ()
    _fields = frozenset(("prompt_tokens", "total_tokens"))
    prompt_tokens = _field("prompt_tokens")
    total_tokens = _field("total_tokens")


class CreateEmbeddingResponse(DictObject):
    """What ``embeddings.create()`` returns: ``object`` (``"list"``), ``data`` (:class:`Embedding`, in input
    order), ``model``, ``usage``. ``provider`` (not part of ``to_dict()``) says who answered."""

    __slots__ = ("provider",)
    _fields = frozenset(("object", "data", "model", "usage"))
    _nested: ClassVar[dict[str, type[DictObject]]] = {"data": Embedding, "usage": EmbeddingUsage}

    def __init__(self, data: dict[str, Any], provider: str | None = None) -> None:
        super().__init__(data)
        object.__setattr__(self, "provider", provider)
