"""The embeddings door, ``POST /v1/embeddings`` (SPEC 9.4): OpenAI's embeddings request and response.

``parse`` is a pure translator; ``handle`` is the wiring: a one-shot provider operation through the pipeline
(not streamed), cached only when the route has ``cache_ttl_s``. Vectors are asked of the upstream as floats
and encoded here when the caller wants ``base64`` (the ``openai`` SDK's default), with the library's function.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import InvalidRequestError
from ...providers.embeddings import check_embedding_input, check_embedding_options, encode_embeddings
from ...responses import Usage
from .chat import error_body

if TYPE_CHECKING:
    from aiohttp import web

    from ..exchange import Exchange
    from ..pipeline import Pipeline

__all__ = ["EmbeddingsRequest", "error_body", "handle", "parse"]

_KNOWN = ("model", "input", "encoding_format", "dimensions", "user")


class EmbeddingsRequest:
    """``model``, the checked ``input``, ``encoding_format`` (rendered here), the upstream ``options``
    (``dimensions``, ``user``, ``encoding_format: "float"`` when one was given) and the other fields, passed on as
    they are (``extra``)."""

    __slots__ = ("encoding_format", "extra", "input", "model", "options")

    def __init__(
        self, model: str, input: str | list[Any], encoding_format: str, options: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        self.model, self.input, self.encoding_format = model, input, encoding_format
        self.options, self.extra = options, extra


def parse(body: dict[str, Any]) -> EmbeddingsRequest:
    model = body.get("model")
    if type(model) is not str or not model:
        raise InvalidRequestError(
            "'model' is required and must be a non-empty string", param="model", code="invalid_request", status=400
        )
    if "input" not in body:
        raise InvalidRequestError("'input' is required", param="input", code="invalid_request", status=400)
    value = check_embedding_input(body["input"])
    options = check_embedding_options({name: body.get(name) for name in ("encoding_format", "dimensions", "user")})
    encoding = options.get("encoding_format", "float")
    if "encoding_format" in options:
        options["encoding_format"] = "float"  # asked of the upstream as floats; base64 is encoded here
    extra = {name: value for name, value in body.items() if name not in _KNOWN and value is not None}
    return EmbeddingsRequest(model, value, encoding, options, extra)


def cache_key(route_name: str, scope: str, req: EmbeddingsRequest) -> str:
    """The question (model route, caller scope, input, options), not its encoding: float and base64 callers
    share one entry."""
    options = {name: value for name, value in req.options.items() if name != "encoding_format"}
    question = orjson.dumps({"i": req.input, "o": options, "x": req.extra}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(b"embeddings\0%s\0%s\0%s" % (route_name.encode(), scope.encode(), question))
    return "llmrelay:cache:" + digest.hexdigest()


async def handle(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    req = parse(await x.body())
    route = pipeline.check(x, req.model).route
    key = None
    if route is not None and route.cache_ttl_s > 0:
        scope = "" if route.cache_shared or x.key is None else x.key.name
        key = cache_key(route.name, scope, req)
        if "no-cache" not in x.request.headers.get("cache-control", "").lower():
            cached = await pipeline.state.cache_get(key)
            if cached is not None:
                return await _replay(pipeline, x, req, cached)
        x.entry.cache = "miss"
        pipeline.metrics.cache_result("miss")

    async def invoke(cls: Any, target: Any, options: dict[str, Any]) -> dict[str, Any]:
        return await cls.create_embeddings_async(
            req.input, target.model, extra_data=req.extra or None, **options, **req.options
        )

    target, data = await pipeline.call(x, req.model, invoke)
    usage = data["usage"]
    x.entry.model = data["model"]
    await pipeline.account(x, target.provider, data["model"], Usage(usage["prompt_tokens"], 0, usage["total_tokens"]))
    if key is not None and route is not None:
        record = orjson.dumps({"p": target.provider, "d": data})
        await pipeline.state.cache_put(key, record, route.cache_ttl_s)
    return x.json(encode_embeddings(data, req.encoding_format))


async def _replay(pipeline: Pipeline, x: Exchange, req: EmbeddingsRequest, cached: bytes) -> web.StreamResponse:
    record = orjson.loads(cached)
    data = record["d"]
    x.entry.cache = "hit"
    pipeline.metrics.cache_result("hit")
    x.entry.provider, x.entry.model = record["p"], data["model"]
    await pipeline.admit(x)  # a hit still counts against the key's request limits, as a chat hit does
    return x.json(encode_embeddings(data, req.encoding_format))
