"""Shared helpers for the core tests: a provider pointed at the scripted server, and collectors."""

from __future__ import annotations

import asyncio
from typing import Any

from scripted_server import ScriptedServer

from llmrelay import OpenaiTemplate
from llmrelay.responses import FinishReason, ProviderInfo, Reasoning, ToolCalls, Usage

MESSAGES = [{"role": "user", "content": "Hi"}]
SECRET = "sk-test-SECRET-0123456789abcdef"

_counter = 0


def make_provider(server: ScriptedServer, **attributes: Any) -> type[OpenaiTemplate]:
    """A fresh ``OpenaiTemplate`` subclass aimed at ``server.base`` (attributes override the class defaults).

    Each call makes a class with a unique name, so env-var keys and caches never leak between tests.
    """
    global _counter
    _counter += 1
    namespace: dict[str, Any] = {"api_base": server.base, "default_model": "test-model", **attributes}
    return type(f"Scripted{_counter}", (OpenaiTemplate,), namespace)


async def acollect(provider: type[OpenaiTemplate], **kwargs: Any) -> list[Any]:
    kwargs.setdefault("model", "")
    kwargs.setdefault("messages", MESSAGES)
    return [item async for item in provider.create_async_generator(**kwargs)]


def collect(provider: type[OpenaiTemplate], **kwargs: Any) -> list[Any]:
    """Every item the provider yields for one call (default model, ``MESSAGES``), run with ``asyncio.run``."""
    return asyncio.run(acollect(provider, **kwargs))


def collect_error(provider: type[OpenaiTemplate], **kwargs: Any) -> tuple[list[Any], BaseException]:
    """The items yielded before the call raised, and the exception; fails if it did not raise."""
    items: list[Any] = []

    async def run() -> BaseException | None:
        kwargs.setdefault("model", "")
        kwargs.setdefault("messages", MESSAGES)
        try:
            async for item in provider.create_async_generator(**kwargs):
                items.append(item)
        except Exception as error:
            return error
        return None

    error = asyncio.run(run())
    assert error is not None, f"expected an error, got {items!r}"
    return items, error


def text_of(items: list[Any]) -> str:
    return "".join(item for item in items if isinstance(item, str))


def of_type(items: list[Any], cls: type) -> list[Any]:
    return [item for item in items if isinstance(item, cls)]


def kinds(items: list[Any]) -> list[str]:
    """A compact shape of an event list: ``["info", "text", "text", "usage", "finish"]``."""
    names = {ProviderInfo: "info", Reasoning: "reasoning", ToolCalls: "tools", Usage: "usage", FinishReason: "finish"}
    return ["text" if isinstance(item, str) else names.get(type(item), type(item).__name__) for item in items]


def assert_no_secret(error: BaseException, secret: str = SECRET) -> None:
    """The secret appears in none of the error's str, repr, message, body or args."""
    texts = [str(error), repr(error), *(str(arg) for arg in error.args)]
    for name in ("message", "body", "code", "type", "partial_text"):
        value = getattr(error, name, None)
        if value is not None:
            texts.append(str(value))
    for text in texts:
        assert secret not in text, text
