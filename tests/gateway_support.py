"""An in-process gateway for tests: :class:`Running` serves a :class:`~llmrelay.server.app.Gateway` on its own
event loop in a background thread (port 0), the way ``llmrelay serve`` does, and collects its stderr lines."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrelay.server.app import Gateway
from llmrelay.server.serve import serve

STARTUP = re.compile(r"llmrelay gateway on http://([^ ]+):(\d+) \(providers: .*; routes: .*\)")


class Address:
    """The URLs of a gateway listening on ``port`` on the loopback interface."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return self.url + "/v1"


class Running(Address):
    """A gateway served on a loop in a background thread."""

    def __init__(self, gateway: Gateway, log: list[str]) -> None:
        self.gateway = gateway
        self.log_lines = log
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._done = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="gateway")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as error:  # surfaced by start()/stop()
            self.error = error
        finally:
            self._ready.set()
            self.loop.close()
            self._done.set()

    async def _main(self) -> None:
        from llmrelay.http.session import close_sessions

        self._stop = asyncio.Event()
        stream = Lines(self.log_lines, self._started)
        try:
            await serve(self.gateway, "127.0.0.1", 0, stderr=stream, stop=self._stop)  # type: ignore[arg-type]
        finally:
            await close_sessions()

    def _started(self, line: str) -> None:
        match = STARTUP.search(line)
        if match and not self.port:
            self.port = int(match.group(2))
            self._ready.set()

    def start(self) -> Running:
        self.thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        assert self.port, "the gateway did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None and not self._done.is_set():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "the gateway did not stop"

    def run(self, coroutine: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the gateway's loop (e.g. to look at its state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def access_lines(self) -> list[str]:
        return [line for line in self.log_lines if not line.startswith("llmrelay gateway on")]


class Lines:
    """A text stream collecting lines (the access log) into a list."""

    def __init__(self, lines: list[str], on_line: Callable[[str], None]) -> None:
        self.lines = lines
        self.on_line = on_line

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.append(line)
            self.on_line(line)
        return len(text)

    def flush(self) -> None:
        pass


def llmrelay_command() -> str:
    found = Path(sys.executable).parent / "llmrelay"
    if found.exists():
        return str(found)
    which = shutil.which("llmrelay")
    assert which, "the llmrelay command is not installed (pip install -e .)"
    return which
