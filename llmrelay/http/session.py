"""Pooled HTTP sessions and the one function that opens a request.

* One aiohttp ``ClientSession`` per event loop and (SOCKS proxy, impersonation):
  connections are reused across calls and providers, with no connection cap.
* ``timeout`` bounds connecting and every gap between received bytes, never the
  whole answer; ``total_timeout`` (optional) bounds the whole call.
* Sessions close themselves when their loop shuts down (``asyncio.run``) or at
  interpreter exit, so no "Unclosed client session" warning is printed.
* Transport failures become :class:`~llmrelay.errors.ConnectError` /
  :class:`~llmrelay.errors.TimeoutError`; error statuses become typed errors
  through :mod:`llmrelay.http.status`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import errno
import functools
import os
import ssl as ssl_module
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import aiohttp
from aiohttp.client_proto import ResponseHandler

from ..errors import (
    ConnectError,
    ConnectTimeoutError,
    MissingRequirementsError,
    RelayError,
    StreamIncompleteError,
    StreamTimeoutError,
    TimeoutError,
)
from .status import error_from_response, redact

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSPORT_ERRORS",
    "Response",
    "close_sessions",
    "open_response",
    "stream_error",
]

DEFAULT_TIMEOUT = 120.0
ERROR_BODY_LIMIT = 256 * 1024
DRAIN_LIMIT = 64 * 1024
DRAIN_SECONDS = 0.25
SMALL_BODY = 64 * 1024  # request bodies up to this size are copied to exact size (see open_response)

SSLSetting = "bool | ssl_module.SSLContext | None"
_POSIX = os.name == "posix"

# What reading a body can raise besides our own errors; the provider turns them
# into StreamIncompleteError / StreamTimeoutError with :func:`stream_error`.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class Response:
    """An open HTTP response with a successful status.

    ``read_chunk()`` returns the next bytes as they arrive and ``b""`` at the end;
    for aiohttp it is the stream's own ``readany``, so reading costs nothing extra.
    """

    __slots__ = (
        "_finish",
        "_raw",
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
        raw: Any,
        finish: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.url = url
        self.read_chunk = read_chunk
        self._raw = raw
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


# ---------------------------------------------------------------- session pool

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()
_timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}


async def _close_with_loop(session: Any) -> AsyncIterator[None]:
    """Parked at its ``yield`` for the session's life; ``loop.shutdown_asyncgens`` runs the ``finally``."""
    try:
        yield
    finally:
        await _close_session(session)


async def _close_session(session: Any) -> None:
    try:
        await session.close()  # aiohttp.ClientSession and curl_cffi's AsyncSession alike
    except Exception:  # closing at shutdown must never raise
        pass


def _park_closer(session: Any) -> AsyncIterator[None]:
    closer = _close_with_loop(session)
    step: Any = closer.__anext__()
    try:
        step.send(None)  # runs to the ``yield`` without suspending; registers the generator with the loop
    except StopIteration:
        pass
    return closer


def _make_session(loop: asyncio.AbstractEventLoop, socks_proxy: str | None, impersonate: str | None) -> Any:
    if impersonate:
        try:
            from curl_cffi.requests import AsyncSession
        except ImportError:
            raise MissingRequirementsError(
                f"impersonate={impersonate!r} needs curl_cffi: pip install 'llmrelay[impersonate]'"
            ) from None
        return AsyncSession(impersonate=impersonate, proxy=socks_proxy)
    if socks_proxy:
        try:
            from aiohttp_socks import ProxyConnector
        except ImportError:
            raise MissingRequirementsError("a SOCKS proxy needs aiohttp-socks: pip install 'llmrelay[socks]'") from None
        connector: aiohttp.BaseConnector = ProxyConnector.from_url(socks_proxy, limit=0, limit_per_host=0)
    else:
        connector = _Connector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)


