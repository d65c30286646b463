"""Every use llmrelay makes of aiohttp's private API, in one small module.

* :class:`LazyReadTimeoutHandler` — aiohttp's connection protocol with a cheaper
  idle-read timer, and a fix for a hang: on bad framing after the headers (a chunk
  size that is not hex), aiohttp's C parser drops the body stream without ending it
  and cancels the idle-read timer, so a reader would wait forever.
* :class:`Connector` — a ``TCPConnector`` whose connections use that protocol and
  that tells the request code whether a request got a new connection;
  :func:`socks_connector` does the same for aiohttp-socks' connector.

aiohttp is pinned ``<4``; :func:`hook_problems` lists what an aiohttp release
changed under these hooks, and ``tests/test_transport.py`` fails loudly on it
(rather than silently losing the timeout fix or the speed).
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["LAZY_TIMER", "Connector", "LazyReadTimeoutHandler", "hook_problems", "new_connection", "socks_connector"]

# Set when the connector opened a new connection for the request being sent (vs. reusing a pooled one).
# Coroutines awaited in one task share its context, so the request code sees what the connector set.
new_connection: contextvars.ContextVar[bool] = contextvars.ContextVar("llmrelay_new_connection", default=False)

_HANDLER_METHODS = ("_reschedule_timeout", "_on_read_timeout", "_drop_timeout", "set_exception", "data_received")
_HANDLER_ATTRIBUTES = ("_read_timeout", "_read_timeout_handle", "_loop", "_payload")


class LazyReadTimeoutHandler(ResponseHandler):
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

    def set_exception(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        super().set_exception(exc, *args, **kwargs)
        payload = self._payload
        if isinstance(exc, HttpProcessingError) and payload is not None:
            # A parser error after the headers: the C parser leaves the body stream open and the timer is
            # gone, so the reader would wait forever. End the body with the error instead.
            if not payload.is_eof() and payload.exception() is None:
                reason = str(exc.message).strip().partition("\n")[0] or type(exc).__name__
                payload.set_exception(aiohttp.ClientPayloadError(f"the response body is not valid HTTP: {reason}"))


def _handler_hooks_available() -> bool:
    return all(callable(getattr(ResponseHandler, name, None)) for name in _HANDLER_METHODS)


LAZY_TIMER = _handler_hooks_available()


class Connector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose connections use :class:`LazyReadTimeoutHandler` and that sets
    :data:`new_connection` when it opens a connection for a request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if LAZY_TIMER and isinstance(getattr(self, "_factory", None), functools.partial):
            self._factory = functools.partial(LazyReadTimeoutHandler, loop=self._loop)  # type: ignore[assignment]

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        new_connection.set(True)
        return await super()._create_connection(req, traces, timeout)


_socks_connector_class: type[aiohttp.BaseConnector] | None = None
_socks_handlers: dict[type, type] = {}


def socks_connector(url: str) -> aiohttp.BaseConnector:
    """aiohttp-socks' ``ProxyConnector`` for ``url``, with the same two hooks as :class:`Connector`.

    aiohttp-socks builds each connection's protocol itself (a ``ResponseHandler`` subclass of its
    own), so the protocol is given :class:`LazyReadTimeoutHandler`'s behaviour by moving it to a
    subclass of both once it exists.
    """
    global _socks_connector_class
    if _socks_connector_class is None:
        from aiohttp_socks import ProxyConnector

        class SocksConnector(ProxyConnector):
            async def _connect_via_proxy(self, *args: Any, **kwargs: Any) -> Any:
                transport, protocol = await super()._connect_via_proxy(*args, **kwargs)
                if LAZY_TIMER and not isinstance(protocol, LazyReadTimeoutHandler):
                    protocol.__class__ = _lazy_variant(type(protocol))
                return transport, protocol

            async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
                new_connection.set(True)
                return await super()._create_connection(req, traces, timeout)

        _socks_connector_class = SocksConnector
    return _socks_connector_class.from_url(url, limit=0, limit_per_host=0)  # type: ignore[attr-defined]


def _lazy_variant(handler_class: type) -> type:
    variant = _socks_handlers.get(handler_class)
    if variant is None:
        variant = _socks_handlers[handler_class] = type(
            f"Lazy{handler_class.__name__}", (LazyReadTimeoutHandler, handler_class), {}
        )
    return variant


def hook_problems(connector: aiohttp.BaseConnector | None = None) -> list[str]:
    """What this aiohttp no longer offers to the hooks above (empty when they all work).

    With ``connector`` (a live connector of the pool), also checks that its connections are built
    with :class:`LazyReadTimeoutHandler` and carry the private attributes it relies on.
    """
    problems = [f"ResponseHandler.{name} is gone" for name in _HANDLER_METHODS if not hasattr(ResponseHandler, name)]
    if not hasattr(aiohttp.TCPConnector, "_create_connection"):
        problems.append("TCPConnector._create_connection is gone")
    if connector is not None and _socks_connector_class is not None and isinstance(connector, _socks_connector_class):
        if not hasattr(connector, "_connect_via_proxy"):
            problems.append("aiohttp-socks' ProxyConnector._connect_via_proxy is gone")
    elif connector is not None:
        factory = getattr(connector, "_factory", None)
        if not isinstance(factory, functools.partial) or factory.func is not LazyReadTimeoutHandler:
            problems.append(f"the connector's protocol factory is {factory!r}, not LazyReadTimeoutHandler")
        else:
            handler = factory()
            problems.extend(
                f"a connection has no {name} attribute" for name in _HANDLER_ATTRIBUTES if not hasattr(handler, name)
            )
    return problems
