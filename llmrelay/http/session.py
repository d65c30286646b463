"""The one function that opens a request, and the :class:`Response` it returns.

* ``timeout`` bounds connecting and every gap between received bytes, never the
  whole answer; ``total_timeout`` (optional) bounds the whole call. Both, the URL,
  the headers and the key are checked before anything is sent
  (:mod:`llmrelay.http.checks`, :mod:`llmrelay.http.url`).
* Sessions come from the per-loop pool (:mod:`llmrelay.http.pool`).
* Transport failures become :class:`~llmrelay.errors.ConnectError` /
  :class:`~llmrelay.errors.TimeoutError`; an answer that is not valid HTTP becomes
  :class:`~llmrelay.errors.ResponseError` (the request reached the server: it is not
  sent again); error statuses become typed errors through :mod:`llmrelay.http.status`.
* No aiohttp exception is chained to an error raised here: their text can hold the
  URL, and with it a key.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import ssl as ssl_module
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import (
    ConnectError,
    ConnectTimeoutError,
    RelayError,
    ResponseError,
    StreamIncompleteError,
    StreamTimeoutError,
    TimeoutError,
)
from ._aiohttp_hooks import new_connection
from .checks import DEFAULT_TIMEOUT, check_headers, check_secrets, check_timeout
from .pool import close_sessions, get_session
from .status import error_from_response, redact
from .url import check_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSPORT_ERRORS",
    "Response",
    "check_request",
    "close_sessions",
    "env_proxy",
    "get_session",
    "open_response",
    "send_checked",
    "stream_error",
]

ERROR_BODY_LIMIT = 256 * 1024
DRAIN_LIMIT = 64 * 1024
DRAIN_SECONDS = 0.25
SMALL_BODY = 64 * 1024  # request bodies up to this size are copied to exact size (see open_response)
TIMEOUT_CACHE_SIZE = 64  # distinct (timeout, total_timeout) pairs whose aiohttp.ClientTimeout is kept

_POSIX = os.name == "posix"

# What reading a body can raise besides our own errors; the provider turns them
# into StreamIncompleteError / StreamTimeoutError with :func:`stream_error`.
# HttpProcessingError: aiohttp's pure-Python parser raises its framing errors (a bad chunk size) as is.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
    HttpProcessingError,
)


class Response:
    """An open HTTP response with a successful status.

    ``read_chunk()`` returns the next bytes as they arrive and ``b""`` at the end;
    for aiohttp it is the stream's own ``readany``, so reading costs nothing extra.
    """

    __slots__ = (
        "_finish",
        "content_type",
        "deadline",
        "headers",
        "read_chunk",
        "status",
        "total_timeout",
        "url",
    )

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        content_type: str,
        url: str,
        read_chunk: Callable[[], Awaitable[bytes]],
        finish: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.url = url
        self.read_chunk = read_chunk
        self._finish = finish
        self.total_timeout: float | None = None  # the call's total_timeout, if any ...
        self.deadline: float | None = None  # ... and the time.monotonic() at which it runs out

    async def read(self) -> bytes:
        """The whole remaining body."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def release(self, drain: bool = True) -> None:
        """Give the connection back to the pool (after a bounded drain of what is left), else close it."""
        await self._finish(drain)


# ------------------------------------------------------------------- requests

_checked_url = functools.lru_cache(maxsize=256)(check_url)  # URLs repeat: check each once

_timeouts: OrderedDict[tuple[float | None, float | None], aiohttp.ClientTimeout] = OrderedDict()


def _timeout(timeout: float | None, total_timeout: float | None) -> aiohttp.ClientTimeout:
    """The (shared, immutable) ``ClientTimeout`` for these limits; the cache keeps the most recent few."""
    key = (timeout, total_timeout)
    value = _timeouts.get(key)
    if value is None:
        value = _timeouts[key] = aiohttp.ClientTimeout(
            total=total_timeout, connect=None, sock_connect=timeout, sock_read=timeout
        )
        if len(_timeouts) > TIMEOUT_CACHE_SIZE:
            _timeouts.popitem(last=False)
    return value


def env_proxy(url: str) -> str | None:
    """The proxy the environment asks for this URL (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``), honouring ``NO_PROXY``."""
    env = os.environ
    data = getattr(env, "_data", None)  # CPython's store behind os.environ: bytes keys on POSIX
    if (
        _POSIX
        and type(data) is dict
        and b"HTTPS_PROXY" not in data
        and b"https_proxy" not in data
        and b"HTTP_PROXY" not in data
        and b"http_proxy" not in data
        and b"ALL_PROXY" not in data
        and b"all_proxy" not in data
    ):
        return None  # the common case, on every request: no proxy set (a miss in os.environ.get costs ~1 µs)
    if url.startswith("https:"):
        proxy = env.get("HTTPS_PROXY") or env.get("https_proxy")
    else:
        proxy = env.get("HTTP_PROXY") or env.get("http_proxy")
    proxy = proxy or env.get("ALL_PROXY") or env.get("all_proxy")
    if not proxy:
        return None
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127.") or proxy_bypass_environment(host):
        return None
    return proxy


