"""``--backend ray`` (SPEC 10.8): the same run on a Ray cluster.

* One **coordinator** actor holds the :class:`~llmrelay.batch.limits.Gate` for every actor: each attempt asks it
  for a start and reports its outcome, so AIMD, the ``Retry-After`` pause and the rpm/tpm budgets are one state
  for the whole cluster (N actors never exceed what one process would).
* A pool of **line actors**, each owning one :class:`~llmrelay.batch.operations.Router` (one ``AsyncClient`` per
  provider), runs shards of lines and streams each finished line back as it completes (a Ray generator).
  They wait on the network, so each asks for a tenth of a CPU: with one CPU each, a 2-core cluster could not
  place the coordinator and the pool at once.
* The **driver** (this process) reads the input, feeds shards (two per actor, so an actor never idles between
  shards; at most ``2 × shard`` lines per actor are held) and owns the output file: the resume rules and the
  exactly-once writing are the local backend's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .inputs import Line
from .lines import Done
from .output import Appender

if TYPE_CHECKING:
    from .progress import Progress
    from .runner import Settings

__all__ = ["ACTOR_CPUS", "DEFAULT_ACTORS", "run_ray"]

ACTOR_CPUS = 0.1
DEFAULT_ACTORS = 2
SHARDS_PER_ACTOR = 2


class Coordinator:
    """The shared limits (an async Ray actor: its methods run on one event loop)."""

    def __init__(self, max_concurrency: int, rpm: float | None, tpm: int | None) -> None:
        from .limits import Gate, Limits

        self.gate = Gate(Limits(max_concurrency, rpm, tpm))

    async def acquire(self) -> int | None:
        from .limits import Stopped

        try:
            return await self.gate.acquire()
        except Stopped:
            return None

    async def release(self, ticket: int, outcome: tuple[bool, bool, float | None, int]) -> None:
        from .limits import Outcome

        self.gate.release(ticket, Outcome(*outcome))

    async def abandon(self) -> None:
        self.gate.abandon()

    async def close(self) -> None:
        self.gate.close()

    async def state(self) -> dict[str, int]:
        limits = self.gate.limits
        return {"concurrency": limits.concurrency, "max_seen": limits.max_seen, "halvings": limits.halvings}


class _RemoteGate:
    """The coordinator as a line sees a gate (``release`` / ``abandon`` are sent without waiting)."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    async def acquire(self) -> int:
        from .limits import Stopped

        ticket = await self.coordinator.acquire.remote()
        if ticket is None:
            raise Stopped
        return int(ticket)

    def release(self, ticket: int, outcome: Any) -> None:
        self.coordinator.release.remote(ticket, outcome.to_tuple())

    def abandon(self) -> None:
        self.coordinator.abandon.remote()


class LineActor:
    """Runs shards of lines with its own clients; yields each finished line (as a tuple) as it completes."""

    def __init__(self, router: dict[str, Any], coordinator: Any, max_attempts: int) -> None:
        from .operations import Router

        self.router = Router(**router)
        self.gate = _RemoteGate(coordinator)
        self.max_attempts = max_attempts
        self.stopping = False

    async def _sleep(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return not self.stopping

    async def run(self, shard: list[tuple[int, bytes]]) -> Any:
        from .inputs import parse_line
        from .lines import run_line
        from .operations import check_body

        lines = [parse_line(number, raw, check_body) for number, raw in shard]
        tasks = [
            asyncio.ensure_future(run_line(line, self.router, self.gate, self.max_attempts, self._sleep))
            for line in lines
            if isinstance(line, Line)
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                done = await next_done
                if done is not None:
                    yield done.to_tuple()
        finally:
            for task in tasks:
                task.cancel()

    async def stop(self) -> None:
        self.stopping = True


def _shards(lines: Iterator[Line], size: int) -> Iterator[list[tuple[int, bytes]]]:
    while True:
        shard = [(line.number, line.raw) for line in itertools.islice(lines, size)]
        if not shard:
            return
        yield shard


def _start(settings: Settings, ray: Any) -> tuple[Any, list[Any]]:
    """The coordinator and the pool of line actors."""
    coordinator = (
        ray.remote(Coordinator)
        .options(num_cpus=0, max_concurrency=100_000)
        .remote(settings.max_concurrency, settings.rpm, settings.tpm)
    )
    actor_class = ray.remote(LineActor).options(num_cpus=ACTOR_CPUS, max_concurrency=100_000)
    count = settings.ray_actors or DEFAULT_ACTORS
    router = settings.router().settings()
    return coordinator, [actor_class.remote(router, coordinator, settings.max_attempts) for _ in range(count)]


async def _wait(feeders: list[asyncio.Future[Any]], stop: asyncio.Event, coordinator: Any, actors: list[Any]) -> None:
    """Until every shard is done, or Ctrl-C: then no new starts, and up to DRAIN_S s for requests in flight."""
    from .runner import DRAIN_S

    stopper = asyncio.ensure_future(stop.wait())
    try:
        pending: set[asyncio.Future[Any]] = {*feeders, stopper}
        while not stop.is_set() and not all(task.done() for task in feeders):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await coordinator.close.remote()
            await asyncio.gather(*(actor.stop.remote() for actor in actors))
            await asyncio.wait(feeders, timeout=DRAIN_S)
    finally:
        stopper.cancel()
    for task in feeders:
        task.cancel()
    for result in await asyncio.gather(*feeders, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def _drive(settings: Settings, lines: Iterator[Line], progress: Progress, ray: Any) -> bool:
    stats = progress.stats
    coordinator, actors = _start(settings, ray)
    shards = _shards(lines, max(1, math.ceil(settings.max_concurrency / len(actors))))
    appender = Appender(settings.output)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)

    async def feed(actor: Any) -> None:
        while not stop.is_set():
            shard = next(shards, None)
            if shard is None:
                return
            async for reference in actor.run.remote(shard):
                done = Done.from_tuple(await reference)
                appender.write(done.data)
                stats.add(done)

    async def watch() -> None:
        while True:
            progress.concurrency = (await coordinator.state.remote())["concurrency"]
            await asyncio.sleep(1.0)

    helpers = [asyncio.ensure_future(watch()), asyncio.ensure_future(progress.run())]
    try:
        await _wait(
            [asyncio.ensure_future(feed(actor)) for actor in actors for _ in range(SHARDS_PER_ACTOR)],
            stop,
            coordinator,
            actors,
        )
    finally:
        for helper in helpers:
            helper.cancel()
        appender.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    return stop.is_set()


def run_ray(settings: Settings, lines: Iterator[Line], progress: Progress) -> bool:
    """Run the pending lines on Ray; True when interrupted."""
    try:
        import ray
    except ImportError:
        from ..errors import MissingRequirementsError

        raise MissingRequirementsError("--backend ray needs Ray: pip install 'llmrelay[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=settings.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        return asyncio.run(_drive(settings, lines, progress, ray))
    finally:
        if started_here:
            ray.shutdown()
