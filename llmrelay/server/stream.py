"""The stream writer: an opened answer, or a cached list of events, written through a door's renderer.

Every upstream event is its own SSE event, written as it arrives (8.5, 9.1.5); the events that reached the gateway
together (one upstream read) leave together, in one socket write (see :class:`_Live`). Keep-alives while the
upstream is silent, and the in-band error (in the door's shape) when the upstream fails after output started.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from ..client.router import END, Opened
from ..errors import RelayError
from ..responses import Usage
from .doors import Renderer
from .exchange import Exchange
from .metrics import Metrics
from .problems import problem_of

__all__ = ["WRITE_BUFFER_LIMIT", "StreamWriter"]

WRITE_BUFFER_LIMIT = 0x10000  # bytes queued for the caller's socket before the stream waits for it to drain


class _Live:
    """A stream being written: its pending bytes, and when it last wrote (for the keep-alive ticker).

    :meth:`add` queues an event's bytes and, for the first of a batch, schedules :meth:`flush` with ``call_soon``.
    The callback runs at the loop's next turn: as soon as the stream's task waits for anything (the next upstream
    read), before the loop hands out what that read brings. So the events one upstream read delivered leave in one
    socket write (one HTTP chunk; each still its own SSE event), and an event is never held for a later read.
    """

    __slots__ = (
        "blocked",
        "call_soon",
        "chunked",
        "keepalive",
        "last",
        "pending",
        "response",
        "transport",
        "writer",
        "writing",
    )

    def __init__(self, x: Exchange, response: web.StreamResponse, keepalive: bytes, now: float) -> None:
        self.response = response
        self.keepalive = keepalive
        self.last = now
        self.writing = False
        self.pending: list[bytes] = []
        self.call_soon = asyncio.get_running_loop().call_soon  # once: each get_running_loop() is a getpid()
        self.blocked = False  # a flush found the caller's socket full or gone: the writer must drain or stop
        self.transport: asyncio.Transport | None = x.request.transport
        self.writer: AbstractStreamWriter = x.request.writer
        # aiohttp's payload writer frames the body itself (its own attribute; ``response.chunked`` only says
        # whether chunking was asked for before the head): None for a writer that does not say.
        self.chunked: bool | None = getattr(self.writer, "chunked", None)

    def add(self, data: bytes) -> None:
        pending = self.pending
        if not pending:
            self.call_soon(self.flush)
        pending.append(data)

    def take(self) -> bytes:
        """The pending bytes, now owned by the caller (a scheduled flush then finds nothing to write)."""
        pending = self.pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        return data

    def flush(self) -> None:
        if not self.pending:
            return
        data = self.take()
        transport = self.transport
        if transport is None or transport.is_closing():
            self.blocked = True
            return
        # The response's head went out with the first write (through aiohttp): this is one more body chunk.
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        self.last = time.monotonic()
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self.blocked = True

    async def settle(self) -> None:
        """After a flush found the caller's socket full (wait until it drains) or closed (``ConnectionResetError``)."""
        self.flush()
        self.blocked = False
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the caller closed the connection")
        await self.writer.drain()


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
        live = _Live(x, response, renderer.keepalive, time.monotonic())
        self._live.add(live)
        try:
            return response, await self._write(x, live, opened, renderer, kept)
        finally:
            live.pending.clear()  # whatever ended the stream (a hang-up, a cancel): nothing more is written
            self._live.discard(live)

    async def _write(
        self, x: Exchange, live: _Live, opened: Opened, renderer: Renderer, kept: list[Any] | None
    ) -> Usage | None:
        response = live.response
        event = renderer.event
        first = None if opened.first is END else opened.first
        usage = first if isinstance(first, Usage) else None
        try:
            if kept is not None and first is not None:
                kept.append(first)
            head = renderer.start(first)
            # What arrived together goes out in one write (e.g. the role chunk with the first piece; the end with
            # the end of the body); every piece is still its own SSE event.
            await response.write(head)
            live.last = time.monotonic()
            self.metrics.observe_ttft(time.perf_counter() - x.entry.start)
            # Past the head (sent above), events are queued and flushed per batch; otherwise (a compressed body,
            # never the gateway's own) each goes through aiohttp as it comes.
            direct = bool(head) and live.chunked is not None and not response.compression
            add = live.add
            async for item in opened.events:
                if kept is not None:
                    kept.append(item)
                data = event(item)
                if type(item) is not str and isinstance(item, Usage):
                    usage = item
                if data:
                    if direct:
                        add(data)
                    else:
                        await response.write(data)
                        live.last = time.monotonic()
                if live.blocked:
                    await live.settle()
            await response.write_eof(live.take() + renderer.end() if live.pending else renderer.end())
        except ConnectionResetError:
            x.entry.status = 499  # the caller went away: the upstream is closed by the caller of pump
        except Exception as error:
            await self._fail(x, live, renderer, error)
        return usage

    async def _fail(self, x: Exchange, live: _Live, renderer: Renderer, error: Exception) -> None:
        # After the first byte the status line is gone: the error goes in-band, after what already arrived.
        if isinstance(error, RelayError):
            self.metrics.upstream_error(x.entry.provider or "", error)
        problem = problem_of(error)
        x.entry.status = problem.status
        before = live.take() if live.pending else b""
        try:
            await live.response.write(before + renderer.error(problem))
            await live.response.write_eof()
        except ConnectionResetError:
            pass

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
