"""Gateway benchmark: direct, llmrelay's gateway, a minimal aiohttp pass-through, LiteLLM's proxy and the Portkey
gateway, side by side.

``python -m bench.gateway`` (``--quick`` for a smoke run; ``--reps N``; ``--no-litellm``, ``--no-portkey``;
``--litellm PATH`` to another ``litellm`` command; ``--asyncio`` adds the gateway on asyncio's own event loop beside
the uvloop one). LiteLLM and Portkey are found where ``python -m bench.peers install`` puts them (bench/.peers/,
git-ignored); each is skipped, with the reason printed, when missing. The gateway's other doors (/v1/responses,
/v1/messages when the gateway has it) get their own table: CPU per request and per stream, as ratios to the chat
door's in the same run. Every piece runs in
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import peers

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-llmrelay-bench-0123456789abcdef"
STREAM = "stream-16"
NONSTREAM = "stream-16"  # the same answer as one chat.completion JSON
HOLD = "drip-30-130"  # 30 chunks, one every 130 ms: about 4 s open
LITELLM_KEY = "sk-litellm-bench-0123456789abcdef"
DOORS = ("responses", "messages")  # measured beside the chat door on the llmrelay gateway


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


def _wait_http(url: str, seconds: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"it exited ({process.returncode}) before answering")
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
        headers: list[str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.prefix = model_prefix
        self.key = key
        self.headers = headers or []
        self.doors: list[str] = []  # other doors than chat measured on this target
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

    def start_llmrelay(self, loop: str = "uvloop") -> Target:
        digest = hashlib.sha256(KEY.encode()).hexdigest()
        config = self.tmp / "gateway.toml"
        config.write_text(
            f'[providers.fake]\napi_base = "http://127.0.0.1:{self.upstream_port}/v1"\n'
            f'[[keys]]\nname = "bench"\nsha256 = "{digest}"\n'
        )
        port = _free_port()
        log = open(self.tmp / "gateway-access.log", "wb")  # the access log is on, written to a file
        command = [str(Path(sys.executable).parent / "llmrelay")]
        name = "llmrelay gateway"
        if loop == "asyncio":  # uvloop made unimportable: the gateway runs on asyncio's own loop
            command = [sys.executable, "-c", NO_UVLOOP]
            name += " (asyncio loop)"
        process = self.spawn(
            [*command, "serve", "--config", str(config), "--port", str(port)],
            self.proxy_cpus,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _wait_http(f"http://127.0.0.1:{port}/health")
        target = Target(name, port, process, "fake/", KEY)
        if loop == "uvloop":
            target.doors = [door for door in DOORS if self._has_door(target, door)]
        return target

    def _has_door(self, target: Target, door: str) -> bool:
        from .load import DOORS as PATHS

        request = urllib.request.Request(
            f"http://127.0.0.1:{target.port}{PATHS[door][0]}",
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as error:
            if error.code in (404, 405):
                print(f"door {door} not measured: the gateway has no {PATHS[door][0]}", file=sys.stderr)
                return False
        return True

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

    def start_portkey(self) -> Target | None:
        missing = peers.portkey_missing()
        if missing is not None:
            print(f"Portkey not measured: {missing}", file=sys.stderr)
            return None
        port = _free_port()
        log = open(self.tmp / "portkey.log", "wb")
        process = self.spawn(
            peers.portkey_argv(port), self.proxy_cpus, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/", 60, process)
        except RuntimeError as error:
            print(f"Portkey not measured: {error} (log: {self.tmp / 'portkey.log'})", file=sys.stderr)
            Target("portkey", port, process).stop()
            return None
        headers = ["x-portkey-provider: openai", f"x-portkey-custom-host: http://127.0.0.1:{self.upstream_port}/v1"]
        return Target("Portkey gateway", port, process, key="sk-fake", headers=headers)

    def start_litellm(self) -> Target | None:
        command = self.args.litellm or str(peers.litellm_command())
        if not Path(command).exists():
            print(f"LiteLLM not measured: {command} does not exist (python -m bench.peers install)", file=sys.stderr)
            return None
        config = self.tmp / "litellm.yaml"
        entries = "".join(
            f"  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n"
            f"      api_base: http://127.0.0.1:{self.upstream_port}/v1\n      api_key: sk-fake\n"
            for model in (STREAM, HOLD)
        )
        config.write_text(
            "model_list:\n" + entries + "litellm_settings:\n  telemetry: false\n"
            f"general_settings:\n  master_key: {LITELLM_KEY}\n"  # recent versions refuse to start without one
        )
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
            _wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, process)
        except RuntimeError as error:
            print(f"LiteLLM not measured: {error} (log: {self.tmp / 'litellm.log'})", file=sys.stderr)
            Target("litellm", port, process).stop()
            return None
        return Target("LiteLLM proxy", port, process, key=LITELLM_KEY)

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
        door: str = "chat",
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
        argv += ["--door", door]
        for header in target.headers:
            argv += ["--header", header]
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
        """One repetition on ``target``; a measurement where nothing succeeded adds only its errors (shown as
        "fail" in the table)."""
        scale = 0.25 if quick else 1.0
        n = lambda count: max(20, int(count * scale))  # noqa: E731
        self.load(target, NONSTREAM, False, 8, n(200), 10)  # warm-up: connections, caches
        result = self.load(target, NONSTREAM, False, 1, n(400), 15)
        if result["latencies"]:
            target.add("p50", statistics.median(result["latencies"]))
            target.add("p99", _percentile(result["latencies"], 99))
        target.add("errors", result["errors"])
        result = self.load(target, STREAM, True, 1, n(300), 15)
        if result["ttfts"]:
            target.add("ttft", statistics.median(result["ttfts"]))
        target.add("errors", result["errors"])
        result = self.load(target, NONSTREAM, False, 64, n(4000), 12)
        if result["done"]:
            target.add("rps", result["done"] / result["wall"])
            target.add("cpu", result["cpu"] / result["done"] * 1000)
            target.add("p50_64", statistics.median(result["latencies"]))
        target.add("errors", result["errors"])
        result = self.load(target, STREAM, True, 64, n(3000), 12)
        if result["done"]:
            target.add("rps_stream", result["done"] / result["wall"])
            target.add("cpu_stream", result["cpu"] / result["done"] * 1000)
        target.add("errors", result["errors"])
        for door in target.doors:
            for stream, count, name in ((False, 4000, f"cpu_{door}"), (True, 3000, f"cpu_stream_{door}")):
                result = self.load(target, STREAM, stream, 64, n(count), 12, door=door)
                if result["done"]:
                    target.add(name, result["cpu"] / result["done"] * 1000)
                target.add(f"errors_{door}", result["errors"])

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
        if self.args.asyncio:
            self.targets.append(self.start_llmrelay("asyncio"))
        if not self.args.no_portkey:
            portkey = self.start_portkey()
            if portkey is not None:
                self.targets.append(portkey)
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
        base = _medians(direct)
        floor = next((t for t in self.targets if t.name.startswith("aiohttp")), None)
        floor_med = _medians(floor) if floor is not None else {}
        rows = [
            "| | CPU/request ms | CPU/16-chunk stream ms | req/s c=64 | streams/s c=64 | p50 c=1 ms (added) "
            "| p99 c=1 ms (added) | first chunk c=1 ms (added) | p50 c=64 ms | RSS start MB | RSS 1000 streams MB "
            "(KB/stream) | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target in self.targets:
            med = _medians(target)
            proxied = target is not direct

            def value(name: str, spec: str = ".0f", med: dict[str, float] = med) -> str:
                return format(med[name], spec) if name in med else "fail"

            def cpu(name: str, med: dict[str, float] = med, target: Target = target, proxied: bool = proxied) -> str:
                if not proxied:
                    return "(upstream)"
                text = value(name, ".3f")
                if name in med and target is not floor and floor_med.get(name):
                    text += f" ({med[name] / floor_med[name]:.2f}× floor)"
                return text

            def added(name: str, med: dict[str, float] = med, proxied: bool = proxied) -> str:
                if name not in med:
                    return "fail"
                return f"{med[name]:.2f}" + (f" (+{med[name] - base[name]:.2f})" if proxied and name in base else "")

            if proxied:
                held = getattr(target, "held", 0)
                per = (target.hold_peak_kb - target.hold_before_kb) / max(1, held)  # type: ignore[attr-defined]
                memory = f"{target.hold_peak_kb / 1024:.0f} ({per:.0f}; {held} done)"  # type: ignore[attr-defined]
                start = f"{target.rss_start_kb / 1024:.0f}"
            else:
                memory = start = "-"
            rows.append(
                f"| {target.name} | {cpu('cpu')} | {cpu('cpu_stream')} | {value('rps')} | {value('rps_stream')} "
                f"| {added('p50')} | {added('p99')} | {added('ttft')} | {value('p50_64', '.1f')} | {start} | {memory} "
                f"| {sum(target.results.get('errors', []))} |"
            )
        return "\n".join(rows) + self.door_table()

    def door_table(self) -> str:
        gateway = next((t for t in self.targets if t.name == "llmrelay gateway"), None)
        if gateway is None or "cpu" not in gateway.results:
            return ""
        med = _medians(gateway)
        rows = [
            "",
            "",
            "The llmrelay gateway per door (c=64, the same run; ratios to the chat door):",
            "",
            "| door | CPU/request ms | CPU/16-chunk stream ms | errors |",
            "|---|---|---|---|",
            f"| chat (/v1/chat/completions) | {med['cpu']:.3f} | {med['cpu_stream']:.3f} | - |",
        ]
        for door in DOORS:
            if door not in gateway.doors:
                rows.append(f"| {door} | not measured: the gateway has no such door | | |")
                continue
            cells = []
            for name, chat in ((f"cpu_{door}", "cpu"), (f"cpu_stream_{door}", "cpu_stream")):
                cells.append(f"{med[name]:.3f} ({med[name] / med[chat]:.2f}× chat)" if name in med else "fail")
            rows.append(f"| {door} | {cells[0]} | {cells[1]} | {sum(gateway.results.get(f'errors_{door}', []))} |")
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


NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from llmrelay.cli import main; sys.exit(main())"


def _medians(target: Target) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in target.results.items() if "errors" not in name}


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests per measurement, one repetition")
    parser.add_argument("--streams", type=int, default=1000, help="streams held open at once for the memory row")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-portkey", action="store_true")
    parser.add_argument("--litellm", help="the litellm command of its own virtualenv (default: bench/.peers)")
    parser.add_argument("--asyncio", action="store_true", help="also the gateway on asyncio's loop (not uvloop)")
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
