"""Progress on stderr (SPEC 10.6): a bar on a terminal (tqdm, imported only then), else one line every 10 s."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .limits import Limits
    from .runner import Stats

__all__ = ["Progress"]

LINE_INTERVAL_S = 10.0
BAR_INTERVAL_S = 0.25


def _size(stream: Any) -> tuple[int, int] | None:
    """None: let the bar follow the terminal's size; a fixed size when the terminal reports none (a bare pty, on
    which tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 100, 24
    return None if size.columns and size.lines else (100, 24)


class Progress:
    """Shows ``stats`` while a run goes; ``limits`` (set by the backend) gives the current concurrency."""

    def __init__(self, stats: Stats, previously_done: int = 0, stream: Any = None) -> None:
        self.stats = stats
        self.stream = stream or sys.stderr
        self.limits: Limits | None = None
        self.concurrency: int | None = None  # for a backend whose limits live elsewhere (Ray)
        self._bar: Any = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())

    def _current_concurrency(self) -> int | None:
        return self.limits.concurrency if self.limits is not None else self.concurrency

    def _measure(self) -> float:
        now, finished = time.monotonic(), self.stats.finished
        then, before = self._last
        if now - then >= 1.0:
            self._rate = (finished - before) / (now - then)
            self._last = (now, finished)
        return self._rate

    def _eta(self, rate: float) -> str:
        left = self.stats.total - self.stats.skipped - self.stats.finished
        if rate <= 0 or left <= 0:
            return "?"
        seconds = int(left / rate)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def update(self) -> None:
        stats = self.stats
        rate = self._measure()
        if self.terminal:
            if self._bar is None:
                from tqdm import tqdm

                size = _size(self.stream)
                shape: dict[str, Any] = (
                    {"dynamic_ncols": True} if size is None else {"ncols": size[0], "nrows": size[1]}
                )
                self._bar = tqdm(total=stats.total, file=self.stream, unit="line", leave=True, **shape)
            bar = self._bar
            bar.n = stats.finished + stats.skipped
            bar.set_postfix_str(
                f"failed {stats.failed}, concurrency {self._current_concurrency()}, {rate:.1f} req/s", refresh=False
            )
            bar.refresh()
            return
        self.stream.write(
            f"batch: {stats.finished + stats.skipped}/{stats.total} done, {stats.failed} failed, "
            f"concurrency {self._current_concurrency()}, {rate:.1f} requests/s, ETA {self._eta(rate)}\n"
        )
        self.stream.flush()

    async def run(self) -> None:
        """Update until cancelled."""
        interval = BAR_INTERVAL_S if self.terminal else LINE_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            self.update()

    def close(self) -> None:
        if self._bar is not None:
            self.update()
            self._bar.close()
            self._bar = None
