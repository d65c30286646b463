"""One request being answered (:class:`Exchange`): what the middleware, the pipeline and a door's handler share.

The middleware (:mod:`llmrelay.server.app`) makes it, with the access-log :class:`~llmrelay.server.accesslog.Entry`
and the caller's gateway key; handlers read the body with :meth:`Exchange.body`, answer with :meth:`Exchange.json`
or :meth:`Exchange.open_stream`; every response carries 8.3's headers (and ``x-llmrelay-ignored``, 9.1.4).
"""

from __future__ import annotations

import asyncio
import itertools
import urllib.parse
import uuid
from typing import Any

import orjson
from aiohttp import web

from .accesslog import Entry
from .config import GatewayKey, ServerSettings
from .doors import Door
from .problems import GatewayError, Problem, problem_of

__all__ = ["HEADER_NAME_MAX", "JSON", "Exchange", "header_value", "request_id"]

HEADER_NAME_MAX = 256

JSON = "application/json"
IGNORED_HEADER_MAX = 2000  # characters of x-llmrelay-ignored (the names come from the caller's body)

_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def request_id(request: web.BaseRequest) -> str:
    """The caller's ``x-request-id`` when it is sane, else a new one (a per-process random prefix and a count)."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 200 and given.isprintable() and given.strip() == given:
        return given
    return f"req-{_ID_PREFIX}{next(_ids):x}"


def header_value(value: str) -> str:
    """A name as a header value: as it is when printable ASCII, else percent-encoded (a line break in a model
    name must not break, or forge, the response head); at most HEADER_NAME_MAX characters before encoding (an
    upstream reports the model name it likes, and clients refuse header lines over 8 KB)."""
    if len(value) > HEADER_NAME_MAX:
        value = value[: HEADER_NAME_MAX - 3] + "..."
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe="/:@-._~ ")


def _ignored_header(names: list[str]) -> str:
    unique = list(dict.fromkeys(header_value(name.replace(",", "%2C")) for name in names))
    text = ", ".join(unique)
    if len(text) > IGNORED_HEADER_MAX:
        text = text[: IGNORED_HEADER_MAX - 5].rsplit(", ", 1)[0] + ", ..."
    return text


class _EventStream(web.StreamResponse):
    """A streamed answer whose head leaves in the socket write of its first event (aiohttp sends a
    ``StreamResponse``'s head on its own unless told otherwise); the writer writes the first event at once."""

    _send_headers_immediately = False


class Exchange:
    """A request in flight: the aiohttp ``request``, its log ``entry``, the ``door`` it came through (for the
    error shape), the caller's ``key``, the limiter ``slot`` held, and the ``ignored`` field names."""

    __slots__ = ("door", "entry", "ignored", "key", "max_body", "request", "settings", "slot")

    def __init__(self, request: web.Request, entry: Entry, door: Door, settings: ServerSettings, max_body: int) -> None:
        self.request = request
        self.entry = entry
        self.door = door
        self.settings = settings
        self.max_body = max_body  # bytes
        self.key: GatewayKey | None = None
        self.slot: str | None = None
        self.ignored: list[str] = []

    # ------------------------------------------------------------------------------ answering

    def headers(self) -> dict[str, str]:
        entry = self.entry
        headers = {"x-request-id": entry.request_id}
        if entry.provider:
            headers["x-llmrelay-provider"] = header_value(entry.provider)
        if entry.model:
            headers["x-llmrelay-model"] = header_value(entry.model)
        if entry.cache:
            headers["x-llmrelay-cache"] = entry.cache
        if self.ignored:
            headers["x-llmrelay-ignored"] = _ignored_header(self.ignored)
        return headers

    def json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return self.raw_json(orjson.dumps(data), status, headers)

    def raw_json(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        self.entry.status = status
        all_headers = self.headers()
        if headers:
            all_headers.update(headers)
        return web.Response(body=body, status=status, content_type=JSON, headers=all_headers)

    def problem(self, problem: Problem) -> web.Response:
        """The error response in the door's shape."""
        problem.request_id = self.entry.request_id
        return self.json(self.door.error_body(problem), problem.status, problem.headers)

    def error(self, error: BaseException) -> web.Response:
        return self.problem(problem_of(error))

    async def open_stream(self) -> web.StreamResponse:
        """The 200 ``text/event-stream`` answer; its head goes out with the first bytes written."""
        self.entry.status = 200
        headers = self.headers()
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        response = _EventStream(status=200, headers=headers)
        await response.prepare(self.request)
        return response

    # ------------------------------------------------------------------------------- reading

    async def body(self) -> dict[str, Any]:
        """The request body as a JSON object (413 over ``max_body_mb``, 408 when it is slow, 400 when not an
        object)."""
        request, settings = self.request, self.settings
        length = request.content_length
        if length is not None and length > self.max_body:
            raise self._too_large()
        try:
            if request.content.is_eof():
                raw = await request.read()  # the whole body is here (the common case): nothing to wait for
            else:
                raw = await asyncio.wait_for(request.read(), settings.read_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        except ConnectionResetError:  # the caller went away while sending its body: nothing to answer, no error
            raise GatewayError(499, "client_closed_request", "the caller closed the connection mid-body") from None
        except asyncio.TimeoutError:
            seconds = settings.read_timeout_s
            raise GatewayError(
                408, "request_timeout", f"the request body did not arrive within {seconds:g} s (read_timeout_s)"
            ) from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            what = "empty" if not raw else "not valid JSON"
            raise GatewayError(400, "invalid_json", f"the request body is {what}: send a JSON object") from None
        if type(body) is not dict:
            raise GatewayError(400, "invalid_json", "the request body must be a JSON object")
        return body

    def _too_large(self) -> GatewayError:
        return GatewayError(
            413,
            "request_too_large",
            f"the request body is larger than max_body_mb = {self.settings.max_body_mb:g} MB",
        )
