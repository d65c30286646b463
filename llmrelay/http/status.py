"""Turning an error answer into the right :mod:`llmrelay.errors` class.

This is the one place that knows how servers spell their errors: the HTTP
status, the many JSON body shapes (OpenAI, vLLM, FastAPI, Gemini arrays,
OpenRouter in-band errors), HTML pages and plain text, and the
``retry-after-ms`` / ``retry-after`` / ``x-request-id`` headers.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from html import unescape
from typing import Any

import orjson

from .._text import shorten
from ..errors import (
    BadRequestError,
    CloudflareError,
    ContextLengthError,
    MissingAuthError,
    ModelNotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RelayError,
    ResponseError,
    ServerError,
)

__all__ = ["data_answer", "error_from_data", "error_from_response", "parse_retry_after", "redact", "redact_error"]

BODY_EXCERPT = 1000
MESSAGE_LIMIT = 500

_CONTEXT_PATTERNS = re.compile(
    r"context.length|context.window|maximum context|context_length_exceeded|too many tokens"
    r"|prompt is too long|exceeds? the (?:model'?s? )?(?:maximum )?context|input is too long",
    re.IGNORECASE,
)
_AUTH_PATTERNS = re.compile(
    r"api.?key|authori[sz]|authenticat|credential|access token|invalid token|bearer",
    re.IGNORECASE,
)
_CHALLENGE_PATTERNS = re.compile(
    r"cloudflare|just a moment|attention required|cf-chl|challenge-platform|captcha|ddos-guard",
    re.IGNORECASE,
)
_RATE_LIMIT_LABELS = ("rate_limit_error", "rate_limit_exceeded", "rate_limited")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (API key) in ``text`` with ``***``, in any letter case (servers lower-case echoes)."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        if secret in text:
            text = text.replace(secret, "***")
        if secret.lower() in text.lower():
            text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    return text


def _holds_secret(error: BaseException, secrets: tuple[str, ...]) -> bool:
    try:
        texts = [str(error).lower(), repr(error).lower(), *(repr(arg).lower() for arg in error.args)]
    except Exception:  # an exception whose str fails: drop it rather than guess
        return True
    return any(secret.lower() in text for secret in secrets for text in texts)


def redact_error(error: RelayError, secrets: Iterable[str | None]) -> RelayError:
    """Remove every secret from the text fields of ``error`` (in place) and return it.

    The last line of defence: errors built deep in the reading code (in-band stream
    errors, quoted payloads) may quote what a server echoed back, key included.
    Error reporters walk ``__cause__`` and ``__context__`` too: llmrelay errors found
    there are redacted the same way, and any other exception there that holds a
    secret is cut out of the chain.
    """
    keys = tuple(secret for secret in secrets if secret and len(secret) >= 4)
    if not keys:
        return error
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        link = pending.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, RelayError):
            for name in ("message", "body", "code", "type", "request_id"):
                value = getattr(link, name, None)
                if isinstance(value, str):
                    setattr(link, name, redact(value, keys))
            link.args = tuple(redact(arg, keys) if isinstance(arg, str) else arg for arg in link.args)
        for attribute in ("__cause__", "__context__"):
            linked = getattr(link, attribute)
            if linked is None:
                continue
            if not isinstance(linked, RelayError) and _holds_secret(linked, keys):
                setattr(link, attribute, None)
            else:
                pending.append(linked)
    return error


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (preferred) or ``retry-after`` (seconds or HTTP-date).

    A value that is not a finite number (``nan``, ``inf``, garbage) is ignored, as if it were not sent.
    """
    value = headers.get("retry-after-ms")
    if value:
        seconds = _finite(value)
        if seconds is not None:
            return max(seconds / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _render(value: Any) -> str:
    """A readable one-line rendering of a ``detail``/``message`` value of any shape."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(filter(None, (_render(item) for item in value)))
    if isinstance(value, dict):
        if "msg" in value:  # FastAPI / pydantic validation entries
            loc = value.get("loc")
            where = ".".join(str(part) for part in loc) if isinstance(loc, list) else ""
            return f"{where}: {value['msg']}" if where else str(value["msg"])
        for key in ("message", "detail", "error", "error_message", "description"):
            if key in value and value[key] is not None:
                return _render(value[key])
        return orjson.dumps(value).decode()
    return str(value)


def _fields(data: Any, http_error: bool = False) -> tuple[str, str | int | None, str | None, int | None] | None:
    """(message, code, type, in-band status) from an error body, or None if it is not one.

    In-band, ``{"error": null}`` means "no error"; in the body of an HTTP error status
    (``http_error``) the other keys are still read.
    """
    if isinstance(data, list):
        for item in data:
            found = _fields(item, http_error)
            if found:
                return found
        return None
    if not isinstance(data, dict):
        return None
    if "error" in data:
        error = data["error"]
        if error is None:
            if not http_error:
                return None
        elif isinstance(error, dict):
            code = error.get("code")
            status = error.get("status")
            nested_status = code if isinstance(code, int) else status if isinstance(status, int) else None
            message = _render(error.get("message") or error.get("detail") or error.get("metadata") or error)
            error_type = error.get("type") or (status if isinstance(status, str) else None)
            return message, code, error_type, nested_status
        else:
            return _render(error), data.get("code"), data.get("type"), None
    if data.get("object") == "error":
        code = data.get("code")
        return _render(data.get("message")), code, data.get("type"), code if isinstance(code, int) else None
    for key in ("message", "detail", "error_message"):
        if data.get(key):
            code = data.get("code")
            return _render(data[key]), code, data.get("type"), code if isinstance(code, int) else None
    return None


def _sse_fields(body: bytes) -> tuple[str, str | int | None, str | None, int | None] | None:
    """The error fields of the first ``data`` event of an event-stream error body that holds one."""
    from .sse import SSEDecoder

    decoder = SSEDecoder()
    for _, payload in decoder.feed(body) + decoder.flush():
        try:
            fields = _fields(orjson.loads(payload), http_error=True)
        except orjson.JSONDecodeError:
            continue
        if fields:
            return fields
    return None


def _html_summary(text: str) -> str:
    title = _TITLE.search(text)
    if title:
        summary = _SPACE.sub(" ", unescape(title.group(1))).strip()
        if summary:
            return summary
    return _SPACE.sub(" ", unescape(_TAGS.sub(" ", text))).strip()


def _choose_class(status: int | None, message: str, code: Any, error_type: Any, is_challenge: bool) -> type[RelayError]:
    labels = f"{message} {code or ''} {error_type or ''}"
    if "api key not valid" in labels.lower() or code == "invalid_api_key":
        return MissingAuthError
    if status == 401:
        return MissingAuthError
    if status == 403:
        if is_challenge:
            return CloudflareError
        if _AUTH_PATTERNS.search(labels):
            return MissingAuthError
        return ResponseError
    if status == 402:
        return PaymentRequiredError
    if status == 404:
        return ModelNotFoundError if ("model" in labels.lower()) else ResponseError
    if status == 429:
        return RateLimitError
    if status is not None and status >= 500:
        return CloudflareError if is_challenge and status == 503 else ServerError
    in_band = status is None or status < 400
    if status in (400, 413, 422) or (in_band and error_type == "invalid_request_error"):
        if _CONTEXT_PATTERNS.search(labels):
            return ContextLengthError
        return ResponseError if status == 413 else BadRequestError
    if in_band:
        if error_type in _RATE_LIMIT_LABELS or code in _RATE_LIMIT_LABELS:
            return RateLimitError
        if error_type == "server_error" or code == "server_error":
            return ServerError
        if _CONTEXT_PATTERNS.search(labels):
            return ContextLengthError
    return ResponseError


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    provider: str | None = None,
    secrets: Iterable[str | None] = (),
) -> RelayError:
    """The typed error for an HTTP answer with an error ``status`` and the (possibly partial) ``body``."""
    secrets = tuple(secrets)
    content_type = headers.get("content-type", "").lower()
    text = body.decode("utf-8", "replace")
    data: Any = None
    fields = None
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        fields = _fields(data, http_error=True)
    elif "event-stream" in content_type or stripped.startswith(("data:", "event:")):
        fields = _sse_fields(body)
    is_html = "html" in content_type or stripped[:15].lower().startswith(("<!doctype", "<html"))
    is_challenge = is_html and (
        bool(_CHALLENGE_PATTERNS.search(text[:20000])) or headers.get("cf-mitigated") == "challenge"
    )
    if fields:
        message, code, error_type, _ = fields
    elif is_html:
        message, code, error_type = _html_summary(text), None, None
    else:
        message, code, error_type = _SPACE.sub(" ", text).strip(), None, None
    if not message:
        message = _default_reason(status)
    error_class = _choose_class(status, message, code, error_type, is_challenge)
    return error_class(
        shorten(redact(message, secrets), MESSAGE_LIMIT),
        status=status,
        code=code,
        type=error_type,
        provider=provider,
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        retry_after=parse_retry_after(headers),
        body=shorten(redact(text, secrets), BODY_EXCERPT) if text else None,
    )


def error_from_data(
    data: Any,
    status: int | None = None,
    *,
    provider: str | None = None,
    secrets: Iterable[str | None] = (),
) -> RelayError | None:
    """The typed error for a parsed error object (an in-band stream error, say), or None if it is none."""
    fields = _fields(data)
    if fields is None:
        if status is None or status < 400:
            return None
        fields = (_render(data) or _default_reason(status), None, None, None)
    message, code, error_type, nested_status = fields
    effective = status if status is not None and status >= 400 else nested_status
    error_class = _choose_class(effective, message, code, error_type, False)
    text = orjson.dumps(data).decode() if not isinstance(data, str) else data
    return error_class(
        shorten(redact(message or "error", secrets), MESSAGE_LIMIT),
        status=effective,
        code=code,
        type=error_type,
        provider=provider,
        body=shorten(redact(text, secrets), BODY_EXCERPT),
    )


def _default_reason(status: int | None) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase if status else "error"
    except ValueError:
        return f"HTTP status {status}"


def data_answer(raw: bytes, provider: str, what: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A JSON answer holding a ``data`` list of objects (images, embeddings): the whole object and that list.
    An error body becomes its typed error; anything else a ``ResponseError`` naming ``what`` (``"image"`` …)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ResponseError(f"the {what} answer is not JSON: {shorten(raw)!r}", provider=provider) from None
    if isinstance(data, dict) and data.get("error") is not None:
        raise error_from_data(data, provider=provider) or ResponseError(shorten(raw), provider=provider)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
        raise ResponseError(f"the {what} answer has an unexpected shape: {shorten(raw)!r}", provider=provider)
    return data, entries
