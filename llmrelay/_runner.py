"""Running async code from sync code: one background event loop thread.

Sync entry points (``create_completion``, ``get_models``) hand their coroutine to
a single long-lived loop in a daemon thread. That works the same from a plain
script, from many threads at once, and from inside a running event loop
(Jupyter, uvloop), where ``asyncio.run`` would fail. The loop keeps its own
pooled HTTP sessions, so sync calls reuse connections too.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["BackgroundLoop", "iterate_sync", "run_sync"]


class BackgroundLoop:
    """An event loop running in a daemon thread, started on first use and stoppable."""

    def __init__(self, name: str = "llmrelay-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            return loop
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                new_loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(new_loop)
                    new_loop.call_soon(ready.set)
                    new_loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = new_loop
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the background loop and wait for its result."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a sync llmrelay call cannot be made from inside llmrelay's own loop thread")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def iterate(self, generator: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async generator from sync code, one item at a time."""
        loop = self.loop
        step = generator.__anext__
        running: list[asyncio.Task[Any] | None] = [None]

        async def next_item() -> T:
            running[0] = asyncio.current_task()
            return await step()

        pending: concurrent.futures.Future[T] | None = None
        try:
            while True:
                pending = asyncio.run_coroutine_threadsafe(next_item(), loop)
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield item
        finally:
            aclose = getattr(generator, "aclose", None)
            interrupted = pending is not None and not pending.done()
            if interrupted:
                # Interrupted while waiting (Ctrl-C): the step still runs on the loop. Cancel it and
                # wait for it to end, or aclose() would find the generator still running.
                pending.cancel()  # type: ignore[union-attr]
            if (interrupted or aclose is not None) and not loop.is_closed():

                async def stop() -> None:
                    task = running[0]
                    if interrupted and task is not None and not task.done():
                        task.cancel()
                        try:
                            await task
                        except BaseException:
                            pass
                    if aclose is not None:
                        await aclose()

                try:
                    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=5)
                except Exception:
                    pass

    def close(self) -> None:
        """Close the loop's HTTP sessions, stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return
        from .http.session import close_sessions

        async def shutdown() -> None:
            await close_sessions()
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        loop.close()


_shared = BackgroundLoop()
atexit.register(_shared.close)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, inside a running loop or not."""
    return _shared.run(coroutine)


def iterate_sync(generator: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async generator from sync code, inside a running loop or not."""
    return _shared.iterate(generator)
