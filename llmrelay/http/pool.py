"""The session pool: one HTTP session per event loop and (SOCKS proxy, impersonation).

* Connections are reused across calls and providers, with no connection cap.
* A loop's sessions close when the loop shuts down its async generators (``asyncio.run``
  and ``asyncio.Runner`` do), and its pool entry goes with them, so a process that calls
  ``asyncio.run`` once per request keeps no loop or session alive per call. A loop closed
  without that step (``loop.close()`` alone) keeps its sessions, and with them itself,
  until :func:`close_sessions` runs on it or the interpreter exits: its open sockets could
  not be closed cleanly any more. No "Unclosed client session" warning is printed.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import MissingRequirementsError
from ._aiohttp_hooks import Connector, socks_connector

__all__ = ["close_sessions", "get_session"]

# loop -> {(socks_proxy, impersonate): (session, closer)}. The values reference their loop (through the
# session), so an entry must be removed explicitly for its loop to be freed: at the loop's asyncgen
# shutdown (see _close_with_loop) or by close_sessions().
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()
# id(loop) -> (weak loop, its plain aiohttp session): the pool's entry for (None, None), found without the weak
# dictionary's per-lookup weakref. Weak, so it keeps no loop alive; a closed session is looked up again.
_plain: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], Any]] = {}


async def _close_with_loop(session: Any, key: tuple[Any, ...]) -> AsyncIterator[None]:
    """Parked at its ``yield`` for the session's life; ``loop.shutdown_asyncgens`` runs the ``finally``."""
    try:
        yield
    finally:
        await _close_session(session)
        _forget(asyncio.get_running_loop(), key, session)


def _forget(loop: asyncio.AbstractEventLoop, key: tuple[Any, ...], session: Any) -> None:
    with _pools_lock:
        plain = _plain.get(id(loop))
        if plain is not None and plain[1] is session:
            del _plain[id(loop)]
        pool = _pools.get(loop)
        if pool is not None:
            entry = pool.get(key)
            if entry is not None and entry[0] is session:
                del pool[key]
            if not pool:
                _pools.pop(loop, None)


async def _close_session(session: Any) -> None:
    try:
        await session.close()  # aiohttp.ClientSession and curl_cffi's AsyncSession alike
    except Exception:  # closing at shutdown must never raise
        pass


def _park_closer(session: Any, key: tuple[Any, ...]) -> AsyncIterator[None]:
    closer = _close_with_loop(session, key)
    step: Any = closer.__anext__()
    try:
        step.send(None)  # runs to the ``yield`` without suspending; registers the generator with the loop
    except StopIteration:
        pass
    return closer


def _make_session(socks_proxy: str | None, impersonate: str | None) -> Any:
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
            import aiohttp_socks  # noqa: F401
        except ImportError:
            raise MissingRequirementsError("a SOCKS proxy needs aiohttp-socks: pip install 'llmrelay[socks]'") from None
        connector: aiohttp.BaseConnector = socks_connector(socks_proxy)
    else:
        connector = Connector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)


def get_session(socks_proxy: str | None = None, impersonate: str | None = None) -> Any:
    """The pooled session of the running loop for this (SOCKS proxy, impersonation)."""
    loop = asyncio.get_running_loop()
    if socks_proxy is None and impersonate is None:  # the common case, on every request
        plain = _plain.get(id(loop))
        if plain is not None and plain[0]() is loop and not plain[1].closed:
            return plain[1]
    pool = _pools.get(loop)
    key = (socks_proxy, impersonate)
    if pool is not None:
        entry = pool.get(key)
        if entry is not None and not _is_closed(entry[0]):
            return entry[0]
    with _pools_lock:
        pool = _pools.setdefault(loop, {})
        session = _make_session(socks_proxy, impersonate)
        pool[key] = (session, _park_closer(session, key))
        if socks_proxy is None and impersonate is None:
            _plain[id(loop)] = (weakref.ref(loop), session)
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
        _plain.pop(id(loop), None)
    for session, closer in pool.values():
        await _close_session(session)
        await closer.aclose()


@atexit.register
def _close_all_at_exit() -> None:
    with _pools_lock:
        pools = list(_pools.items())
        _pools.clear()
        _plain.clear()
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
    """Mark a session of a loop that is gone as closed, without the loop."""
    connector = getattr(session, "connector", None)
    if connector is not None:
        try:
            connector._close()
        except Exception:
            pass
