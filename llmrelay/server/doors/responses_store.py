"""What the gateway keeps of a Responses API answer (SPEC 9.2.5), and how it reads it back: pure functions.

A record is one JSON object: the response object as answered, and the items of its conversation — the chain it
continued (``previous_response_id``), its own input items (each with an id), its output items — so a request
continuing it needs one lookup, whatever the chain's length. ``input`` marks where its own input items are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ...errors import InvalidRequestError
from .responses_request import ResponsesRequest

__all__ = ["RESPONSE_ID", "conversation", "input_items_page", "record", "stored_response"]

# The ids this gateway gives out; anything else is not found without a lookup (and never holds a "/").
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{32}")
MAX_PAGE = 100
_SMALL_NUMBER = re.compile(r"[0-9]{1,4}")


def record(request: ResponsesRequest, response: dict[str, Any], history: list[dict[str, Any]]) -> bytes:
    start = len(history)
    items = [*history, *request.items, *response["output"]]
    return orjson.dumps({"response": response, "items": items, "input": [start, start + len(request.items)]})


def conversation(stored: bytes) -> list[dict[str, Any]]:
    """The items a request continuing this response puts before its own input."""
    items: list[dict[str, Any]] = orjson.loads(stored)["items"]
    return items


def stored_response(stored: bytes) -> dict[str, Any]:
    response: dict[str, Any] = orjson.loads(stored)["response"]
    return response


def _invalid(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_request", status=400)


def input_items_page(stored: bytes, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/responses/{id}/input_items``: the response's own input items, a page of them (``order``
    ``desc`` by default as OpenAI's, ``limit`` 1-100 (20), ``after`` an item id)."""
    data = orjson.loads(stored)
    start, end = data["input"]
    items: list[dict[str, Any]] = data["items"][start:end]
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _invalid(f"'order' must be asc or desc, not {order!r}", "order")
    text = query.get("limit", "20")
    if not _SMALL_NUMBER.fullmatch(text) or not 1 <= int(text) <= MAX_PAGE:  # not str.isdigit: "²" is a digit
        raise _invalid(f"'limit' must be an integer from 1 to {MAX_PAGE}, not {text!r}", "limit")
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise _invalid(f"'after' {after!r} is not an item of this response", "after")
        items = items[ids.index(after) + 1 :]
    page = items[: int(text)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > len(page),
    }