# Set when the connector opened a new connection for the request being sent (vs. reusing a pooled one).
# Coroutines awaited in one task share its context, so the request code sees what the connector set.
_new_connection: contextvars.ContextVar[bool] = contextvars.ContextVar("llmrelay_new_connection", default=False)


class _LazyReadTimeoutHandler(ResponseHandler):
    """aiohttp's protocol with an idle-read timer that is not re-armed on every received chunk.

    aiohttp cancels and re-creates its ``sock_read`` timer on each ``data_received``
    (a TimerHandle and a heap push per read). Here a read only records the time; the
    one armed timer, when it fires, re-arms itself for the remaining time if data came
    meanwhile, else raises the timeout as aiohttp would. Same semantics, ~8 % less CPU
    per non-streamed request (measured with ``bench``).
    """

    _last_read = 0.0
    _armed_due = 0.0

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
            return
        now = self._loop.time()
        self._last_read = now
        if self._read_timeout_handle is not None and self._armed_due <= now + timeout:
            return
        if self._read_timeout_handle is not None:
            self._read_timeout_handle.cancel()
        self._armed_due = now + timeout
        self._read_timeout_handle = self._loop.call_at(self._armed_due, self._check_read_timeout)

    def _check_read_timeout(self) -> None:
        self._read_timeout_handle = None
        timeout = self._read_timeout
        if not timeout:
            return
        due = self._last_read + timeout
        if self._loop.time() < due:
            self._armed_due = due
            self._read_timeout_handle = self._loop.call_at(due, self._check_read_timeout)
        else:
            self._on_read_timeout()


_LAZY_TIMER = all(
    hasattr(ResponseHandler, name) for name in ("_reschedule_timeout", "_on_read_timeout", "_drop_timeout")
)


class _Connector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that tells :func:`_open_aiohttp` whether a request got a new connection,
    and whose connections use :class:`_LazyReadTimeoutHandler`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _LAZY_TIMER and isinstance(getattr(self, "_factory", None), functools.partial):
            self._factory = functools.partial(_LazyReadTimeoutHandler, loop=self._loop)  # type: ignore[assignment]

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        _new_connection.set(True)
        return await super()._create_connection(req, traces, timeout)


