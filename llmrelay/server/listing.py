"""``GET /v1/models`` and ``GET /v1/models/{id}`` (SPEC 8.3): route names and every served provider's models.

The listing is cached for ``models_ttl_s``; one provider failing to list does not fail the list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from .config import Config
from .exchange import Exchange
from .pipeline import Pipeline
from .problems import GatewayError

__all__ = ["Listing"]

log = logging.getLogger("llmrelay.server")
LISTING_TIMEOUT = 10.0  # seconds one provider may take to list its models


class Listing:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._models: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()

    def reload(self, config: Config) -> None:
        """List what ``config`` serves from now on (the cached listing is dropped)."""
        self.config, self._models = config, None

    async def models(self, pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
        return x.raw_json(await self.body())

    async def model(self, pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
        model_id = x.request.match_info["model"]
        listing = orjson.loads(await self.body())
        for item in listing["data"]:
            if item["id"] == model_id:
                pipeline.check(x, model_id)
                return x.json(item)
        raise GatewayError(
            404, "model_not_found", f"the model {model_id!r} is not served here: GET /v1/models lists what is", "model"
        )

    async def body(self) -> bytes:
        cached = self._models
        ttl = self.config.server.models_ttl_s
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        async with self._lock:
            cached = self._models
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            data = await self._list_models()
            body = orjson.dumps({"object": "list", "data": data})
            self._models = (time.monotonic(), body)
            return body

    async def _list_models(self) -> list[dict[str, Any]]:
        now = int(time.time())
        entries = [
            {"id": name, "object": "model", "created": now, "owned_by": "llmrelay"} for name in self.config.routes
        ]
        names = list(self.config.providers)
        results = await asyncio.gather(*(self._provider_models(name) for name in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("listing the models of %s failed: %s", name, result)
                continue
            entries.extend(
                {"id": f"{name}/{model}", "object": "model", "created": now, "owned_by": name} for model in result
            )
        return entries

    async def _provider_models(self, name: str) -> list[str]:
        cls = self.config.providers[name]
        if name == "local":
            from ..providers import local

            if local.running_server() is None:  # do not start the embedded model just to list it
                return list(cls.fallback_models)
        models = await asyncio.wait_for(cls.get_models_async(timeout=LISTING_TIMEOUT), LISTING_TIMEOUT)
        return list(models)
