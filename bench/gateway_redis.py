"""What Redis-backed limits cost the gateway (SPEC 8.8): limits off, in memory, in Redis, and ``--workers 2``.

``python -m bench.gateway_redis [--reps N] [--quick] [--baseline DIR]`` (``--baseline``: also "limits in Redis" with the
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
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .gateway.load import cpu_seconds
from .gateway.run import KEY, NONSTREAM, Bench, Target, _free_port, _percentile, _wait_http

LIMITS = "rpm = 1000000000\ntpm = 1000000000000\nmax_concurrent = 100000\n"


class RedisBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.limits = "\n".join(line for line in LIMITS.splitlines() if not (args.no_tpm and "tpm" in line)) + "\n"

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
        if self.args.baseline:
            name = f"limits in Redis ({Path(self.args.baseline).name})"
            self.targets.insert(2, self.start_gateway(name, True, True, 1, str(Path(self.args.baseline).resolve())))
        time.sleep(1.0)
        for rep in range(self.args.reps):
            # Every other repetition in reverse order, so that a machine getting busier or quieter during the run
            # weighs on no target more than on another.
            for target in self.targets if rep % 2 == 0 else self.targets[::-1]:
                print(f"rep {rep + 1}/{self.args.reps}: {target.name}", file=sys.stderr, flush=True)
                self.measure_one(target, self.args.quick)
        return self.redis_table()

    def redis_table(self) -> str:
        def med(target: Target, name: str) -> float:
            return statistics.median(target.results[name])

        off = self.targets[0]
        rows = [
            "| | p50 c=1 ms (added vs limits off: median of the repetitions' differences) | p99 c=1 ms (added) | req/s c=64 | gateway CPU/request ms "
            "(added) | Redis CPU/request µs | p50 c=64 ms | p99 c=64 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for target in self.targets:
            added: dict[str, str] = {}
            for name in ("p50", "p99", "cpu"):
                # The median of the differences within each repetition (measured minutes apart at most), not
                # the difference of the medians.
                delta = statistics.median(t - o for t, o in zip(target.results[name], off.results[name], strict=True))
                added[name] = "" if target is off else f" ({delta * 1000:+.0f} µs, {delta / med(off, name):+.1%})"
            rows.append(
                f"| {target.name} | {med(target, 'p50'):.3f}{added['p50']} | {med(target, 'p99'):.3f}{added['p99']} "
                f"| {med(target, 'rps'):.0f} | {med(target, 'cpu'):.3f}{added['cpu']} "
                f"| {med(target, 'redis_cpu'):.0f} | {med(target, 'p50_64'):.1f} | {med(target, 'p99_64'):.1f} "
                f"| {sum(target.results['errors'])} |"
            )
        return "\n".join(rows)


def state_costs(redis_port: int, unix_socket: str | None, count: int) -> str:
    """Per limited request, in this process: admit + add_tokens + release (all three limits) and admit alone
    (rpm only), sequential, for MemoryState and RedisState; wall and CPU µs, medians of 3 runs."""
    import asyncio

    from llmrelay.server.redis_state import RedisState
    from llmrelay.server.state import MemoryState, State

    async def one_request(state: State, all_limits: bool) -> None:
        if all_limits:
            slot = await state.admit("bench", 10**9, 10**12, 10**5)
            await state.add_tokens("bench", 20)
            if slot is not None:
                await state.release("bench", slot)
        else:
            await state.admit("bench", 10**9, None, None)

    async def measure(state: State, all_limits: bool) -> tuple[float, float]:
        for _ in range(200):
            await one_request(state, all_limits)
        runs = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                await one_request(state, all_limits)
            runs.append(((time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6))
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    async def main() -> list[str]:
        states: list[tuple[str, State]] = [("MemoryState", MemoryState())]
        states.append(("RedisState, TCP loopback", RedisState(f"redis://127.0.0.1:{redis_port}/0")))
        if unix_socket:
            states.append(("RedisState, unix socket", RedisState(f"unix://{unix_socket}?db=0")))
        rows = []
        for name, state in states:
            if isinstance(state, RedisState):
                await state.connect()
            every = await measure(state, True)
            rpm = await measure(state, False)
            rows.append(f"| {name} | {every[0]:.0f} | {every[1]:.0f} | {rpm[0]:.0f} | {rpm[1]:.0f} |")
            await state.close()
        return rows

    try:
        import uvloop

        rows = uvloop.run(main())
    except ImportError:
        rows = asyncio.run(main())
    return "\n".join(
        [
            "| state | rpm+tpm+max_concurrent: µs/request | CPU µs/request | rpm only: µs/request | CPU µs/request |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests per measurement, one repetition")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--state-only", action="store_true", help="only the in-process cost of each state")
    parser.add_argument("--no-tpm", action="store_true", help="the key's limits without tpm (rpm, max_concurrent)")
    parser.add_argument("--baseline", metavar="DIR", help="also measure the llmrelay package of this checkout")
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
        costs = state_costs(bench.redis_port, str(bench.unix_socket), count)
    finally:
        bench.close()
    costs_header = (
        f"\n\nThe state alone, in one process (uvloop), {count} sequential requests, medians of 3 runs; the gateway "
        "calls admit, add_tokens and release once each per request of a key with all three limits:\n\n"
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
