"""Where a client's CPU goes: ``python -m bench.profile [CLIENT] [--what stream|c1|c64] [--top N]``.

Runs cProfile in this process around the same work the benchmark measures (after a warm-up), against
the fake server in its own process, and prints the functions with the most own time, per chunk or
per request. The default client is the llmrelay provider.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time

from .clients import CLIENTS
from .payload import expected_text
from .run import Server


async def _work(client, what: str, chunks: int, requests: int) -> tuple[int, float]:
    if what == "stream":
        start = time.process_time()
        assert await client.stream_text(f"stream-{chunks}") == expected_text(chunks)
        return chunks, time.process_time() - start
    concurrency = 64 if what == "c64" else 1
    per_task = requests // concurrency

    async def run() -> None:
        for _ in range(per_task):
            assert await client.complete("stream-16") == expected_text(16)

    start = time.process_time()
    await asyncio.gather(*(run() for _ in range(concurrency)))
    return per_task * concurrency, time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("client", nargs="?", default="llmrelay", choices=sorted(CLIENTS))
    parser.add_argument("--what", choices=("stream", "c1", "c64"), default="stream")
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=2560)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative, ...)")
    args = parser.parse_args(argv)
    server = Server([args.chunks, 16], None)
    try:
        loop = asyncio.new_event_loop()
        client = CLIENTS[args.client]()
        loop.run_until_complete(client.setup(server.base))
        loop.run_until_complete(_work(client, args.what, args.chunks, 128))  # warm-up, fills the pool
        units, plain_cpu = loop.run_until_complete(_work(client, args.what, args.chunks, args.requests))
        profiler = cProfile.Profile()
        profiler.enable()
        loop.run_until_complete(_work(client, args.what, args.chunks, args.requests))
        profiler.disable()
        loop.run_until_complete(client.close())
        loop.close()
    finally:
        server.close()
    unit = "chunk" if args.what == "stream" else "request"
    print(f"{CLIENTS[args.client].label}, {args.what}: {plain_cpu / units * 1e6:.2f} µs CPU per {unit} unprofiled")
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats(args.sort).print_stats(args.top)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"profiled: {total / units * 1e6:.2f} µs per {unit} (cProfile overhead included); top by {args.sort}:")
    print(stream.getvalue().split("\n\n", 2)[-1])


if __name__ == "__main__":
    main()
