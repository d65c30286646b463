"""The events a provider yields besides plain ``str`` text.

Each event is a small class with a readable ``repr`` and ``to_dict()``. ``str()``
of every event is ``""`` except :class:`ImageResponse` (Markdown image links),
so ``print(chunk, end="")`` over a stream prints just the answer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Union

__all__ = [
    "Answer",
    "event_from_cache",
    "event_to_cache",
    "AudioResponse",
    "FinishReason",
    "ImageResponse",
    "ProviderInfo",
    "Reasoning",
    "ResponseType",
    "ToolCallPiece",
    "ToolCalls",
    "Usage",
]


class _Event:
    __slots__: ClassVar[tuple[str, ...]] = ()
    # How the event is stored in the gateway's response cache: ``[tag, *its cached fields]`` (see event_to_cache).
    tag: ClassVar[str] = ""
    cached: ClassVar[tuple[str, ...]] = ()

    def to_cache(self) -> list[Any]:
        return [self.tag, *[getattr(self, name) for name in self.cached]]

    @classmethod
    def from_cache(cls, data: list[Any]) -> Any:
        return cls(*data[1:])

    def __str__(self) -> str:
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


class ProviderInfo(_Event):
    """Who answers: sent once, before the first text, with the model, response id and time the server reports."""

    __slots__ = ("created", "id", "model", "name", "system_fingerprint", "url")
    tag, cached = "i", ("name", "model")

    def __init__(
        self,
        name: str,
        model: str,
        url: str,
        id: str | None = None,  # the server's response id
        created: int | None = None,
        system_fingerprint: str | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.url = url
        self.id = id
        self.created = created
        self.system_fingerprint = system_fingerprint

    @classmethod
    def from_cache(cls, data: list[Any]) -> ProviderInfo:
        return cls(data[1], data[2], "cache")


class Reasoning(_Event):
    """A piece of the model's reasoning text (``reasoning_content`` / ``reasoning``)."""

    __slots__ = ("token",)
    tag, cached = "r", ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


class ToolCalls(_Event):
    """The complete tool calls of the answer, sent once after the text.

    Each call is ``{"id", "type": "function", "function": {"name", "arguments"}}``
    with ``arguments`` a JSON string.
    """

    __slots__ = ("calls",)
    tag, cached = "c", ("calls",)

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls


class ToolCallPiece(_Event):
    """A piece of a tool call's arguments as the upstream streams it (only when asked for: ``tool_call_pieces=True``).

    ``index`` numbers the calls in the order they appear (the call's position in the final :class:`ToolCalls`);
    ``id`` and ``name`` are the ones the final ``ToolCalls`` gives that call. A call's first piece comes when its
    name is known (``arguments`` may be ``""`` then); each later piece is one upstream arguments piece. Joined in
    order, a call's pieces are its final ``arguments``. The complete ``ToolCalls`` still comes once at the end.
    """

    __slots__ = ("arguments", "id", "index", "name")
    tag, cached = "p", ("index", "id", "name", "arguments")

    def __init__(self, index: int, id: str, name: str, arguments: str) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.arguments = arguments


