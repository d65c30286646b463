"""What Redis-backed limits cost the gateway (SPEC 8.8): limits off, in memory, in Redis, and ``--workers 2``.

``python -m bench.gateway_redis [--reps N] [--quick] [--baseline DIR ...]`` (``--baseline``: also "limits in Redis" with the
llmrelay package of another checkout, e.g. a git worktree of main, interleaved in the same run). The same fake upstream and load generator as
``python -m bench.gateway`` (each in its own process); one key with rpm, tpm and max_concurrent set so high
that nothing is refused, so every request runs the whole check (admit, release, token accounting). A
redis-server of its own (free port, no persistence) is started and stopped. Interleaved repetitions, medians.
Non-streamed requests: added latency p50/p99 at concurrency 1 against "limits off", requests/s and CPU per
request at concurrency 64 (the gateway's processes; Redis's own CPU per request in its column).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .gateway.load import cpu_seconds
from .gateway.run import KEY, NONSTREAM, Bench, Target, _free_port, _percentile, _wait_http

LIMITS = "rpm = 1000000000\ntpm = 1000000000000\nmax_concurrent = 100000\n"


class RedisBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.limits = "\n".join(line for line in LIMITS.splitlines() if not (args.no_tpm and "tpm" in line)) + "\n"
        self.logs: dict[str, Path] = {}

    def start_redis(self) -> None:
        path = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.redis_port = _free_port()
        self.unix_socket = self.tmp / "redis.sock"
        self.redis = self.spawn(
            [
                *(path, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"),
            ],
            self.other_cpus,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)

    def start_gateway(self, name: str, limits: bool, redis: bool, workers: int, source: str | None = None) -> Target:
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        server = f'[server]\nredis_url = "redis://127.0.0.1:{self.redis_port}/0"\n' if redis else ""
        config = self.tmp / f"{name.replace(' ', '-')}.toml"
        config.write_text(
            server + f'[providers.fake]\napi_base = "http://127.0.0.1:{self.upstream_port}/v1"\n'
            f'[[keys]]\nname = "bench"\nsha256 = "{digest}"\n' + (self.limits if limits else "")
        )
        port = _free_port()
        log = open(self.tmp / f"{config.stem}.log", "wb")  # the access log is on, written to a file
        self.logs[name] = Path(log.name)
        command = str(Path(sys.executable).parent / "llmrelay")
        env = {**os.environ, "PYTHONPATH": source} if source else None  # that checkout's llmrelay first
        process = self.spawn(
            [command, "serve", "--config", str(config), "--port", str(port), "--workers", str(workers)],
            self.proxy_cpus if workers == 1 else None,  # two workers get every CPU
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        _wait_http(f"http://127.0.0.1:{port}/health")
        return Target(name, port, process, "fake/", KEY)

    def measure_one(self, target: Target, quick: bool) -> None:
        n = (lambda count: max(20, count // 4)) if quick else (lambda count: count)
        self.load(target, NONSTREAM, False, 8, n(200), 10)  # warm-up
        result = self.load(target, NONSTREAM, False, 1, n(600), 15)
        target.add("p50", statistics.median(result["latencies"]))
        target.add("p99", _percentile(result["latencies"], 99))
        target.add("errors", result["errors"])
        if self.args.latency_only:
            return
        redis_before = cpu_seconds(self.redis.pid)
        result = self.load(target, NONSTREAM, False, 64, n(4000), 12)
        redis_cpu = cpu_seconds(self.redis.pid) - redis_before
        done = max(1, result["done"])
        target.add("rps", result["done"] / result["wall"])
        target.add("cpu", result["cpu"] / done * 1000)
        target.add("redis_cpu", redis_cpu / done * 1e6)
        target.add("p50_64", statistics.median(result["latencies"]))
        target.add("p99_64", _percentile(result["latencies"], 99))
        target.add("errors", result["errors"])

    def run_all(self) -> str:
        self.start_upstream()
        self.start_redis()
        self.targets = [
            self.start_gateway("limits off", False, False, 1),
            self.start_gateway("limits in memory", True, False, 1),
            self.start_gateway("limits in Redis", True, True, 1),
            self.start_gateway("limits in Redis, --workers 2", True, True, 2),
        ]
        for at, checkout in enumerate(self.args.baseline or [], start=2):
            name = f"limits in Redis ({Path(checkout).name})"
            self.targets.insert(at, self.start_gateway(name, True, True, 1, str(Path(checkout).resolve())))
        time.sleep(1.0)
        for rep in range(self.args.reps):
            # Every other repetition in reverse order, so that a machine getting busier or quieter during the run
            # weighs on no target more than on another.
            for target in self.targets if rep % 2 == 0 else self.targets[::-1]:
                print(f"rep {rep + 1}/{self.args.reps}: {target.name}", file=sys.stderr, flush=True)
                self.measure_one(target, self.args.quick)
        return self.redis_table()

    def outages(self, name: str) -> int:
        """How many times the gateway lost Redis (a call failed or timed out: per-process limits for a while, so
        its figures are not all Redis's)."""
        log = self.logs.get(name)
        return log.read_text(errors="replace").count("per process until it answers again") if log else 0

    def redis_table(self) -> str:
        def med(target: Target, name: str) -> float:
            values = target.results.get(name)
            return statistics.median(values) if values else math.nan  # not measured (--latency-only)

        off = self.targets[0]
        rows = [
            "| | p50 c=1 ms (added vs limits off: median of the repetitions' differences) | p99 c=1 ms (added) | req/s c=64 | gateway CPU/request ms "
            "(added) | Redis CPU/request µs | p50 c=64 ms | p99 c=64 ms | errors | Redis outages |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target in self.targets:
            added: dict[str, str] = {}
            for name in ("p50", "p99", "cpu"):
                if name not in off.results:
                    added[name] = ""
                    continue
                # The median of the differences within each repetition (measured minutes apart at most), not
                # the difference of the medians.
                delta = statistics.median(t - o for t, o in zip(target.results[name], off.results[name], strict=True))
                added[name] = "" if target is off else f" ({delta * 1000:+.0f} µs, {delta / med(off, name):+.1%})"
            rows.append(
                f"| {target.name} | {med(target, 'p50'):.3f}{added['p50']} | {med(target, 'p99'):.3f}{added['p99']} "
                f"| {med(target, 'rps'):.0f} | {med(target, 'cpu'):.3f}{added['cpu']} "
                f"| {med(target, 'redis_cpu'):.0f} | {med(target, 'p50_64'):.1f} | {med(target, 'p99_64'):.1f} "
                f"| {sum(target.results['errors'])} | {self.outages(target.name)} |"
            )
        return "\n".join(rows)


def state_costs(redis_port: int, unix_socket: str | None, count: int, redis_pid: int) -> str:
    """The state alone, in this process (pinned where a single-worker gateway is): per request of a key with rpm
    and max_concurrent, the admit as at concurrency 1 (timed; the previous request's release applied before it),
    then the release; and a key with all three limits, admit + add_tokens + release back to back. Beside them the
    round trip alone (PING). p50 and mean wall µs, CPU µs of this process and of Redis, per request."""
    import asyncio
    import inspect
    import socket

    from llmrelay.server.redis_pipe import pack
    from llmrelay.server.redis_state import RedisState
    from llmrelay.server.state import MemoryState, State

    def ping_blocking() -> tuple[float, float]:
        with socket.create_connection(("127.0.0.1", redis_port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            sock.sendall(b"PING\r\n")
            sock.recv(64)
            return time.perf_counter() - started, 0.0

    async def measure(one: Any) -> str:
        for _ in range(200):
            await one()
        latencies: list[float] = []
        cpu, redis_cpu = time.process_time(), cpu_seconds(redis_pid)
        for _ in range(count):
            latencies.append(await one())
        cpu, redis_cpu = time.process_time() - cpu, cpu_seconds(redis_pid) - redis_cpu
        return (
            f"{statistics.median(latencies) * 1e6:.0f} | {statistics.fmean(latencies) * 1e6:.0f} "
            f"| {cpu / count * 1e6:.0f} | {redis_cpu / count * 1e6:.0f}"
        )

    async def main() -> list[str]:
        rows = []

        async def blocking() -> float:
            return ping_blocking()[0]

        rows.append(f"| PING, blocking socket (the round trip alone) | {await measure(blocking)} |")
        states: list[tuple[str, State]] = [("MemoryState", MemoryState())]
        states.append(("RedisState, TCP loopback", RedisState(f"redis://127.0.0.1:{redis_port}/0")))
        if unix_socket:
            states.append(("RedisState, unix socket", RedisState(f"unix://{unix_socket}?db=0")))
        for name, state in states:
            if isinstance(state, RedisState):
                await state.connect()
                # The pipe of another checkout (--baseline through PYTHONPATH) may take the command's words.
                packed = "command" in inspect.signature(state._pipe.call).parameters
                ping_args: tuple[Any, ...] = (pack(("PING",)),) if packed else ("PING",)

                async def ping(state: RedisState = state, args: tuple[Any, ...] = ping_args) -> float:
                    started = time.perf_counter()
                    await state._pipe.call(*args)
                    return time.perf_counter() - started

                rows.append(f"| {name}: PING through its connection | {await measure(ping)} |")

            async def admit(state: State = state) -> float:
                started = time.perf_counter()
                slot = await state.admit("bench", 10**9, None, 10**5)
                took = time.perf_counter() - started
                if slot is not None:
                    await state.release("bench", slot)
                await asyncio.sleep(0.0003)  # the release written, applied and answered before the next request
                return took

            async def every(state: State = state) -> float:
                started = time.perf_counter()
                slot = await state.admit("bench-tpm", 10**9, 10**12, 10**5)
                await state.add_tokens("bench-tpm", 20)
                if slot is not None:
                    await state.release("bench-tpm", slot)
                return time.perf_counter() - started

            rows.append(f"| {name}: rpm + max_concurrent, admit (timed) then release | {await measure(admit)} |")
            rows.append(
                f"| {name}: rpm + tpm + max_concurrent, admit + add_tokens + release | {await measure(every)} |"
            )
            if isinstance(state, RedisState) and not state.shared:
                rows.append(f"| {name}: **Redis failed, the figures above are partly from memory** | | | | |")
            await state.close()
        return rows

    try:
        import uvloop

        rows = uvloop.run(main())
    except ImportError:
        rows = asyncio.run(main())
    return "\n".join(["| per request | p50 µs | mean µs | CPU µs | Redis CPU µs |", "|---|---|---|---|---|", *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests per measurement, one repetition")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--state-only", action="store_true", help="only the in-process cost of each state")
    parser.add_argument(
        "--latency-only", action="store_true", help="only latency at concurrency 1 (more repetitions in the time)"
    )
    parser.add_argument("--no-tpm", action="store_true", help="the key's limits without tpm (rpm, max_concurrent)")
    parser.add_argument(
        "--baseline", metavar="DIR", action="append", help="also measure the llmrelay package of this checkout (again)"
    )
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
    bench = RedisBench(args)
    try:
        if args.state_only:
            bench.start_redis()
            table = ""
        else:
            table = bench.run_all()
        count = 500 if args.quick else 3000
        if bench.proxy_cpus:  # where a single-worker gateway runs (Redis is on the other CPUs)
            os.sched_setaffinity(0, bench.proxy_cpus)
        costs = state_costs(bench.redis_port, str(bench.unix_socket), count, bench.redis.pid)
    finally:
        bench.close()
    costs_header = (
        f"\n\nThe state alone, in one process (uvloop{', pinned where a single-worker gateway runs' if bench.proxy_cpus else ''}), "
        f"{count} sequential requests; the gateway calls admit, add_tokens and release once each per request:\n\n"
    )
    header = (
        f"Redis-backed limits ({os.cpu_count()} CPUs{', single-worker gateways pinned to one CPU' if bench.proxy_cpus else ''}; "
        f"{args.reps} interleaved repetitions, medians; python -m bench.gateway_redis"
        f"{' --quick' if args.quick else ''}{' --no-tpm' if args.no_tpm else ''})\n\n"
    )
    text = (header + table if table else "") + costs_header + costs
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        raw = {target.name: target.results for target in getattr(bench, "targets", [])}
        Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")  # every repetition


if __name__ == "__main__":
    main()
