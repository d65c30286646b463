"""Gateway benchmark: direct, llmrelay's gateway, a minimal aiohttp pass-through and LiteLLM's proxy, side by side.

``python -m bench.gateway`` (``--quick`` for a smoke run; ``--reps N``; ``--no-litellm``; ``--litellm PATH`` to the
``litellm`` command of a separate virtualenv, default /work/bench-venvs/litellm/bin/litellm). Every piece runs in
its own process: the fake upstream (bench/server.py), each proxy, and the load generator (bench/gateway/load.py).
With two or more CPUs the proxy under test is pinned to CPU 0 and the upstream and load generator to the others;
the proxies not being measured are stopped (SIGSTOP) meanwhile.
Measurements are interleaved (every proxy once per repetition) and reported as medians.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-llmrelay-bench-0123456789abcdef"
STREAM = "stream-16"
NONSTREAM = "stream-16"  # the same answer as one chat.completion JSON
HOLD = "drip-30-130"  # 30 chunks, one every 130 ms: about 4 s open
LITELLM = "/work/bench-venvs/litellm/bin/litellm"


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def _pinned(cpus: set[int] | None) -> Any:
    def pin() -> None:
        os.setsid()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pin


def _wait_http(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")
        time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Target:
    def __init__(
        self,
        name: str,
        port: int,
        process: subprocess.Popen[bytes] | None,
        model_prefix: str = "",
        key: str | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.prefix = model_prefix
        self.key = key
        self.rss_start_kb = 0
        self.results: dict[str, list[Any]] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def add(self, name: str, value: Any) -> None:
        self.results.setdefault(name, []).append(value)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proxy_cpus, self.other_cpus = _cpus() if not args.no_pin else (None, None)
        self.tmp = Path(tempfile.mkdtemp(prefix="llmrelay-bench-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.targets: list[Target] = []
        self.upstream_port = 0

    def spawn(self, argv: list[str], cpus: set[int] | None, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, preexec_fn=_pinned(cpus), cwd=ROOT, **kwargs)
        self.processes.append(process)
        return process

    def start_upstream(self) -> None:
        process = self.spawn(
            [sys.executable, "-m", "bench.server", "--prebuild", "16", "--exit-with-stdin"],
            self.other_cpus,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        self.upstream_port = int(process.stdout.readline().split()[0])
        self.upstream = Target("upstream", self.upstream_port, process)

    def start_llmrelay(self) -> Target:
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        config = self.tmp / "gateway.toml"
        config.write_text(
            f'[providers.fake]\napi_base = "http://127.0.0.1:{self.upstream_port}/v1"\n'
            f'[[keys]]\nname = "bench"\nsha256 = "{digest}"\n'
        )
        port = _free_port()
        log = open(self.tmp / "gateway-access.log", "wb")  # the access log is on, written to a file
        command = str(Path(sys.executable).parent / "llmrelay")
        process = self.spawn(
            [command, "serve", "--config", str(config), "--port", str(port)],
            self.proxy_cpus,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _wait_http(f"http://127.0.0.1:{port}/health")
        return Target("llmrelay gateway", port, process, "fake/", KEY)

    def start_passthrough(self) -> Target:
        process = self.spawn(
            [sys.executable, "-m", "bench.gateway.passthrough", "--upstream", f"http://127.0.0.1:{self.upstream_port}"],
            self.proxy_cpus,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        port = int(process.stdout.readline())
        return Target("aiohttp pass-through", port, process)

    def start_litellm(self) -> Target | None:
        command = self.args.litellm
        if not Path(command).exists():
            print(f"LiteLLM not measured: {command} does not exist", file=sys.stderr)
            return None
        config = self.tmp / "litellm.yaml"
        entries = "".join(
            f"  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n"
            f"      api_base: http://127.0.0.1:{self.upstream_port}/v1\n      api_key: sk-fake\n"
            for model in (STREAM, HOLD)
        )
        config.write_text("model_list:\n" + entries + "litellm_settings:\n  telemetry: false\n")
        port = _free_port()
        log = open(self.tmp / "litellm.log", "wb")
        env = {**os.environ, "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True", "LITELLM_TELEMETRY": "False"}
        process = self.spawn(
            [command, "--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers", "1"],
            self.proxy_cpus,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180)
        except RuntimeError as error:
            print(f"LiteLLM not measured: {error} (log: {self.tmp / 'litellm.log'})", file=sys.stderr)
            Target("litellm", port, process).stop()
            return None
        return Target("LiteLLM proxy", port, process)

    def load(
        self,
        target: Target,
        model: str,
        stream: bool,
        concurrency: int,
        count: int,
        seconds: float,
        rss: bool = False,
        cpu_pid: int | None = None,
    ) -> dict[str, Any]:
        argv = [
            sys.executable,
            "-m",
            "bench.gateway.load",
            "--port",
            str(target.port),
            "--model",
            target.prefix + model,
            "--concurrency",
            str(concurrency),
            "--count",
            str(count),
            "--seconds",
            str(seconds),
        ]
        if stream:
            argv.append("--stream")
        if target.key:
            argv += ["--key", target.key]
        pid = cpu_pid or target.pid
        if pid:
            argv += ["--pid", str(pid)]
        if rss:
            argv.append("--rss")
        if self.other_cpus:
            argv += ["--cpu", str(min(self.other_cpus))]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=seconds + 120, check=False)
        if done.returncode:
            raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
        return json.loads(done.stdout)

    def measure(self, target: Target, quick: bool) -> None:
        scale = 0.25 if quick else 1.0
        n = lambda count: max(20, int(count * scale))  # noqa: E731
        self.load(target, NONSTREAM, False, 8, n(200), 10)  # warm-up: connections, caches
        result = self.load(target, NONSTREAM, False, 1, n(400), 15)
        target.add("p50", statistics.median(result["latencies"]))
        target.add("p99", _percentile(result["latencies"], 99))
        target.add("errors", result["errors"])
        result = self.load(target, STREAM, True, 1, n(300), 15)
        target.add("ttft", statistics.median(result["ttfts"]))
        target.add("errors", result["errors"])
        result = self.load(target, NONSTREAM, False, 64, n(4000), 12)
        target.add("rps", result["done"] / result["wall"])
        target.add("cpu", result["cpu"] / max(1, result["done"]) * 1000)
        target.add("p50_64", statistics.median(result["latencies"]))
        target.add("errors", result["errors"])
        result = self.load(target, STREAM, True, 64, n(3000), 12)
        target.add("rps_stream", result["done"] / result["wall"])
        target.add("cpu_stream", result["cpu"] / max(1, result["done"]) * 1000)
        target.add("errors", result["errors"])

    def hold(self, target: Target) -> None:
        result = self.load(target, HOLD, True, self.args.streams, self.args.streams, 60, rss=True)
        target.add("errors", result["errors"])
        target.hold_peak_kb = result["rss_peak_kb"]  # type: ignore[attr-defined]
        target.hold_before_kb = result["rss_before_kb"]  # type: ignore[attr-defined]
        target.held = result["done"]  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def alone(self, target: Target) -> Iterator[None]:
        """The other proxies are stopped (SIGSTOP) while one is measured: their idle timers and background
        tasks must not take the CPU they share with it."""
        others = [t for t in self.targets if t is not target and t.pid]
        for other in others:
            os.killpg(other.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            yield
        finally:
            for other in others:
                os.killpg(other.pid, signal.SIGCONT)  # type: ignore[arg-type]

    def run(self) -> str:
        from .load import rss_kb

        self.start_upstream()
        direct = Target("direct (no proxy)", self.upstream_port, None)
        self.targets.append(direct)
        for start in (self.start_passthrough, self.start_llmrelay):
            self.targets.append(start())
        if not self.args.no_litellm:
            litellm = self.start_litellm()
            if litellm is not None:
                self.targets.append(litellm)
        time.sleep(1.0)
        for target in self.targets:
            if target.pid:
                target.rss_start_kb = rss_kb(target.pid)
        for rep in range(self.args.reps):
            for target in self.targets:
                print(f"rep {rep + 1}/{self.args.reps}: {target.name}", file=sys.stderr, flush=True)
                with self.alone(target):
                    self.measure(target, self.args.quick)
        for target in self.targets:
            if target.pid:
                print(f"{self.args.streams} open streams: {target.name}", file=sys.stderr, flush=True)
                with self.alone(target):
                    self.hold(target)
        return self.table()

    def soak(self, count: int) -> str:
        """RSS of the gateway before and after ``count`` requests (half streamed) at c=64."""
        from .load import rss_kb

        self.start_upstream()
        gateway = self.start_llmrelay()
        self.targets.append(gateway)
        assert gateway.pid is not None
        self.load(gateway, NONSTREAM, False, 64, 2000, 60)  # warm-up: pools, caches, metric series
        self.load(gateway, STREAM, True, 64, 2000, 60)
        before = rss_kb(gateway.pid)
        done = errors = 0
        started = time.monotonic()
        for stream in (False, True):
            result = self.load(gateway, STREAM, stream, 64, count // 2, 600)
            done += result["done"]
            errors += result["errors"]
        after = rss_kb(gateway.pid)
        return (
            f"soak: {done} requests ({done // 2} streamed) in {time.monotonic() - started:.0f} s, {errors} errors; "
            f"gateway RSS {before / 1024:.1f} MB before, {after / 1024:.1f} MB after "
            f"({(after - before) / before * 100:+.1f} %)"
        )

    def table(self) -> str:
        direct = self.targets[0]
        base = {name: statistics.median(values) for name, values in direct.results.items() if name != "errors"}
        floor = next((t for t in self.targets if t.name.startswith("aiohttp")), None)
        rows = [
            "| | CPU/request ms | CPU/16-chunk stream ms | req/s c=64 | streams/s c=64 | p50 c=1 ms (added) "
            "| p99 c=1 ms (added) | first chunk c=1 ms (added) | p50 c=64 ms | RSS start MB | RSS 1000 streams MB "
            "(KB/stream) | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target in self.targets:
            med = {name: statistics.median(values) for name, values in target.results.items() if name != "errors"}
            errors = sum(target.results.get("errors", []))
            proxied = target is not direct
            cpu = f"{med['cpu']:.3f}" if proxied else "(upstream)"
            cpu_stream = f"{med['cpu_stream']:.3f}" if proxied else "(upstream)"
            if proxied and floor is not None and target is not floor:
                floor_med = statistics.median(floor.results["cpu"]), statistics.median(floor.results["cpu_stream"])
                cpu += f" ({med['cpu'] / floor_med[0]:.2f}× floor)"
                cpu_stream += f" ({med['cpu_stream'] / floor_med[1]:.2f}× floor)"

            def added(name: str, med: dict[str, float] = med, proxied: bool = proxied) -> str:
                return f"{med[name]:.2f}" + (f" (+{med[name] - base[name]:.2f})" if proxied else "")

            if proxied:
                held = getattr(target, "held", 0)
                per = (target.hold_peak_kb - target.hold_before_kb) / max(1, held)  # type: ignore[attr-defined]
                memory = f"{target.hold_peak_kb / 1024:.0f} ({per:.0f}; {held} done)"  # type: ignore[attr-defined]
                start = f"{target.rss_start_kb / 1024:.0f}"
            else:
                memory = start = "-"
            rows.append(
                f"| {target.name} | {cpu} | {cpu_stream} | {med['rps']:.0f} | {med['rps_stream']:.0f} "
                f"| {added('p50')} | {added('p99')} | {added('ttft')} | {med['p50_64']:.1f} | {start} | {memory} "
                f"| {errors} |"
            )
        return "\n".join(rows)

    def close(self) -> None:
        for target in self.targets[1:]:
            target.stop()
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests per measurement, one repetition")
    parser.add_argument("--streams", type=int, default=1000, help="streams held open at once for the memory row")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--litellm", default=LITELLM, help="the litellm command of its own virtualenv")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--soak", type=int, metavar="N", help="instead: the gateway's RSS before and after N requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
    bench = Bench(args)
    if args.soak:
        try:
            print(bench.soak(args.soak))
        finally:
            bench.close()
        return
    try:
        table = bench.run()
    finally:
        bench.close()
    cpus = os.cpu_count()
    header = (
        f"Gateway benchmark ({cpus} CPUs{', proxy pinned to its own CPU' if bench.proxy_cpus else ''}; "
        f"{args.reps} interleaved repetitions, medians; python -m bench.gateway"
        f"{' --quick' if args.quick else ''})\n\n"
    )
    print(header + table)
    if args.out:
        Path(args.out).write_text(header + table + "\n")