def _ssl_argument(ssl: Any) -> Any:
    if ssl is None or ssl is True:
        return True
    if ssl is False or isinstance(ssl, ssl_module.SSLContext):
        return ssl
    raise ValueError(f"ssl must be None, True, False or an ssl.SSLContext, not {type(ssl).__name__}")


async def open_response(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    proxy: str | None = None,
    ssl: Any = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    total_timeout: float | None = None,
    impersonate: str | None = None,
    provider: str | None = None,
    secrets: Iterable[str | None] = (),
) -> Response:
    """Send a request; return the open :class:`Response`, or raise the typed error for its status.

    ``timeout``/``total_timeout`` as :func:`~llmrelay.http.checks.check_timeout` reads them (``None``:
    the default; ``inf``: no limit). Bad arguments raise ``TypeError``/``ValueError`` before anything
    is sent. The caller must ``await response.release()`` when done with it.
    """
    secrets, idle, total = check_request(url, headers, secrets, timeout, total_timeout)
    return await send_checked(method, url, headers, body, proxy, ssl, idle, total, impersonate, provider, secrets)


def check_request(
    url: str,
    headers: Mapping[str, str],
    secrets: Iterable[str | None],
    timeout: float | None,
    total_timeout: float | None,
) -> tuple[tuple[str | None, ...], float | None, float | None]:
    """The checks :func:`open_response` runs before sending: (the secrets as a tuple, the idle and total limits in
    seconds, ``None`` for none); ``TypeError``/``ValueError`` with no secret in it for a bad argument."""
    secrets = check_secrets(secrets)
    idle = check_timeout("timeout", timeout)
    total = check_timeout("total_timeout", total_timeout)
    failure: Exception | None = None
    try:
        _checked_url(url)
    except ValueError as error:
        failure = ValueError(redact(str(error), secrets))
    else:
        try:
            check_headers(headers)
        except (TypeError, ValueError) as error:
            failure = type(error)(redact(f"cannot send the request to {_host(url)}: {error}", secrets))
    if failure is not None:
        raise failure  # outside the except block: nothing unredacted is chained
    return secrets, idle, total


async def send_checked(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    proxy: str | None,
    ssl: Any,
    idle: float | None,
    total: float | None,
    impersonate: str | None,
    provider: str | None,
    secrets: tuple[str | None, ...],
) -> Response:
    """:func:`open_response` after :func:`check_request` passed on these arguments (``idle`` / ``total``: what it
    returned; a caller may keep them for the next request with the same arguments)."""
    started = time.monotonic()
    if body is not None and len(body) <= SMALL_BODY:
        # aiohttp keeps the body alive until the response is released. orjson.dumps returns its bytes
        # shrunk in place from a larger malloc'd buffer, which pins ~4 KB of RSS per open stream
        # (measured with 500 concurrent streams); an exact-size copy costs ~0.2 µs and pins nothing.
        body = bytes(memoryview(body))
    if proxy is None:
        proxy = env_proxy(url)
    socks_proxy = proxy if proxy and proxy.startswith("socks") else None
    session = get_session(socks_proxy, impersonate)
    if impersonate:
        response = await _open_curl(session, method, url, headers, body, proxy, ssl, idle, total, provider, secrets)
    else:
        response = await _open_aiohttp(
            session, method, url, headers, body, None if socks_proxy else proxy, ssl, idle, total, provider, secrets
        )
    if response.status >= 400:
        try:
            error_body = await _read_bounded(response.read_chunk, ERROR_BODY_LIMIT)
        except TRANSPORT_ERRORS:
            error_body = b""
        finally:
            await response.release()
        raise error_from_response(response.status, response.headers, error_body, provider=provider, secrets=secrets)
    if total:
        response.total_timeout = total
        response.deadline = started + total
    return response


