"""The Responses API door, ``POST /v1/responses`` and its stored responses (SPEC 9.2).

The translators live beside it (:mod:`.responses_request`, :mod:`.responses_render`, :mod:`.responses_store`);
this module is the door's wiring: the chat operation through the pipeline, and the stored responses kept in the
gateway's :class:`~llmrelay.server.state.State` per gateway key (``GET`` / ``DELETE /v1/responses/{id}``,
``GET /v1/responses/{id}/input_items``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import orjson

from ...responses import Answer, ProviderInfo
from ..problems import GatewayError
from . import responses_render
from .responses_render import ResponsesRenderer
from .responses_request import ResponsesRequest, with_history
from .responses_request import parse as parse_request
from .responses_store import RESPONSE_ID, conversation, input_items_page, record, stored_response

if TYPE_CHECKING:
    from aiohttp import web

    from ..exchange import Exchange
    from ..pipeline import Finished, Pipeline

__all__ = ["answer", "delete", "error_body", "handle", "input_items", "parse", "renderer", "retrieve"]


def parse(body: dict[str, Any]) -> ResponsesRequest:
    return parse_request(body)


def answer(req: ResponsesRequest, whole: Answer, model: str) -> dict[str, Any]:
    req.result = responses_render.answer(req, whole, model)
    return req.result


def renderer(req: ResponsesRequest, info: ProviderInfo | None, model: str) -> ResponsesRenderer:
    req.renderer = ResponsesRenderer(req, info, model)
    return req.renderer


error_body = responses_render.error_body


def _scope(x: Exchange) -> str:
    """Stored responses belong to the gateway key that made them (one anonymous scope when no key is set)."""
    return x.key.name if x.key is not None else ""


async def _stored(pipeline: Pipeline, x: Exchange, response_id: str) -> bytes | None:
    if not RESPONSE_ID.fullmatch(response_id):
        return None
    return await pipeline.state.response_get(_scope(x), response_id)


async def handle(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    settings = x.settings
    req = parse_request(await x.body(), strict=settings.strict_fields, storing=settings.store_responses)
    history: list[dict[str, Any]] = []
    if req.previous_response_id is not None:
        stored = await _stored(pipeline, x, req.previous_response_id)
        if stored is None:
            raise GatewayError(
                400,
                "previous_response_not_found",
                f"no stored response {req.previous_response_id!r} for this key: it is unknown, expired, deleted or was too large to keep (responses_max_mb)",
                "previous_response_id",
            )
        history = conversation(stored)
        _check_size(x, len(stored) + len(orjson.dumps(req.items)))
        with_history(req, history)
    try:
        return await pipeline.chat(
            x, sys.modules[__name__], req, _keeper(pipeline, x, req, history) if req.store else None
        )
    finally:
        req.renderer = None  # the renderer refers to req: no cycle left for the GC


def _keeper(pipeline: Pipeline, x: Exchange, req: ResponsesRequest, history: list[dict[str, Any]]) -> Finished:
    """What stores the response once it is complete (``store``, SPEC 9.2.5)."""
    scope, settings = _scope(x), x.settings

    async def keep(whole: Answer, model: str) -> None:
        final = req.renderer.final if req.renderer is not None else req.result
        if final is not None:
            value = record(req, final, history)
            limit = int(settings.responses_max_mb * 1024 * 1024)
            ttl = settings.responses_ttl_s
            await pipeline.state.response_put(scope, req.id, value, ttl, settings.responses_max, limit)

    return keep


def _check_size(x: Exchange, size: int) -> None:
    """A conversation continued through ``previous_response_id`` is bounded as if its caller had sent it whole:
    each request loads the chain it continues, which must not grow without end."""
    if size > x.max_body:
        raise GatewayError(
            400,
            "conversation_too_large",
            f"the conversation of previous_response_id with this input is {size / 1048576:.1f} MB, more than "
            f"max_body_mb = {x.settings.max_body_mb:g} MB: start a new response with the items you need as input",
            "previous_response_id",
        )


def _not_found(response_id: str) -> GatewayError:
    return GatewayError(404, "not_found", f"no stored response {response_id!r} for this key", "response_id")


async def retrieve(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    """``GET /v1/responses/{id}``: the stored response object."""
    response_id = x.request.match_info["response_id"]
    stored = await _stored(pipeline, x, response_id)
    if stored is None:
        raise _not_found(response_id)
    return x.json(stored_response(stored))


async def input_items(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    """``GET /v1/responses/{id}/input_items``: its own input items, as received, each with an id."""
    response_id = x.request.match_info["response_id"]
    stored = await _stored(pipeline, x, response_id)
    if stored is None:
        raise _not_found(response_id)
    return x.json(input_items_page(stored, x.request.query))


async def delete(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    """``DELETE /v1/responses/{id}``."""
    response_id = x.request.match_info["response_id"]
    if not RESPONSE_ID.fullmatch(response_id) or not await pipeline.state.response_delete(_scope(x), response_id):
        raise _not_found(response_id)
    return x.json({"id": response_id, "object": "response", "deleted": True})
