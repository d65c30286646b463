"""The stream writer: an opened answer, or a cached list of events, written through a door's renderer.

One SSE write per upstream event as it arrives (8.5, 9.1.5), keep-alives while the upstream is silent, and the
in-band error (in the door's shape) when the upstream fails after output started.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..client.router import END, Opened
from ..errors import RelayError
from ..responses import Usage
from .doors import Renderer
from .exchange import Exchange
from .metrics import Metrics
from .problems import problem_of

__all__ = ["StreamWriter"]


class _Live:
    """A stream being written, for the keep-alive ticker."""

    __slots__ = ("keepalive", "last", "response", "writing")

    def __init__(self, response: web.StreamResponse, keepalive: bytes, now: float) -> None:
        self.response = response
        self.keepalive = keepalive
        self.last = now
        self.writing = False


class StreamWriter:
    """Writes streams; :meth:`start` / :meth:`stop` run the keep-alive ticker (one task for every stream)."""

    def __init__(self, metrics: Metrics, keepalive_s: float) -> None:
        self.metrics = metrics
        self.keepalive_s = keepalive_s
        self._live: set[_Live] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._keepalive_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def pump(
        self, x: Exchange, opened: Opened, renderer: Renderer, kept: list[Any] | None
    ) -> tuple[web.StreamResponse, Usage | None]:
        """Open the response and write the answer as it arrives; every event is also appended to ``kept`` (when
        given). Returns the response and the last usage seen; ``x.entry.status`` says how it ended (200, 499 for a
        caller that hung up, else the in-band error's status)."""
        response = await x.open_stream()
        live = _Live(response, renderer.keepalive, time.monotonic())
        self._live.add(live)
        try:
            return response, await self._write(x, live, opened, renderer, kept)
        finally:
            self._live.discard(live)

    async def _write(
        self, x: Exchange, live: _Live, opened: Opened, renderer: Renderer, kept: list[Any] | None
    ) -> Usage | None:
        response = live.response
        write = response.write
        event = renderer.event
        clock = time.monotonic
        first = None if opened.first is END else opened.first
        usage = first if isinstance(first, Usage) else None
        try:
            if kept is not None and first is not None:
                kept.append(first)
            # What arrived together goes out in one write (e.g. the role chunk with the first piece; the end with
            # the end of the body); every piece is still its own SSE event.
            await write(renderer.start(first))
            live.last = clock()
            self.metrics.observe_ttft(time.perf_counter() - x.entry.start)
            async for item in opened.events:
                if kept is not None:
                    kept.append(item)
                data = event(item)
                if type(item) is not str and isinstance(item, Usage):
                    usage = item
                if data:
                    await write(data)
                    live.last = clock()
            await response.write_eof(renderer.end())
        except ConnectionResetError:
            x.entry.status = 499  # the caller went away: the upstream is closed by the caller of pump
        except Exception as error:
            # After the first byte the status line is gone: the error goes in-band.
            if isinstance(error, RelayError):
                self.metrics.upstream_error(x.entry.provider or "", error)
            problem = problem_of(error)
            x.entry.status = problem.status
            try:
                await write(renderer.error(problem))
                await response.write_eof()
            except ConnectionResetError:
                pass
        return usage

    async def replay(self, x: Exchange, renderer: Renderer, events: list[Any]) -> web.StreamResponse:
        """A cached answer (its events, without ``ProviderInfo``) as one write."""
        response = await x.open_stream()
        parts = [renderer.start(events[0] if events else None)]
        parts.extend([renderer.event(item) for item in events[1:]])
        parts.append(renderer.end())
        try:
            await response.write_eof(b"".join(parts))
        except ConnectionResetError:
            x.entry.status = 499
        return response

    async def _keepalive_loop(self) -> None:
        """Write the renderer's keep-alive to every stream whose upstream has been silent for ``keepalive_s``."""
        interval = self.keepalive_s
        tick = min(1.0, interval / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for live in list(self._live):
                if not live.writing and now - live.last >= interval:
                    live.writing = True
                    live.last = now
                    task = asyncio.create_task(self._keepalive(live))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _keepalive(self, live: _Live) -> None:
        try:
            await live.response.write(live.keepalive)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            live.writing = False
