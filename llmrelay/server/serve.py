"""Running the gateway: bind, print the one startup line, serve, drain on SIGTERM / SIGINT (SPEC 8.1, 8.9)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import workers
from .app import Gateway
from .config import Config
from .exchange import request_id
from .health import draining_handler
from .state import State

__all__ = ["is_loopback", "run", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def startup_line(config: Config, host: str, port: int) -> str:
    providers = ", ".join(config.providers) or "none"
    routes = ", ".join(config.routes) or "none"
    return f"llmrelay gateway on {_url(host, port)} (providers: {providers}; routes: {routes})"


class _OneLineBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback; a caller's garbage is one line, not a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = " ".join(str(error.message).split())[:200]
            record.msg, record.args = (
                "llmrelay: refused a request that is not valid HTTP (%s): %s",
                (
                    error.code,
                    reason,
                ),
            )
            record.exc_info = record.exc_text = None
        return True


_BAD_REQUEST_FILTER = _OneLineBadRequests()


def _quiet_bad_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if _BAD_REQUEST_FILTER not in logger.filters:
        logger.addFilter(_BAD_REQUEST_FILTER)


def make_state(config: Config) -> State | None:
    """The shared state for ``redis_url`` (SPEC 8.8), else None (the gateway keeps it in memory)."""
    if not config.server.redis_url:
        return None
    import importlib

    redis_state = importlib.import_module("llmrelay.server.redis_state")  # the scale-out issue's module
    state: State = redis_state.RedisState(config.server.redis_url)
    return state


async def _drain(gateway: Gateway, runner: web.AppRunner, seconds: float) -> None:
    """Let open connections (and their streams) finish, up to ``seconds``. The socket stays open meanwhile, so that
    a load balancer polling /health on a new connection sees 503; new connections get no new work."""
    gateway.draining = True
    if runner.server is not None:
        runner.server.request_handler = draining_handler(request_id)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(gateway.idle.wait(), seconds)


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    stderr: TextIO | None = None,
    stop: asyncio.Event | None = None,
    sock: Any = None,
    announce: bool = True,
    ready: Callable[[], object] | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM / SIGINT), then drain: in-flight requests and streams finish
    (up to ``drain_timeout_s``) while new connections get only health answers (503) and 503 ``shutting_down``."""
    stderr = stderr or sys.stderr
    app = gateway.build_app()
    if workers.is_worker():  # --workers N: say which worker answered
        workers.add_worker_header(app)
    drain = gateway.config.server.drain_timeout_s
    _quiet_bad_requests()
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=drain,
        # aiohttp closes a connection whose request head has not fully arrived this long after it opened (or
        # after the last answer on it): a caller that trickles its head (slowloris) cannot hold it forever.
        keepalive_timeout=gateway.config.server.read_timeout_s,
    )
    await runner.setup()
    try:
        if sock is not None:
            site: web.BaseSite = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        server = cast("asyncio.Server | None", site._server)  # its sockets tell the port --port 0 picked
        bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):  # before the startup line: a SIGTERM after it drains
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(number, stop.set)
        _handle_reloads(gateway, loop)
        if announce:
            stderr.write(startup_line(gateway.config, host, bound) + "\n")
            stderr.flush()
        if ready is not None:
            ready()
        await stop.wait()
        await _drain(gateway, runner, drain)
    finally:
        await runner.cleanup()
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(number)


def _handle_reloads(gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
    """SIGHUP: read the configuration file again and swap it in (one at a time; see :mod:`.reload`)."""
    from .reload import reload_gateway, take_early_reload

    lock = asyncio.Lock()
    tasks: set[asyncio.Task[bool]] = set()

    async def one() -> bool:
        async with lock:
            return await reload_gateway(gateway)

    def start() -> None:
        task = loop.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, start)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return  # not the main thread (tests serve in a thread), or no SIGHUP on this platform
    if take_early_reload():
        start()


def run(config: Config, host: str, port: int, *, log_format: str = "text", stderr: TextIO | None = None) -> int:
    """Serve in this process until SIGTERM / SIGINT (SIGHUP reloads the configuration); the exit status."""

    async def main() -> int:
        sock, out = None, stderr
        if workers.is_worker():  # one of --workers N: share the port, report the startup line to the supervisor
            sock, out = workers.listen_socket(host, port), workers.ready_stream()
        if not config.server.redis_url:
            await serve(Gateway(config, make_state(config), log_format=log_format), host, port, stderr=out, sock=sock)
            return 0
        # SPEC 8.8: Redis must answer at start (else one line, exit 1); its failures are counted in the metrics.
        from .redis_state import RedisState, RedisUnavailable

        state = None
        try:
            state = make_state(config)
            assert isinstance(state, RedisState)
            gateway = Gateway(config, state, log_format=log_format)
            state.on_error = gateway.metrics.redis_errors.inc
            await state.connect()
        except RedisUnavailable as error:
            if state is not None:
                await state.close()
            if sock is not None:
                sock.close()
            (stderr or sys.stderr).write(f"error: {error}\n")
            return 1
        await serve(gateway, host, port, stderr=out, sock=sock)
        return 0

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
