"""Running the gateway: bind, print the one startup line, serve, drain on SIGTERM / SIGINT (SPEC 8.1, 8.9)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sys
from typing import Any, TextIO, cast

from aiohttp import web

from .app import Gateway
from .config import Config
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


def make_state(config: Config) -> State | None:
    """The shared state for ``redis_url`` (SPEC 8.8), else None (the gateway keeps it in memory)."""
    if not config.server.redis_url:
        return None
    import importlib

    redis_state = importlib.import_module("llmrelay.server.redis_state")  # the scale-out issue's module
    state: State = redis_state.RedisState(config.server.redis_url)
    return state


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    stderr: TextIO | None = None,
    stop: asyncio.Event | None = None,
    sock: Any = None,
    announce: bool = True,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM / SIGINT), then drain: in-flight requests and streams finish
    (up to ``drain_timeout_s``) while no new connection is accepted."""
    stderr = stderr or sys.stderr
    app = gateway.build_app()
    drain = gateway.config.server.drain_timeout_s
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=drain
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
        if announce:
            stderr.write(startup_line(gateway.config, host, bound) + "\n")
            stderr.flush()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(number, stop.set)
        await stop.wait()
        gateway.draining = True
        if server is not None:
            server.close()  # stop accepting; open connections (and their streams) go on
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gateway.idle.wait(), drain)
    finally:
        await runner.cleanup()
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(number)


def _run_loop(config: Config, host: str, port: int, log_format: str, stderr: TextIO | None, sock: Any = None) -> None:
    async def main() -> None:
        state = make_state(config)
        gateway = Gateway(config, state, log_format=log_format)
        await serve(gateway, host, port, stderr=stderr, sock=sock, announce=sock is None)

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def run(
    config: Config, host: str, port: int, *, log_format: str = "text", stderr: TextIO | None = None, workers: int = 1
) -> int:
    """Serve until SIGTERM / SIGINT; the exit status. ``workers > 1``: that many processes accept connections on
    one listening socket (each keeps its own state unless ``redis_url`` is set)."""
    if workers <= 1:
        _run_loop(config, host, port, log_format, stderr)
        return 0
    return _run_workers(config, host, port, log_format, stderr or sys.stderr, workers)


def _run_workers(config: Config, host: str, port: int, log_format: str, stderr: TextIO, workers: int) -> int:
    import os
    import socket

    if not config.server.redis_url and any(key.limited for key in config.keys):
        stderr.write(
            f"warning: {workers} workers without redis_url: each worker keeps its own rpm / tpm / "
            "max_concurrent counters (a key gets up to that many times its limits)\n"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), port), family=family, backlog=1024)
    bound = sock.getsockname()[1]
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: serve on the shared socket until told to stop
            code = 0
            try:
                _run_loop(config, host, port, log_format, stderr, sock)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()  # the workers hold it

    def forward(number: int, frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    stderr.write(startup_line(config, host, bound) + f" [{workers} workers]\n")
    stderr.flush()
    status = 0
    for child in children:
        _, wait_status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(wait_status) != 0:
            status = 1
    return status
