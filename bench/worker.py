"""One client in its own process: ``python -m bench.worker CLIENT BASE_URL``.

It reads JSON commands, one a line, on stdin and answers each with one JSON line on stdout (stray
prints of the libraries go to stderr). The process, its event loop and its client object live for
the whole run, so connection pools stay warm between measurements. CPU is this process's own
``time.process_time()`` (all its threads), taken around the measured work only.

``--memory N`` instead runs the memory measurement once in this fresh process and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from typing import Any

from .clients import CLIENTS, BenchClient
from .payload import expected_text, text_count

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE_KB


class Worker:
    def __init__(self, client: BenchClient) -> None:
        self.client = client

    def check(self, model: str, text: str) -> bool:
        return text == expected_text(text_count(model))

    async def op_warm(self, stream_model: str, json_model: str, concurrency: int) -> dict[str, Any]:
        ok = self.check(stream_model, await self.client.stream_text(stream_model))
        ok &= self.check(json_model, await self.client.complete(json_model))
        texts = await asyncio.gather(*(self.client.complete(json_model) for _ in range(concurrency)))
        ok &= all(self.check(json_model, text) for text in texts)
        return {"ok": ok}

    async def op_prime(self, model: str, concurrency: int, stream: bool) -> dict[str, Any]:
        """Untimed and uncounted: reopen what the pool closed while idle (keep-alive expiry) before a measurement."""
        call = self.client.stream_text if stream else self.client.complete
        texts = await asyncio.gather(*(call(model) for _ in range(concurrency)))
        return {"ok": all(self.check(model, text) for text in texts)}

    async def op_stream(self, model: str) -> dict[str, Any]:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        text = await self.client.stream_text(model)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu": cpu, "wall": wall, "ok": self.check(model, text)}

    async def op_requests(self, model: str, n: int, concurrency: int) -> dict[str, Any]:
        complete = self.client.complete
        expected = expected_text(text_count(model))
        per_task = n // concurrency
        failures = 0

        async def run() -> None:
            nonlocal failures
            for _ in range(per_task):
                if await complete(model) != expected:
                    failures += 1

        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        if concurrency == 1:
            await run()
        else:
            await asyncio.gather(*(run() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu": cpu, "wall": wall, "n": per_task * concurrency, "ok": failures == 0}

    async def op_ttfc(self, model: str, n: int) -> dict[str, Any]:
        expected = expected_text(text_count(model))
        times = []
        ok = True
        for _ in range(n):
            parts = []
            start = time.perf_counter()
            first = 0.0
            async for text in self.client.texts(model):
                if not parts:
                    first = time.perf_counter()
                parts.append(text)
            times.append(first - start)
            ok &= "".join(parts) == expected
        return {"times": times, "ok": ok}


async def memory(client: BenchClient, model: str, n: int, deadline: float) -> dict[str, Any]:
    """Open ``n`` drip-fed streams at once; peak RSS over the RSS before them, per stream open at the peak."""
    expected = expected_text(text_count(model))
    assert await client.stream_text(model) == expected  # warm: imports, pools, first connection
    gc.collect()
    before = rss_kb()
    peak = before
    open_now = max_open = completed = 0
    failures = 0

    async def one() -> None:
        nonlocal open_now, max_open, completed, failures
        parts = []
        async for text in client.texts(model):
            if not parts:
                open_now += 1
                max_open = max(max_open, open_now)
            parts.append(text)
        open_now -= 1
        completed += 1
        if "".join(parts) != expected:
            failures += 1

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    stop = time.monotonic() + deadline
    while not all(task.done() for task in tasks) and time.monotonic() < stop:
        await asyncio.sleep(0.01)
        peak = max(peak, rss_kb())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "before_kb": before,
        "peak_kb": peak,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "client_max_open": max_open,
        "completed": completed,
        "ok": failures == 0,
    }


def _protocol_stdout():
    """A private channel for the answers; whatever else writes to stdout lands on stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("base")
    parser.add_argument("--memory", type=int, default=0, help="run the memory measurement with this many streams")
    parser.add_argument("--model", default="drip-30-100")
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to a CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    out = _protocol_stdout()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = CLIENTS[args.client]()
    try:
        loop.run_until_complete(client.setup(args.base))
    except Exception as error:
        out.write(json.dumps({"ready": False, "error": f"{type(error).__name__}: {error}"}) + "\n")
        return
    if args.memory:
        result = loop.run_until_complete(memory(client, args.model, args.memory, args.deadline))
        out.write(json.dumps(result) + "\n")
        loop.run_until_complete(client.close())
        return
    out.write(json.dumps({"ready": True}) + "\n")
    worker = Worker(client)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            result = loop.run_until_complete(getattr(worker, f"op_{op}")(**command))
        except Exception as error:
            result = {"error": f"{type(error).__name__}: {error}", "ok": False}
        out.write(json.dumps(result) + "\n")
    loop.run_until_complete(client.close())
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()


if __name__ == "__main__":
    main()
