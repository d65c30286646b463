"""The gateway's front doors: each one a module of pure translators between an API shape and the neutral call.

A door module (``chat``, ``images`` …) defines, with no I/O and no aiohttp:

* ``parse(body: dict) -> DoorRequest`` — the request body as the neutral :class:`~llmrelay.client.convert.ChatCall`
  (``.call``) plus what was dropped (``.drop(name, param)``) and whatever the door needs to render later; raises
  :class:`~llmrelay.errors.InvalidRequestError` (``param`` names the field) for a body it cannot take;
* ``answer(req, answer: Answer, model: str) -> dict`` — the whole (non-streamed) answer as the door's JSON;
* ``renderer(req, info: ProviderInfo | None, model: str) -> Renderer`` — one object per stream (:class:`Renderer`);
* ``error_body(problem: Problem) -> dict`` — an error in the door's shape.

and optionally ``async def handle(pipeline, x)`` when it is not a plain chat-like door (images, stored responses,
count_tokens): see /work/notes/DOORS_API.md and :mod:`llmrelay.server.pipeline`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...client.convert import ChatCall
from ...responses import Answer, ProviderInfo
from ..problems import Problem

__all__ = ["ChatDoor", "Door", "DoorRequest", "Renderer"]


class DoorRequest:
    """A parsed request: ``call`` (the neutral call every door builds), ``ignored`` (names for the
    ``x-llmrelay-ignored`` header, SPEC 9.1.4) with ``ignored_params`` (the request path of each, e.g.
    ``tools[3].type``, for ``strict_fields``' 400). Doors subclass it to keep what they render with."""

    def __init__(self, call: ChatCall) -> None:
        self.call = call
        self.ignored: list[str] = []
        self.ignored_params: list[str] = []

    def drop(self, name: str, param: str | None = None) -> None:
        """Record a field dropped because it only removes a service feature (named in ``x-llmrelay-ignored``;
        refused with 400 ``unknown_parameter`` when ``[server] strict_fields = true``)."""
        self.ignored.append(name)
        self.ignored_params.append(param or name)


class Renderer(Protocol):
    """One streamed answer in a door's shape. Each method returns the bytes to write (``b""``: nothing)."""

    keepalive: bytes  # written while the upstream is silent (``: keep-alive\\n\\n`` or an Anthropic ping)

    def start(self, first: Any) -> bytes:
        """Everything up to and including the first event (``None``: the upstream ended with no event)."""
        ...

    def event(self, item: Any) -> bytes:
        """One upstream event: ``str`` text, ``Reasoning``, ``ToolCallPiece`` (a tool call's arguments piece as it
        arrives, when the request has tools), ``ToolCalls`` (complete, once: render only the calls that came with
        no pieces), ``Usage``, ``FinishReason`` …"""
        ...

    def end(self) -> bytes:
        """After the last event (finish, usage, ``[DONE]`` …)."""
        ...

    def error(self, problem: Problem) -> bytes:
        """An in-band error after output started (the stream is closed after it)."""
        ...


class Door(Protocol):
    """What every door has: its error shape (a door module satisfies the protocol)."""

    def error_body(self, problem: Problem) -> dict[str, Any]: ...


class ChatDoor(Door, Protocol):
    """A door onto the chat operation: what :meth:`Pipeline.chat <llmrelay.server.pipeline.Pipeline.chat>` uses."""

    def parse(self, body: dict[str, Any]) -> DoorRequest: ...

    def answer(self, req: Any, answer: Answer, model: str) -> dict[str, Any]: ...

    def renderer(self, req: Any, info: ProviderInfo | None, model: str) -> Renderer: ...