async def _read_bounded(read_chunk: Callable[[], Awaitable[bytes]], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await read_chunk()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


async def _open_aiohttp(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    proxy: str | None,
    ssl: Any,
    timeout: float | None,
    total_timeout: float | None,
    provider: str | None,
    secrets: tuple[str | None, ...],
) -> Response:
    ssl_argument = _ssl_argument(ssl)
    started = time.monotonic()
    failure: BaseException | None = None
    for attempt in (0, 1):
        new_connection.set(False)
        try:
            raw = await session.request(
                method,
                url,
                data=body,
                headers=headers,
                proxy=proxy,
                ssl=ssl_argument,
                timeout=_timeout(timeout, total_timeout),
            )
            break
        except Exception as error:
            # A pooled keep-alive connection the server closed (or reset) while the request was on its
            # way, or before it could be written: send it again once, on a new connection. A new
            # connection that drops the request means the server itself gave up: sending a POST again
            # could run it twice.
            if attempt == 0 and not new_connection.get() and _is_stale_connection(error):
                continue
            failure = _request_error(error, url, timeout, total_timeout, started, provider, secrets)
        # Raised here, outside the ``except`` block, so that no aiohttp exception (whose text may hold
        # the URL, key included) is chained as ``__context__``.
        assert failure is not None
        raise failure

    async def finish(drain: bool) -> None:
        content = raw.content
        if drain and not content.at_eof():
            try:
                await asyncio.wait_for(_read_bounded(content.readany, DRAIN_LIMIT), DRAIN_SECONDS)
            except Exception:
                pass
        if content.at_eof():
            raw.release()
        else:
            raw.close()

    return Response(
        raw.status, raw.headers, _content_type(raw), redact(str(raw.url), secrets), raw.content.readany, finish
    )


# Content-Type header value -> aiohttp's media type of it; the values come from upstreams: at most _TYPES_KEPT.
_types: dict[str | None, str] = {}
_TYPES_KEPT = 64


def _content_type(raw: aiohttp.ClientResponse) -> str:
    """``raw.content_type``, parsed once per distinct header value (parsing it copies a dict per response)."""
    header = raw.headers.get("Content-Type")
    found = _types.get(header)
    if found is None:
        found = raw.content_type
        if len(_types) < _TYPES_KEPT:
            _types[header] = found
    return found


# aiohttp >= 3.10 names these; on 3.9 they are plain InvalidURL errors
_REDIRECT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(aiohttp, name) for name in ("RedirectClientError",) if hasattr(aiohttp, name)
)
_INVALID_URL_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.InvalidURL,
    *(getattr(aiohttp, name) for name in ("NonHttpUrlClientError",) if hasattr(aiohttp, name)),
)


def _request_error(
    error: Exception,
    url: str,
    timeout: float | None,
    total_timeout: float | None,
    started: float,
    provider: str | None,
    secrets: tuple[str | None, ...],
) -> BaseException:
    """The llmrelay error (or ``ValueError``) for what ``session.request`` raised."""
    if isinstance(error, RelayError):
        return error
    if _answer_started(error):
        return StreamIncompleteError(
            f"the connection to {_host(url)} broke in the middle of the answer's headers",
            partial_text="",
            provider=provider,
        )
    if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError)):
        return ConnectError(_describe(error, url, secrets), provider=provider)  # TLS errors too: they are ValueErrors
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError(f"connecting to {_host(url)} timed out after {timeout} s", provider=provider)
    if isinstance(error, asyncio.TimeoutError):
        if total_timeout and time.monotonic() - started >= total_timeout - 0.05:
            reason = f"total_timeout={total_timeout} s ran out"
        else:
            reason = f"no answer within timeout={timeout} s"
        return TimeoutError(f"{_host(url)}: {reason}", provider=provider)
    if isinstance(error, (aiohttp.TooManyRedirects, *_REDIRECT_ERRORS)):
        where = "too many redirects" if isinstance(error, aiohttp.TooManyRedirects) else "a redirect to an invalid URL"
        return ResponseError(f"the answer from {_host(url)} was {where}", provider=provider)
    if isinstance(error, aiohttp.ClientResponseError) and not isinstance(error, aiohttp.ClientHttpProxyError):
        # Bytes came back, so the request reached the server: not a connection failure, never sent again.
        # (The error's status is aiohttp's own 400 for a parser error, not the server's.)
        return ResponseError(
            redact(f"the answer from {_host(url)} is not valid HTTP: {_parser_reason(error)}", secrets),
            provider=provider,
        )
    if isinstance(error, _INVALID_URL_ERRORS):
        return ValueError(redact(f"invalid URL {url!r}: {type(error).__name__}", secrets))
    if isinstance(error, ValueError):
        # Bad input aiohttp refused before sending (a header with a line break, a bad proxy URL).
        return ValueError(redact(f"cannot send the request to {_host(url)}: {error}", secrets))
    if isinstance(error, (aiohttp.ClientError, OSError)):
        return ConnectError(_describe(error, url, secrets), provider=provider)
    return error


def _parser_reason(error: BaseException) -> str:
    """What aiohttp's HTTP parser disliked, in one line."""
    cause = error.__cause__
    if isinstance(cause, HttpProcessingError):
        text = str(cause.message)
    elif isinstance(error, HttpProcessingError):
        text = str(error.message)
    else:
        text = str(getattr(error, "message", "") or error)
    return text.strip().partition("\n")[0][:200] or type(error).__name__


