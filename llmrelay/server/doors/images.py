"""The images door, ``POST /v1/images/generations`` (SPEC 8.3): OpenAI's images request and response.

``parse`` is a pure translator; ``handle`` is the wiring: a one-shot provider operation through the pipeline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequestError
from ...providers.images import IMAGE_PARAMETERS, IMAGE_SIZE_PARAMETERS
from .chat import error_body

if TYPE_CHECKING:
    from aiohttp import web

    from ..exchange import Exchange
    from ..pipeline import Pipeline

__all__ = ["ImagesRequest", "answer", "error_body", "handle", "parse"]

_OPTIONS = (*IMAGE_PARAMETERS, *IMAGE_SIZE_PARAMETERS)
_NOT_EXTRA = (*_OPTIONS, "model", "prompt", "user")


class ImagesRequest:
    """``model`` ("" → the default provider's image model), ``prompt``, the image keywords (``options``) and the
    other fields, passed on as they are (``extra``)."""

    __slots__ = ("extra", "model", "options", "prompt")

    def __init__(self, model: str, prompt: str, options: dict[str, Any], extra: dict[str, Any]) -> None:
        self.model, self.prompt, self.options, self.extra = model, prompt, options, extra


def parse(body: dict[str, Any]) -> ImagesRequest:
    prompt = body.get("prompt")
    if type(prompt) is not str or not prompt:
        raise InvalidRequestError(
            "'prompt' is required and must be a non-empty string", param="prompt", code="invalid_request", status=400
        )
    model = body.get("model") or ""
    if type(model) is not str:
        raise InvalidRequestError("'model' must be a string", param="model", code="invalid_request", status=400)
    options = {name: body[name] for name in _OPTIONS if body.get(name) is not None}
    extra = {name: value for name, value in body.items() if name not in _NOT_EXTRA and value is not None}
    return ImagesRequest(model, prompt, options, extra)


def answer(data: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("created", int(time.time()))
    return data


async def handle(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
    req = parse(await x.body())

    async def invoke(cls: Any, target: Any, options: dict[str, Any]) -> dict[str, Any]:
        return await cls.generate_images_async(
            req.prompt, target.model, timeout=options.get("timeout"), extra_data=req.extra or None, **req.options
        )

    _, data = await pipeline.call(x, req.model, invoke)
    return x.json(answer(data))