class Usage(_Event):
    """Token counts the server reported (the last non-null usage seen; never summed)."""

    __slots__ = ("completion_tokens", "details", "prompt_tokens", "total_tokens")
    tag = "u"

    def __init__(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        total_tokens: int | None = None,
        **details: Any,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = prompt_tokens + completion_tokens if total_tokens is None else total_tokens
        self.details = details

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        data = dict(data)
        prompt = data.pop("prompt_tokens", None) or 0
        completion = data.pop("completion_tokens", None) or 0
        total = data.pop("total_tokens", None)
        return cls(prompt, completion, total, **data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            **self.details,
        }

    def to_cache(self) -> list[Any]:
        return [self.tag, self.to_dict()]

    @classmethod
    def from_cache(cls, data: list[Any]) -> Usage:
        return cls.from_dict(data[1])

    def __getattr__(self, name: str) -> Any:
        details = object.__getattribute__(self, "details")
        if name in details:
            return details[name]
        raise AttributeError(name)


class FinishReason(_Event):
    """Why the answer ended (``stop``, ``length``, ``tool_calls``, ``content_filter`` …); always the last event."""

    __slots__ = ("reason",)
    tag, cached = "f", ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class ImageResponse(_Event):
    """Generated images as URLs or data URIs; ``str()`` is Markdown image links."""

    __slots__ = ("alt", "images")
    tag, cached = "m", ("images", "alt")

    def __init__(self, images: list[str] | str, alt: str = "") -> None:
        self.images = [images] if isinstance(images, str) else list(images)
        self.alt = alt

    def __str__(self) -> str:
        alt = self.alt.replace("[", "(").replace("]", ")").replace("\n", " ")
        return "\n".join(f"![{alt}]({image})" for image in self.images) + "\n"


class AudioResponse(_Event):
    """Generated audio: base64 ``data`` and its ``transcript``."""

    __slots__ = ("data", "transcript")
    tag, cached = "a", ("data", "transcript")

    def __init__(self, data: str, transcript: str = "") -> None:
        self.data = data
        self.transcript = transcript


_BY_TAG: dict[str, type[_Event]] = {
    cls.tag: cls
    for cls in (ProviderInfo, Reasoning, ToolCalls, ToolCallPiece, Usage, FinishReason, ImageResponse, AudioResponse)
}


def event_to_cache(item: Any) -> list[Any]:
    """One provider event (``str`` text or an event above) as JSON-able data: ``[tag, *fields]``."""
    if type(item) is str:
        return ["t", item]
    if isinstance(item, _Event):
        return item.to_cache()
    return ["t", str(item)]


def event_from_cache(data: list[Any]) -> Any:
    """The event :func:`event_to_cache` stored (a cached ``ProviderInfo`` has the url ``"cache"``)."""
    tag = data[0]
    if tag == "t":
        return data[1]
    return _BY_TAG.get(tag, ProviderInfo).from_cache(data)


ResponseType = Union[
    ProviderInfo, Reasoning, ToolCalls, ToolCallPiece, Usage, FinishReason, ImageResponse, AudioResponse
]


class Answer:
    """A whole answer folded from a stream of events: the one place that says what an answer is.

    ``add(event)`` takes every item a provider yields (``str`` text and the events
    above) in order; the client, the CLI and the gateway read the fields. The
    finish reason is ``tool_calls`` when calls were produced and the server said
    ``stop`` or nothing; ``stop`` when it sent none at all.
    """

    __slots__ = ("audio", "calls", "images", "info", "reason", "reasoning", "text", "usage")

    def __init__(self) -> None:
        self.info: ProviderInfo | None = None
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict[str, Any]] | None = None
        self.images: list[str] = []
        self.audio: AudioResponse | None = None
        self.usage: Usage | None = None
        self.reason: str | None = None

    def add(self, item: Any) -> None:
        """Fold one item of a provider's stream into the answer."""
        if type(item) is str:
            self.text.append(item)
        elif isinstance(item, ProviderInfo):
            if self.info is None:
                self.info = item
        elif isinstance(item, Reasoning):
            self.reasoning.append(item.token)
        elif isinstance(item, ToolCalls):
            self.calls = item.calls
        elif isinstance(item, Usage):
            self.usage = item
        elif isinstance(item, FinishReason):
            self.reason = item.reason
        elif isinstance(item, ImageResponse):
            self.images.extend(item.images)
            self.text.append(str(item))
        elif isinstance(item, AudioResponse):
            self.audio = item
        elif isinstance(item, str):  # a str subclass is still text
            self.text.append(str(item))

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def reasoning_content(self) -> str | None:
        return "".join(self.reasoning) or None

    @property
    def finish_reason(self) -> str:
        return finish_reason(self.reason, bool(self.calls))


def finish_reason(reason: str | None, has_calls: bool) -> str:
    """The finish reason to report: ``tool_calls`` when calls were produced and the server said ``stop`` or nothing."""
    if has_calls and reason in (None, "stop"):
        return "tool_calls"
    return reason or "stop"
