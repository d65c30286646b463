"""Running a batch: check, resume, send, write, report (SPEC 10.1–10.7); the local backend's loop.

``run_batch(settings)`` is the whole command: it checks the input (exit 2 with ``INPUT:LINE`` problems and no
request sent), reads what a previous run finished, streams the remaining lines through a pool of
``max_concurrency`` workers (each holds one line at a time: memory is bounded by the pool, not the file), and
appends each result as it completes. Ctrl-C stops new starts, gives requests in flight up to
:data:`DRAIN_S` seconds, flushes the file and exits 130: the same command continues the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .inputs import Checked, InputError, Line, check_input, parse_line
from .limits import Gate, Limits
from .lines import Done, run_line
from .operations import OPERATIONS, Router, check_body
from .output import Appender, Previous, prepare
from .progress import Progress

__all__ = ["DRAIN_S", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Settings", "Stats", "run_batch"]

DRAIN_S = 10.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Settings:
    input: Path
    output: Path
    label: str  # the input path as the user wrote it (problems are reported with it)
    provider: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    max_concurrency: int = 64
    rpm: float | None = None
    tpm: int | None = None
    max_attempts: int = 5
    backend: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    json: bool = False

    def router(self) -> Router:
        return Router(self.provider, self.api_base, self.api_key, self.timeout)


@dataclass
class Stats:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0

    def add(self, done: Done) -> None:
        if done.succeeded:
            self.succeeded += 1
        else:
            self.failed += 1
        self.retries += done.retries
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class UsageProblemError(Exception):
    """A problem with the command line or the provider settings: one line, exit 2."""


def check(settings: Settings, router: Router) -> Checked:
    """Check the input file; also resolve each model's provider and require its key (once per provider)."""

    def check_line(url: str, body: dict[str, Any]) -> str | None:
        problem = check_body(url, body)
        if problem is None:
            try:
                cls, _ = router.resolve(body["model"])
            except ValueError as error:
                raise UsageProblemError(str(error)) from None
            router.check_auth(cls)
        return problem

    return check_input(settings.input, check_line, settings.label)


def pending_lines(settings: Settings, previous: Previous, stats: Stats) -> Iterator[Line]:
    """The lines still to send, streamed from the (already checked) input; done ones are counted as skipped."""
    resuming = bool(previous.succeeded or previous.failed)
    with open(settings.input, "rb") as file:  # iter_lines, written out (one generator less per line)
        for number, raw in enumerate(file, 1):
            if not raw.strip():
                continue
            line = _read_checked(number, raw)
            if isinstance(line, str):  # the file changed since it was checked
                raise InputError([f"{settings.label}:{number}: {line}"])
            if resuming:
                status = previous.status_of(line.custom_id)
                if status is not None:
                    stats.skipped += 1
                    stats.skipped_failed += not status
                    continue
            yield line


def _read_checked(number: int, raw: bytes) -> Line | str:
    """A line of the checked input again: the common line, whose four fields hold what the check let through, is
    taken as it is; anything else goes through :func:`parse_line` (which names what changed)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is dict and len(data) == 4:
        custom_id, url, body = data.get("custom_id"), data.get("url"), data.get("body")
        if (
            type(custom_id) is str
            and custom_id
            and type(url) is str
            and url in OPERATIONS
            and type(body) is dict
            and data.get("method") == "POST"
            and body.get("stream") is not True
        ):
            return Line(number, custom_id, url, body, raw)
    return parse_line(number, raw, _checked_before)


def _checked_before(url: str, body: dict[str, Any]) -> str | None:
    """The bodies were checked by :func:`check`; the second pass only needs the line's fields."""
    return None if url in OPERATIONS else f"'url' must be one of {', '.join(OPERATIONS)}, not {url!r}"


class _Stop:
    """Ctrl-C: the first stops new starts (requests in flight finish, up to DRAIN_S); a second cancels them."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.hard = asyncio.Event()

    def interrupt(self) -> None:
        if self.event.is_set():
            self.hard.set()
        self.event.set()

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the run is stopping (then at once)."""
        if self.event.is_set():
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return not self.event.is_set()


def summary_line(stats: Stats, output: Path, interrupted: bool) -> str:
    rate = stats.finished / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    head = "batch interrupted (run the same command to continue)" if interrupted else "batch done"
    return (
        f"{head}: {stats.total} lines, {stats.succeeded} succeeded, {stats.failed} failed, "
        f"{stats.skipped} skipped (done before), {stats.retries} retries, {stats.elapsed_s:.1f} s "
        f"({rate:.1f} requests/s), tokens {stats.prompt_tokens} prompt + {stats.completion_tokens} completion; "
        f"output: {output}"
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (a dependency on Linux; about a fifth less CPU per request), else
    asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _run_local(settings: Settings, router: Router, lines: Iterator[Line], progress: Progress) -> bool:
    """Send every line; True when interrupted."""
    stats = progress.stats
    gate = Gate(Limits(settings.max_concurrency, settings.rpm, settings.tpm))
    progress.limits = gate.limits
    stop = _Stop()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.interrupt)
    appender = Appender(settings.output)

    async def worker() -> None:
        for line in lines:
            if stop.event.is_set():
                return
            done = await run_line(line, router, gate, settings.max_attempts, stop.sleep)
            if done is None:
                return
            appender.write(done.data)
            stats.add(done)

    workers = [asyncio.ensure_future(worker()) for _ in range(settings.max_concurrency)]
    ticker = asyncio.ensure_future(progress.run())
    stopper = asyncio.ensure_future(stop.event.wait())
    try:
        pending: set[asyncio.Future[Any]] = {*workers, stopper}
        while not stop.event.is_set() and not all(task.done() for task in workers):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if stop.event.is_set():
            gate.close()
            hard: asyncio.Future[Any] = asyncio.ensure_future(stop.hard.wait())
            drained: asyncio.Future[Any] = asyncio.gather(*workers, return_exceptions=True)
            await asyncio.wait([drained, hard], timeout=DRAIN_S)
            hard.cancel()
        for task in workers:
            task.cancel()
        results = await asyncio.gather(*workers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
    finally:
        stopper.cancel()
        ticker.cancel()
        gate.close()
        appender.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    return stop.event.is_set()


def _finish(settings: Settings, stats: Stats, interrupted: bool) -> int:
    stats.elapsed_s = time.monotonic() - stats.started
    sys.stderr.write(summary_line(stats, settings.output, interrupted) + "\n")
    sys.stderr.flush()
    if settings.json:
        sys.stdout.write(json.dumps(stats.to_dict()) + "\n")
        sys.stdout.flush()
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if stats.failed or stats.skipped_failed else EXIT_OK


def run_batch(settings: Settings) -> int:
    """The ``llmrelay batch`` command; returns its exit status (problems with the input raise InputError)."""
    router = settings.router()
    total = check(settings, router).lines  # the hashes of the input ids go once checked
    previous = prepare(settings.output)
    stats = Stats(total=total)
    lines = pending_lines(settings, previous, stats)
    progress = Progress(stats, len(previous.succeeded) + len(previous.failed))
    if settings.backend == "ray":
        from .ray_backend import run_ray

        interrupted = run_ray(settings, lines, progress)
    else:
        loop = _new_loop()
        try:
            interrupted = loop.run_until_complete(_run_local(settings, router, lines, progress))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    progress.close()
    return _finish(settings, stats, interrupted)