async def _open_curl(
    session: Any,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    proxy: str | None,
    ssl: Any,
    timeout: float | None,
    total_timeout: float | None,
    provider: str | None,
    secrets: tuple[str | None, ...],
) -> Response:
    from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
    from curl_cffi.requests.exceptions import Timeout as CurlTimeout

    verify = ssl if isinstance(ssl, bool) else True
    failure: BaseException | None = None
    try:
        raw = await session.request(
            method,
            url,
            data=body,
            headers=dict(headers),
            proxy=proxy,
            verify=verify,
            timeout=(timeout, timeout) if total_timeout is None else total_timeout,
            stream=True,
        )
    except CurlTimeout:
        failure = TimeoutError(f"no answer from {_host(url)} within {timeout} s", provider=provider)
    except CurlConnectionError as error:
        failure = ConnectError(_describe(error, url, secrets), provider=provider)
    if failure is not None:
        raise failure  # outside the except block: nothing of curl's is chained (see _open_aiohttp)

    chunks = raw.aiter_content()

    async def read_chunk() -> bytes:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return b""

    async def finish(drain: bool) -> None:
        await raw.aclose()

    content_type = (raw.headers.get("content-type") or "").split(";")[0].strip().lower()
    return Response(raw.status_code, raw.headers, content_type, redact(str(raw.url), secrets), read_chunk, finish)


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


_STALE_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


def _is_stale_connection(error: BaseException) -> bool:
    """A server closed (or reset) the connection before reading the request: the keep-alive race.

    aiohttp reports it as a disconnect, a reset, or — when the close is noticed between writing the
    headers and the body — ``ClientOSError("Can not write request body …")`` caused by a reset.
    """
    if _answer_started(error):
        return False  # the server read the request and began to answer it
    link: BaseException | None = error
    for _ in range(4):
        if link is None:
            break
        if isinstance(link, (aiohttp.ServerDisconnectedError, ConnectionResetError, BrokenPipeError)):
            return True
        if isinstance(link, OSError) and link.errno in _STALE_ERRNOS:
            return True
        link = link.__cause__ or link.__context__
    return isinstance(error, aiohttp.ClientOSError) and str(error).startswith("Can not write request body")


def _answer_started(error: BaseException) -> bool:
    """The server closed the connection after sending part of the answer's head (aiohttp then puts
    the partial head, not a text, in the error's message)."""
    return isinstance(error, aiohttp.ServerDisconnectedError) and not isinstance(error.message, (str, type(None)))


def _describe(error: BaseException, url: str, secrets: Iterable[str | None]) -> str:
    os_error = getattr(error, "os_error", None)  # aiohttp's connector errors wrap the OSError that says why
    if isinstance(os_error, ssl_module.SSLError):
        detail = getattr(os_error, "verify_message", None) or os_error.reason or str(os_error)
        reason = f"TLS failed: {detail}"
        if isinstance(os_error, ssl_module.SSLCertVerificationError):
            reason = f"TLS certificate not trusted: {detail} (pass an ssl.SSLContext that trusts it, or ssl=False)"
    elif isinstance(os_error, OSError) and (os_error.errno or os_error.strerror):
        code = os_error.errno
        # DNS errors carry negative codes that os.strerror does not know
        reason = os.strerror(code) if isinstance(code, int) and code > 0 else str(os_error.strerror or os_error)
    else:
        reason = str(error) or type(error).__name__
    return redact(f"cannot reach {_host(url)}: {reason}", secrets)


def stream_error(
    error: BaseException,
    *,
    partial_text: str,
    url: str,
    timeout: float | None,
    provider: str | None,
    total_timeout: float | None = None,
    deadline: float | None = None,
) -> StreamIncompleteError:
    """The error for a body that broke (or stalled past ``timeout``, or ran past ``total_timeout``) mid-answer."""
    if isinstance(error, asyncio.TimeoutError):
        if deadline is not None and time.monotonic() >= deadline - 0.05:
            return StreamTimeoutError(
                f"the answer from {_host(url)} was cut off: total_timeout={total_timeout} s ran out",
                partial_text=partial_text,
                provider=provider,
            )
        return StreamTimeoutError(
            f"the stream from {_host(url)} stalled: no data for {timeout} s",
            partial_text=partial_text,
            provider=provider,
        )
    if isinstance(error, HttpProcessingError):
        reason = f"the answer is not valid HTTP: {_parser_reason(error)}"
    else:
        reason = str(error) or type(error).__name__
    return StreamIncompleteError(
        f"the connection to {_host(url)} broke mid-answer: {reason}", partial_text=partial_text, provider=provider
    )
