"""``python -m bench.batch``: the batch runner against the benchmark's fake upstream (SPEC 10.9).

1. Throughput: the same N non-streamed chat requests, at the same concurrency, sent (a) by a bare aiohttp loop
   (``session.post``, read, ``orjson.loads``: the floor any client pays) and (b) by ``llmrelay batch`` (the
   installed command: input checked, AIMD from 4 up to ``--max-concurrency``, one output line written and
   flushed per result, fsync every second). The bare loop runs twice, on ``asyncio.run`` (what a hand-written
   loop usually runs on) and on uvloop (the loop ``llmrelay batch`` runs on where uvloop is installed). Runs
   alternate (baselines, batch, baselines, batch …) and the table shows the median requests/s of each and the
   batch's ratio to each baseline (goal ≥ 0.8). The batch's rate is its own ``elapsed_s``
   (from after the input check to the last line); its wall-clock time, start-up and check included, is shown too.
2. Memory: ``llmrelay batch`` over a generated 1,000,000-line input (in /tmp); peak RSS of the process (goal
   ≤ 100 MB), from ``wait4``'s rusage.

Each client runs in its own process; the fake server in a third (``bench.server``). As ``python -m bench`` does,
the server is pinned to CPU 1 and the clients to CPU 0 (``--no-pin``: not pinned, all share both CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
MODEL = "stream-20"  # answered non-streamed: one chat.completion JSON of 20 text pieces
LLMRELAY = Path(sys.executable).with_name("llmrelay")

BASELINE = r"""
import asyncio, sys, time
import aiohttp, orjson

async def main(url, count, concurrency):
    body = orjson.dumps({"model": sys.argv[4], "messages": [{"role": "user", "content": "Tell me a long story."}]})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer x"}
    left = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker():
            for _ in left:
                async with session.post(url, data=body, headers=headers) as response:
                    orjson.loads(await response.read())
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(count / (time.perf_counter() - started))

if sys.argv[5] == "uvloop":
    import uvloop
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
else:
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def start_server(pin: bool) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.server",
            "--exit-with-stdin",
            "--prebuild",
            "20",
            *(["--cpu", "1"] if pin else []),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[0])
    return server, port


def write_input(path: Path, count: int) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}]})
    with open(path, "w") as file:
        for index in range(count):
            file.write(
                f'{{"custom_id":"request-{index}","method":"POST","url":"/v1/chat/completions","body":{body}}}\n'
            )


def _client_cpu(pin: bool) -> dict:
    """Popen keywords putting a client on CPU 0 (the server has CPU 1), as ``python -m bench`` does."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {0})}


def run_baseline(port: int, count: int, concurrency: int, pin: bool, loop: str) -> float:
    """Requests/s of the bare loop on ``loop``: "asyncio" (``asyncio.run``, what a hand-written loop usually
    runs on) or "uvloop" (the loop ``llmrelay batch`` runs on where uvloop is installed)."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    result = subprocess.run(
        [sys.executable, "-c", BASELINE, url, str(count), str(concurrency), MODEL, loop],
        capture_output=True,
        text=True,
        check=True,
        **_client_cpu(pin),
    )
    return float(result.stdout.strip())


def run_batch(port: int, source: Path, concurrency: int, pin: bool) -> tuple[dict, float, float]:
    """(summary, wall-clock seconds, peak RSS in MB) of one ``llmrelay batch`` run over a fresh output."""
    output = source.with_name(source.name.replace(".jsonl", ".output.jsonl"))
    output.unlink(missing_ok=True)
    command = [str(LLMRELAY), "batch", str(source), "--api-base", f"http://127.0.0.1:{port}/v1"]
    command += ["--api-key", "x", "--max-concurrency", str(concurrency), "--json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **_client_cpu(pin))
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, so its rusage (peak RSS) can be read
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"llmrelay batch failed: {err.read()[-2000:].decode(errors='replace')}")
        return json.loads(out.read()), wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-lines", type=int, default=1_000_000, help="lines of the memory run (0: skip it)")
    parser.add_argument("--no-pin", action="store_true", help="do not put the server and the clients on separate CPUs")
    args = parser.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server, port = start_server(pin)
    workdir = Path(tempfile.mkdtemp(prefix="llmrelay-bench-batch-", dir="/tmp"))
    try:
        source = workdir / "throughput.jsonl"
        write_input(source, args.requests)
        plain, same, batch, walls = [], [], [], []
        for _ in range(args.repeat):
            plain.append(run_baseline(port, args.requests, args.concurrency, pin, "asyncio"))
            same.append(run_baseline(port, args.requests, args.concurrency, pin, "uvloop"))
            summary, wall, _ = run_batch(port, source, args.concurrency, pin)
            assert summary["succeeded"] == args.requests, summary
            batch.append(summary["succeeded"] / summary["elapsed_s"])
            walls.append(args.requests / wall)
        to_plain = median(b / a for a, b in zip(plain, batch, strict=True))
        to_same = median(b / a for a, b in zip(same, batch, strict=True))
        where = "server on CPU 1, clients on CPU 0" if pin else "not pinned"
        print(
            f"throughput, {args.requests} requests at concurrency {args.concurrency}, {args.repeat} runs each ({where}):"
        )
        print(f"  bare aiohttp loop, asyncio.run: {median(plain):8.0f} requests/s")
        print(f"  bare aiohttp loop, uvloop:      {median(same):8.0f} requests/s")
        print(
            f"  llmrelay batch:                 {median(batch):8.0f} requests/s   (ratio {to_plain:.2f} to the "
            f"asyncio loop, {to_same:.2f} to the uvloop one; goal >= 0.8)"
        )
        print(
            f"  llmrelay batch (wall):          {median(walls):8.0f} requests/s   (start-up and input check included)"
        )
        if args.rss_lines:
            big = workdir / "million.jsonl"
            write_input(big, args.rss_lines)
            summary, wall, rss = run_batch(port, big, args.concurrency, pin)
            assert summary["succeeded"] == args.rss_lines, summary
            print(
                f"memory, {args.rss_lines} lines ({big.stat().st_size / 1e6:.0f} MB input): peak RSS {rss:.1f} MB "
                f"(goal <= 100), {wall:.0f} s, {args.rss_lines / wall:.0f} requests/s"
            )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
