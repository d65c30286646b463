"""Model listing: parsing the many shapes of ``GET /models``, and the bounded cache of what was listed.

The cache is process-wide, keyed by (base URL, SHA-256 of the key): one entry
lives ``models_ttl`` seconds and at most :data:`MODEL_CACHE_SIZE` entries are kept
(the least recently used go first), so a long-running gateway that sees many
keys does not grow without bound. :func:`clear_model_cache` empties it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any, NamedTuple

from .._text import shorten
from ..errors import ResponseError

__all__ = ["MODEL_CACHE_SIZE", "Listing", "cached_listing", "clear_model_cache", "parse_models", "store_listing"]

MODEL_CACHE_SIZE = 256


class Listing(NamedTuple):
    """What one ``GET /models`` said: ids in the server's order, and those it flagged as image / vision models."""

    models: list[str]
    image_models: list[str]
    vision_models: list[str]


_cache: OrderedDict[tuple[str, str], tuple[float, float, Listing]] = OrderedDict()  # key -> (stored, ttl, listing)
_lock = threading.Lock()  # get_models runs on background loops of several threads at once


def _key(api_base: str, api_key: str | None) -> tuple[str, str]:
    return api_base, hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


def cached_listing(api_base: str, api_key: str | None) -> Listing | None:
    """The listing cached for this base URL and key, if it has not expired."""
    if not _cache:  # the common case for chat calls: nothing listed in this process
        return None
    key = _key(api_base, api_key)
    with _lock:
        entry = _cache.get(key)
        if entry is None:
            return None
        stored, ttl, listing = entry
        if time.monotonic() - stored >= ttl:
            del _cache[key]
            return None
        _cache.move_to_end(key)
        return listing


def store_listing(api_base: str, api_key: str | None, listing: Listing, ttl: float) -> None:
    """Cache a listing for ``ttl`` seconds, dropping expired and then least recently used entries over the bound."""
    now = time.monotonic()
    with _lock:
        _cache[_key(api_base, api_key)] = (now, ttl, listing)
        _cache.move_to_end(_key(api_base, api_key))
        if len(_cache) > MODEL_CACHE_SIZE:
            for key in [key for key, (stored, life, _) in _cache.items() if now - stored >= life]:
                del _cache[key]
            while len(_cache) > MODEL_CACHE_SIZE:
                _cache.popitem(last=False)


def clear_model_cache() -> None:
    """Forget every cached model listing (the next ``get_models`` asks the server again)."""
    with _lock:
        _cache.clear()


def model_cache_size() -> int:
    return len(_cache)


def parse_models(data: Any, name: str) -> Listing:
    """A listing from ``{"data": [...]}``, ``{"models": [...]}`` or a bare list; entries as objects (``id``, else
    ``name``) or strings; truthy ``image`` / ``type == "image"`` / ``supports_images`` flag image models, ``vision``
    vision models."""
    if isinstance(data, dict):
        entries = data.get("data")
        if entries is None:
            entries = data.get("models")
    else:
        entries = data
    if not isinstance(entries, list):
        import orjson

        raise ResponseError(f"unexpected model list: {shorten(orjson.dumps(data))!r}", provider=name)
    listing = Listing([], [], [])
    for entry in entries:
        if isinstance(entry, str):
            listing.models.append(entry)
            continue
        if not isinstance(entry, dict):
            continue
        model_id = entry.get("id") or entry.get("name")
        if not isinstance(model_id, str) or not model_id:
            continue
        listing.models.append(model_id)
        if entry.get("image") or entry.get("type") == "image" or entry.get("supports_images"):
            listing.image_models.append(model_id)
        if entry.get("vision"):
            listing.vision_models.append(model_id)
    return listing