def get_session(socks_proxy: str | None = None, impersonate: str | None = None) -> Any:
    """The pooled session of the running loop for this (SOCKS proxy, impersonation)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    key = (socks_proxy, impersonate)
    if pool is not None:
        entry = pool.get(key)
        if entry is not None and not _is_closed(entry[0]):
            return entry[0]
    with _pools_lock:
        pool = _pools.setdefault(loop, {})
        session = _make_session(loop, socks_proxy, impersonate)
        pool[key] = (session, _park_closer(session))
    return session


def _is_closed(session: Any) -> bool:
    if isinstance(session, aiohttp.ClientSession):
        return session.closed
    return bool(getattr(session, "_closed", False))


async def close_sessions() -> None:
    """Close every pooled session of the running loop (a later request opens a new one)."""
    loop = asyncio.get_running_loop()
    with _pools_lock:
        pool = _pools.pop(loop, {})
    for session, closer in pool.values():
        await _close_session(session)
        await closer.aclose()


@atexit.register
def _close_all_at_exit() -> None:
    with _pools_lock:
        pools = list(_pools.items())
        _pools.clear()
    for loop, pool in pools:
        for session, _closer in pool.values():
            if _is_closed(session):
                continue
            try:
                if loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(_close_session(session), loop)
                    future.result(timeout=2)
                elif not loop.is_closed():
                    loop.run_until_complete(_close_session(session))
                else:
                    _force_close(session)
            except Exception:
                _force_close(session)


def _force_close(session: Any) -> None:
    """Mark a session of a loop that is gone as closed, without the loop (the process is ending)."""
    connector = getattr(session, "connector", None)
    if connector is not None:
        try:
            connector._close()
        except Exception:
            pass


# ------------------------------------------------------------------- requests


def _timeout(timeout: float | None, total_timeout: float | None) -> aiohttp.ClientTimeout:
    key = (timeout, total_timeout)
    value = _timeouts.get(key)
    if value is None:
        value = _timeouts[key] = aiohttp.ClientTimeout(
            total=total_timeout, connect=None, sock_connect=timeout, sock_read=timeout
        )
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

    The caller must ``await response.release()`` when done with it.
    """
    secrets = tuple(secrets)
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
        response = await _open_curl(
            session, method, url, headers, body, proxy, ssl, timeout, total_timeout, provider, secrets
        )
    else:
        response = await _open_aiohttp(
            session,
            method,
            url,
            headers,
            body,
            None if socks_proxy else proxy,
            ssl,
            timeout,
            total_timeout,
            provider,
            secrets,
        )
    if response.status >= 400:
        try:
            error_body = await _read_bounded(response.read_chunk, ERROR_BODY_LIMIT)
        except TRANSPORT_ERRORS:
            error_body = b""
        finally:
            await response.release()
        raise error_from_response(response.status, response.headers, error_body, provider=provider, secrets=secrets)
    if total_timeout:
        response.total_timeout = total_timeout
        response.deadline = started + total_timeout
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
    secrets: Iterable[str | None],
) -> Response:
    ssl_argument = _ssl_argument(ssl)
    started = time.monotonic()
    for attempt in (0, 1):
        _new_connection.set(False)
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
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError) as error:
            # A pooled keep-alive connection the server closed (or reset) while the request was on
            # its way: send it again once, on a new connection. A new connection that drops the
            # request means the server itself gave up: sending a POST again could run it twice.
            if attempt == 0 and not _new_connection.get() and _is_stale_connection(error):
                continue
            raise ConnectError(_describe(error, url, secrets), provider=provider) from None
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimeoutError(
                f"connecting to {_host(url)} timed out after {timeout} s", provider=provider
            ) from None
        except asyncio.TimeoutError:
            if total_timeout and time.monotonic() - started >= total_timeout - 0.05:
                reason = f"total_timeout={total_timeout} s ran out"
            else:
                reason = f"no answer within timeout={timeout} s"
            raise TimeoutError(f"{_host(url)}: {reason}", provider=provider) from None
        except aiohttp.InvalidURL as error:
            raise ConnectError(f"invalid URL {redact(str(url), secrets)!r}: {error}", provider=provider) from None
        except ValueError as error:
            if isinstance(error, RelayError):
                raise
            # Bad input aiohttp refused before sending (a header with a line break, a bad proxy URL).
            raise ValueError(redact(f"cannot send the request to {_host(url)}: {error}", secrets)) from None
        except (aiohttp.ClientError, OSError) as error:
            raise ConnectError(_describe(error, url, secrets), provider=provider) from None

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
        raw.status, raw.headers, raw.content_type, redact(str(raw.url), secrets), raw.content.readany, raw, finish
    )


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
    secrets: Iterable[str | None],
) -> Response:
    from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
    from curl_cffi.requests.exceptions import Timeout as CurlTimeout

    verify = ssl if isinstance(ssl, bool) else True
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
        raise TimeoutError(f"no answer from {_host(url)} within {timeout} s", provider=provider) from None
    except CurlConnectionError as error:
        raise ConnectError(_describe(error, url, secrets), provider=provider) from None

    chunks = raw.aiter_content()

    async def read_chunk() -> bytes:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return b""

    async def finish(drain: bool) -> None:
        await raw.aclose()

    content_type = (raw.headers.get("content-type") or "").split(";")[0].strip().lower()
    return Response(raw.status_code, raw.headers, content_type, redact(str(raw.url), secrets), read_chunk, raw, finish)


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def _is_stale_connection(error: BaseException) -> bool:
    if isinstance(error, (aiohttp.ServerDisconnectedError, ConnectionResetError)):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.EPIPE)


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
    reason = str(error) or type(error).__name__
    return StreamIncompleteError(
        f"the connection to {_host(url)} broke mid-answer: {reason}", partial_text=partial_text, provider=provider
    )
