"""The load generator: a minimal keep-alive HTTP/1.1 client on raw asyncio streams, in its own process.

``python -m bench.gateway.load --port P --model M [--stream] --concurrency C --count N --seconds S [--pid PID]``
prints one JSON object: requests done, wall time, latency and time-to-first-chunk samples (ms), errors, and —
with ``--pid`` — the CPU seconds that process (and its children) used during the run and its peak RSS.
A raw client keeps the generator's own CPU small, so the proxy under test is what limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

FIRST_TEXT = b'"Once"'  # the first text piece of every bench answer (bench.payload.piece(0)), JSON-quoted

# Per door (--door): its path, and what a complete answer holds (non-streamed body; the end of a stream).
DOORS = {
    "chat": ("/v1/chat/completions", b'"finish_reason":"stop"', b"data: [DONE]"),
    "responses": ("/v1/responses", b'"status":"completed"', b"response.completed"),
    "messages": ("/v1/messages", b'"stop_reason":"end_turn"', b"message_stop"),
}


def _children(pid: int) -> list[int]:
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                for child in handle.read().split():
                    found.extend(_children(int(child)))
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants, every thread, from /proc (ns precision)."""
    total = 0
    for process in _children(pid):
        try:
            for task in os.listdir(f"/proc/{process}/task"):
                with open(f"/proc/{process}/task/{task}/schedstat") as handle:
                    total += int(handle.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def rss_kb(pid: int) -> int:
    total = 0
    for process in _children(pid):
        try:
            with open(f"/proc/{process}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.errors: list[str] = []
        self.done = 0


async def _read_response(
    reader: asyncio.StreamReader, start: float, stats: Stats, stream: bool, door: str = "chat"
) -> bool:
    """Read one response; True when the connection may be reused."""
    _, complete, stream_end = DOORS[door]
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep = b"connection: close" not in lower
    seen_first = not stream
    ok = status == 200
    tail = b""
    ended = False
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = (await reader.readexactly(size + 2))[:-2]
            if not seen_first and FIRST_TEXT in data:
                seen_first = True
                stats.ttfts.append((time.perf_counter() - start) * 1000)
            ended = stream_end in tail + data  # the end event (it may be followed by more bytes of its own)
            tail = data[-32:]
        if stream and not ended:
            ok = False
    else:
        index = lower.find(b"content-length:")
        length = int(lower[index + 15 : lower.index(b"\r\n", index)]) if index >= 0 else 0
        body = await reader.readexactly(length)
        if not stream and complete not in body:
            ok = False
        if stream:
            ok = False
    if ok:
        stats.latencies.append((time.perf_counter() - start) * 1000)
        stats.done += 1
    else:
        stats.errors.append(f"status {status}: {head[:80]!r}")
    return keep


async def worker(args: argparse.Namespace, request: bytes, stats: Stats, deadline: float, budget: list[int]) -> None:
    reader = writer = None
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port)
            assert reader is not None
            start = time.perf_counter()
            writer.write(request)
            if not await _read_response(reader, start, stats, args.stream, args.door):
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            stats.errors.append(f"{type(error).__name__}: {error}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def build_request(args: argparse.Namespace) -> bytes:
    question = "Tell me a long story."
    body: dict = {"model": args.model, "stream": args.stream}
    if args.door == "responses":
        body["input"] = question
    else:
        body["messages"] = [{"role": "user", "content": question}]
    if args.door == "messages":
        body["max_tokens"] = 4096
    data = json.dumps(body).encode()
    path = args.path or DOORS[args.door][0]
    auth = f"Authorization: Bearer {args.key}\r\n" if args.key else ""
    auth += "".join(f"{header}\r\n" for header in args.header)
    return (
        f"POST {path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


async def run(args: argparse.Namespace) -> dict:
    request = build_request(args)
    stats = Stats()
    budget = [args.count]
    rss_before = rss_kb(args.pid) if args.pid else 0
    peak = [rss_before]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_kb(args.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample()) if args.pid and args.rss else None
    cpu_before = cpu_seconds(args.pid) if args.pid else 0.0
    start = time.perf_counter()
    deadline = start + args.seconds
    await asyncio.gather(*(worker(args, request, stats, deadline, budget) for _ in range(args.concurrency)))
    wall = time.perf_counter() - start
    cpu = cpu_seconds(args.pid) - cpu_before if args.pid else 0.0
    if sampler is not None:
        sampler.cancel()
    return {
        "done": stats.done,
        "wall": wall,
        "cpu": cpu,
        "latencies": stats.latencies,
        "ttfts": stats.ttfts,
        "errors": len(stats.errors),
        "error_samples": stats.errors[:3],
        "rss_before_kb": rss_before,
        "rss_peak_kb": peak[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--door", choices=sorted(DOORS), default="chat", help="the API shape of the requests")
    parser.add_argument("--path", help="default: the door's path")
    parser.add_argument("--model", required=True)
    parser.add_argument("--key")
    parser.add_argument("--header", action="append", default=[], help="an extra request header, 'Name: value'")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--rss", action="store_true", help="sample the peak RSS of --pid")
    parser.add_argument("--cpu", type=int, help="pin this process to a CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
