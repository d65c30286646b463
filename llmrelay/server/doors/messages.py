"""The Anthropic Messages door, ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (SPEC 9.3).

The translators are pure (:mod:`.anthropic_request`, :mod:`.anthropic_response`); ``handle`` and ``count_tokens``
are the wiring: the chat operation of the pipeline, and a token count that sends no chat request upstream and takes
no place under the key's limits (9.3.4).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ...errors import RelayError
from ...responses import Answer, ProviderInfo
from ..problems import Problem
from .anthropic_request import MessagesRequest, parse_count_request, parse_request
from .anthropic_response import MessageStream, error_object, message_object

if TYPE_CHECKING:
    from aiohttp import web

    from ..exchange import Exchange
    from ..pipeline import Pipeline

__all__ = ["answer", "error_body", "handle", "count_tokens", "parse", "renderer"]

ESTIMATE_HEADER = "x-llmrelay-token-count"


def parse(body: dict[str, Any]) -> MessagesRequest:
    return parse_request(body)


def answer(req: MessagesRequest, answer: Answer, model: str) -> dict[str, Any]:
    return message_object(answer, model, req.tokens())


def renderer(req: MessagesRequest, info: ProviderInfo | None, model: str) -> MessageStream:
    return MessageStream(model, req.tokens(), req.request_id)


def error_body(problem: Problem) -> dict[str, Any]:
    return error_object(problem.status, problem.message, problem.param, problem.request_id)


async def _count(pipeline: Pipeline, x: Exchange, req: MessagesRequest) -> int | None:
    """The exact prompt tokens where the first target's provider can count them, else ``None``."""
    plan = pipeline.check(x, req.call.model)
    target = plan.targets[0]
    cls = pipeline.provider_class(target.provider)
    choice = req.call.options.get("tool_choice")
    extra = {"tool_choice": choice} if choice is not None else {}
    counted: int | None = await cls.count_tokens_async(target.model, req.call.messages, req.tools or None, **extra)
    return counted


async def handle(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    req = parse(await x.body())
    req.request_id = x.entry.request_id
    if req.call.stream:  # message_start carries the count: exact where the provider can count (local)
        try:
            req.input_tokens = await _count(pipeline, x, req)
        except RelayError:
            pass  # then the estimate: a count that failed does not fail the answer
    return await pipeline.chat(x, sys.modules[__name__], req)


async def count_tokens(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    req = parse_count_request(await x.body())
    if req.ignored:
        pipeline._ignore(x, req)  # named, or refused under strict_fields, as for a chat call
    exact = await _count(pipeline, x, req)
    if exact is not None:
        return x.json({"input_tokens": exact})
    return x.json({"input_tokens": req.tokens()}, headers={ESTIMATE_HEADER: "estimate"})
