"""Image generation: the option names, the request body, and what comes back (SPEC 2.5).

One list of image keywords and one size rule serve every door (a chat call on
an image model, ``generate_images_async``, the client's ``images.generate``, the
CLI and the gateway).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .._text import content_text, shorten
from ..errors import InvalidArgumentError, ResponseError
from ..http.status import data_answer
from ..media import data_uri
from ..typing import Messages

__all__ = [
    "IMAGE_PARAMETERS",
    "IMAGE_SIZE_PARAMETERS",
    "decode_image",
    "image_body",
    "image_urls",
    "last_user_text",
    "parse_image_answer",
]

IMAGE_PARAMETERS = ("n", "size", "quality", "style", "response_format", "background", "output_format")
IMAGE_SIZE_PARAMETERS = ("width", "height", "aspect_ratio")
_RATIO_SIZES = {"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792", "3:2": "1536x1024", "2:3": "1024x1536"}


def image_body(model: str, prompt: str, options: dict[str, Any], extra_data: dict[str, Any] | None) -> dict[str, Any]:
    """The ``/images/generations`` body: ``width`` + ``height`` or ``aspect_ratio`` become ``size`` (unless a
    ``size`` was given); ``None`` options are left out; ``extra_data`` is merged last."""
    options = dict(options)
    width, height, ratio = options.pop("width", None), options.pop("height", None), options.pop("aspect_ratio", None)
    if options.get("size") is None:
        if width and height:
            options["size"] = f"{width}x{height}"
        elif ratio:
            ratio = str(ratio)
            if ratio not in _RATIO_SIZES:
                raise InvalidArgumentError(
                    f"aspect_ratio {ratio!r} is not one of {', '.join(_RATIO_SIZES)}; pass size='WxH'", "aspect_ratio"
                )
            options["size"] = _RATIO_SIZES[ratio]
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    body.update({name: value for name, value in options.items() if value is not None})
    if extra_data:
        body.update(extra_data)
    return body


def parse_image_answer(raw: bytes, name: str) -> dict[str, Any]:
    """The server's images JSON (``{"data": [{"url" | "b64_json"}, …]}``), checked; errors become typed errors."""
    data, entries = data_answer(raw, name, "image")
    if not any(item.get("url") or item.get("b64_json") for item in entries):
        raise ResponseError(f"the image answer holds no image: {shorten(raw)!r}", provider=name)
    return data


def decode_image(item: dict[str, Any], name: str) -> bytes:
    """The bytes of one ``b64_json`` image entry (``ResponseError`` when it is not valid base64)."""
    try:
        return base64.b64decode(item["b64_json"], validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("an image in the answer is not valid base64", provider=name) from None


def image_urls(data: dict[str, Any], name: str) -> list[str]:
    """Each image as a URL: ``url`` as given, ``b64_json`` as a data URI with the MIME type sniffed from the bytes."""
    urls = []
    for item in data["data"]:
        if item.get("url"):
            urls.append(item["url"])
        elif item.get("b64_json"):
            urls.append(data_uri(decode_image(item, name)))
    return urls


def last_user_text(messages: Messages) -> str:
    """The text of the last user message (the default image prompt)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            try:
                return content_text(message.get("content"), " ")
            except TypeError:
                return ""
    return ""


async def image_bytes(data: dict[str, Any], name: str, timeout: float | None = None, proxy: str | None = None) -> bytes:
    """The bytes of the first image of an images answer: ``b64_json`` decoded, a ``url`` downloaded (without the
    API key: the picture may live on another host)."""
    from ..http.session import DEFAULT_TIMEOUT, open_response
    from .reading import read_body

    item = data["data"][0]
    if item.get("b64_json"):
        return decode_image(item, name)
    url = str(item.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ResponseError(f"unexpected image reference {shorten(url, 80)!r}", provider=name)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    response = await open_response("GET", url, headers={"Accept": "*/*"}, timeout=timeout, proxy=proxy, provider=name)
    return await read_body(response, name, timeout)
