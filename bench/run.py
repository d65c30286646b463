"""Run the benchmark: ``python -m bench`` (about 5 minutes on 2 cores) or ``python -m bench --quick`` (< 1 minute).

One run measures every client side by side against one fake OpenAI-compatible server in its own
process. Each client lives in its own worker process (so one library's imports and patches never
touch another's numbers). Every measurement is repeated; within each repetition the clients take
turns (in a rotated order), and each client's number is divided by the baseline's number of the
same repetition. The table shows medians over the repetitions of the values and of those ratios.
The Markdown table is printed and written to ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

from .clients import BASELINE, CLIENTS
from .payload import MESSAGES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.md"
LLMRELAY_ROWS = ("llmrelay", "llmrelay-client")
PACKAGES = ("llmrelay", "aiohttp", "orjson", "multidict", "yarl", "openai", "httpx2", "pydantic", "g4f")


@dataclass
class Config:
    reps: int = 5
    stream_chunks: int = 20000
    requests_c1: int = 400
    requests_c64: int = 1536
    json_chunks: int = 16  # the non-streamed answer holds the text of 16 chunks (~80 bytes)
    ttfc_requests: int = 96
    memory_streams: int = 500
    memory_model: str = "drip-30-100"  # 30 chunks, one every 100 ms: each stream stays open ~3 s
    memory_deadline: float = 8.0
    memory_reps: int = 2
    import_runs: int = 7
    sink_chunks: int = 20000
    stream_turns: int = 3  # streams per client and repetition
    blocks: int = 8  # the request and first-chunk measurements of a repetition are split into this many turns


QUICK = Config(
    reps=1,
    stream_chunks=5000,
    requests_c1=100,
    requests_c64=256,
    ttfc_requests=20,
    memory_streams=200,
    memory_model="drip-10-100",
    memory_deadline=3.0,
    memory_reps=1,
    import_runs=2,
    sink_chunks=5000,
    stream_turns=1,
    blocks=2,
)


# ------------------------------------------------------------------- processes


class Server:
    def __init__(self, prebuild: list[int], cpu: int | None) -> None:
        command = [sys.executable, "-m", "bench.server", "--exit-with-stdin", "--prebuild", *map(str, prebuild)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
        )
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the bench server did not start")
        self.port, self.control_port = map(int, line.split())
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def stats(self, reset: bool = False) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=10)
        try:
            conn.request("GET", "/reset" if reset else "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        self.proc.stdin.close()  # the server exits at EOF on its stdin
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class WorkerError(RuntimeError):
    pass


class Worker:
    """A client's worker process, driven by JSON lines."""

    def __init__(self, name: str, base: str, cpu: int | None, logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        command = [sys.executable, "-m", "bench.worker", name, base]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=_env()
            )
        self._buffer = b""
        self.error: str | None = None

    def _readline(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s{self._log_tail()}")
                data = os.read(fd, 65536)
                if not data:
                    raise WorkerError(f"{self.name}: the worker exited{self._log_tail()}")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()[-8:]
        except OSError:
            return ""
        return ("\n    " + "\n    ".join(lines)) if lines else ""

    def ready(self, timeout: float = 120) -> bool:
        answer = self._readline(timeout)
        if not answer.get("ready"):
            self.error = answer.get("error", "not ready")
            self.proc.wait(10)
        return self.error is None

    def call(self, op: str, timeout: float = 300, **arguments: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        self.proc.stdin.flush()
        answer = self._readline(timeout)
        if answer.get("error"):
            raise WorkerError(f"{self.name}: {op} failed: {answer['error']}{self._log_tail()}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# ---------------------------------------------------------------- measurements


def sink(server: Server, chunks: int) -> dict[str, float]:
    """The server's own maximum rate: a raw socket reads one stream as fast as the kernel hands it over."""
    body = json.dumps({"model": f"stream-{chunks}", "messages": MESSAGES, "stream": True}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    buffer = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        before = server.stats()["cpu"]
        start = time.perf_counter()
        sock.sendall(request)
        tail = b""
        while True:
            size = sock.recv_into(buffer)
            if not size:
                break
            tail = (tail + bytes(buffer[max(0, size - 5) : size]))[-5:]
            if tail == b"0\r\n\r\n":
                break
        wall = time.perf_counter() - start
        cpu = server.stats()["cpu"] - before
    events = chunks + 4
    return {"rate": events / wall, "cpu_us": cpu / events * 1e6}


def import_time(statement: str) -> float:
    code = f"import time\nstart = time.perf_counter()\n{statement}\nprint(time.perf_counter() - start)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tempfile.gettempdir(), env=_env(), capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def memory_run(name: str, server: Server, config: Config, cpu: int | None, logdir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.worker",
        name,
        server.base,
        "--memory",
        str(config.memory_streams),
        "--model",
        config.memory_model,
        "--deadline",
        str(config.memory_deadline),
    ]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    server.stats(reset=True)
    with open(logdir / f"{name}-memory.log", "wb") as log:
        result = subprocess.run(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=log, timeout=120)
    lines = result.stdout.decode().strip().splitlines()
    if not lines:
        raise WorkerError(f"{name}: the memory run printed nothing (exit {result.returncode})")
    answer = json.loads(lines[-1])
    answer["server_max_open"] = server.stats()["max_open_streams"]
    return answer


# ------------------------------------------------------------------- reporting


def machine_info() -> list[str]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    commit = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "llmrelay"], cwd=ROOT, capture_output=True, text=True)
        if dirty.stdout.strip():
            commit += " + uncommitted changes in llmrelay/"
    except (OSError, subprocess.CalledProcessError):
        pass
    return [
        f"- CPU: {model}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), llmrelay commit {commit}",
        f"- {', '.join(versions)}",
    ]


def _ratio(value: float) -> str:
    return f"{value:.2f}×"


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


class Results:
    def __init__(self) -> None:
        # metric -> client -> list of per-repetition values
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.deltas: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.accepts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        self.failed: dict[str, set[str]] = defaultdict(set)
        self.extra: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add_rep(self, metric: str, rep: dict[str, float]) -> None:
        """One repetition of a metric for every client; ratios (and differences) to the baseline of that repetition."""
        base = rep.get(BASELINE)
        for name, value in rep.items():
            self.values[metric][name].append(value)
            if base:
                self.ratios[metric][name].append(value / base)
                self.deltas[metric][name].append(value - base)

    def value(self, metric: str, name: str) -> float | None:
        values = self.values[metric].get(name)
        return median(values) if values else None

    def ratio(self, metric: str, name: str) -> float | None:
        values = self.ratios[metric].get(name)
        return median(values) if values else None

    def delta(self, metric: str, name: str) -> float | None:
        values = self.deltas[metric].get(name)
        return median(values) if values else None

    def conns(self, kind: str, name: str) -> float | None:
        accepts, requests = self.accepts[kind].get(name, (0, 0))
        return accepts / requests if requests else None


COLUMNS = (
    ("stream", "stream CPU/chunk µs", 2),
    ("burst", "burst CPU/chunk µs", 2),
    ("c1", "CPU/request c=1 µs", 0),
    ("c64", "CPU/request c=64 µs", 0),
)


def render(
    results: Results,
    names: list[str],
    skipped: dict[str, str],
    config: Config,
    command: str,
    elapsed: float,
    imports: dict[str, list[float]],
) -> str:
    lines = [
        "# llmrelay benchmark results",
        "",
        f"Command: `{command}` — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, took {elapsed:.0f} s.",
        "",
        *machine_info(),
        "",
        f"{config.reps} repetitions; in each, the clients take turns (rotated order) {config.stream_turns}× on the "
        f"stream and {config.blocks}× on the request and first-chunk measurements, and every turn is one sample "
        f"({config.reps * config.stream_turns} and {config.reps * config.blocks} samples); memory: "
        f"{config.memory_reps} samples, imports: best of {config.import_runs}. Shown: the median of the samples and, "
        f"in parentheses, the median of the per-sample ratios to the baseline (`{CLIENTS[BASELINE].label}`) of the "
        "same turn; lower is better. CPU = the client process's own CPU time (all its threads).",
        "",
        "| client | stream CPU/chunk µs | burst CPU/chunk µs | CPU/request c=1 µs | CPU/request c=64 µs "
        "| first chunk µs (Δ) | peak RSS MB | KB/stream | open at once | import ms | new conns/request | text |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: |",
    ]
    for name in names:
        label = CLIENTS[name].label
        if name in skipped:
            lines.append(f"| {label} | skipped: {skipped[name]} |" + " |" * 10)
            continue
        cells = [label]
        for metric, _title, digits in COLUMNS:
            value, ratio = results.value(metric, name), results.ratio(metric, name)
            cells.append("–" if value is None else f"{_fmt(value, digits)} ({_ratio(ratio)})")
        ttfc, delta = results.value("ttfc", name), results.delta("ttfc", name)
        cells.append("–" if ttfc is None else f"{ttfc:,.0f} ({delta:+,.0f})")
        peak, kb, kb_ratio = (
            results.value("peak", name),
            results.value("kb", name),
            results.ratio("kb", name),
        )
        cells.append("–" if peak is None else f"{peak / 1024:,.1f}")
        cells.append("–" if kb is None else f"{kb:,.1f} ({_ratio(kb_ratio)})")
        opened = results.values["open"].get(name)
        cells.append("–" if not opened else f"{min(opened):.0f}/{config.memory_streams}")
        imp, imp_ratio = results.value("import", name), results.ratio("import", name)
        cells.append("–" if imp is None else f"{imp * 1000:,.0f} ({_ratio(imp_ratio)})")
        conns = [results.conns(kind, name) for kind in ("c1", "c64", "stream", "late")]
        cells.append(" / ".join("–" if c is None else f"{c:.2g}" for c in conns))
        failed = results.failed.get(name)
        cells.append("✗ " + ", ".join(sorted(failed)) if failed else "✓")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns: **stream** — one answer of "
        f"{config.stream_chunks:,} chunks, one socket write per SSE event; **burst** — the same answer with 64 SSE "
        "events per socket write (a fast server, or a burst after a stall: the reader's per-event cost); **c=1 / c=64** — non-streamed "
        f"requests ({config.requests_c1} one at a time / {config.requests_c64} by 64 concurrent tasks) through one "
        "shared client; **first chunk** — wall time from the call to the first text piece (median of "
        f"{config.ttfc_requests} sequential streams; Δ to the baseline); **peak RSS / KB/stream** — "
        f"{config.memory_streams} concurrent drip-fed streams (`{config.memory_model}`) in a fresh process: peak RSS, "
        "and (peak − RSS before) / streams; **open at once** — the most streams the server had open at the same "
        "time (lowest repetition); **import** — the client's import statement in a fresh interpreter; **new "
        "conns/request** — TCP connections the server accepted per request after warm-up, for c=1 / c=64 / the "
        "long stream / short streams whose body ends 2 ms after `[DONE]` (a caller that stops at `[DONE]`); "
        "**text** — every answer equal, byte for byte, to what the server sent.",
    ]
    lines += ["", f"Cold import times (best of {config.import_runs}):", ""]
    base_import = min(imports.get("import aiohttp", [0])) or None
    for statement, times in imports.items():
        best = min(times)
        ratio = f" ({best / base_import:.2f}× `import aiohttp`)" if base_import else ""
        lines.append(f"- `{statement}`: {best * 1000:.1f} ms{ratio}")
    sink_rates = results.values["sink_rate"].get("server", [])
    sink_cpu = results.values["sink_cpu"].get("server", [])
    if sink_rates:
        fastest = max(
            (
                (median(results.extra["stream_rate"][name]), name)
                for name in names
                if results.extra["stream_rate"].get(name)
            ),
            default=(0.0, ""),
        )
        shares = {
            name: median(results.extra["server_share"][name])
            for name in names
            if results.extra["server_share"].get(name)
        }
        busiest = max(shares.items(), key=lambda item: item[1], default=("", 0.0))
        client_busy = min(
            (median(results.extra["client_share"][name]) for name in names if results.extra["client_share"].get(name)),
            default=0.0,
        )
        lines += [
            "",
            f"Fake server: at most {median(sink_rates):,.0f} SSE events/s to a raw-socket reader that always waits "
            f"in `recv` ({median(sink_cpu):.1f} µs of server CPU per event, its most expensive case); the fastest "
            f"client read {fastest[0]:,.0f} events/s ({CLIENTS[fastest[1]].label if fastest[1] else '–'}). During "
            f"the stream measurement the server's CPU was busy at most {busiest[1]:.0%} of the wall time "
            f"({CLIENTS[busiest[0]].label if busiest[0] else '–'}) while every client was busy at least "
            f"{client_busy:.0%} of it: the clients are CPU-bound, the server is not the bottleneck.",
        ]
    lines += ["", *targets(results, config, imports), ""]
    return "\n".join(lines)


def targets(results: Results, config: Config, imports: dict[str, list[float]]) -> list[str]:
    rows = ["Targets (llmrelay vs the baseline, same run):", ""]

    def check(label: str, value: float | None, ok: bool, shown: str) -> None:
        status = "n/a" if value is None else ("met" if ok else "**missed**")
        rows.append(f"- {label}: {shown if value is not None else 'not measured'} — {status}")

    for name, title, limit in (("llmrelay", "provider", 0.7), ("llmrelay-client", "AsyncClient", 1.2)):
        value = results.ratio("stream", name)
        shown = f"{value:.3f}×" if value is not None else ""
        check(f"{title} streaming CPU/chunk ≤ {limit}×", value, value is not None and value <= limit, shown)
    orjson_loop = results.ratio("burst", "raw-orjson")
    for name in LLMRELAY_ROWS:
        value = results.ratio("burst", name)
        check(
            f"{CLIENTS[name].label}: burst CPU/chunk ≤ the aiohttp + orjson loop"
            + (f" ({_ratio(orjson_loop)})" if orjson_loop is not None else ""),
            value,
            value is not None and orjson_loop is not None and value <= orjson_loop,
            f"{value:.3f}×" if value is not None else "",
        )
    for name in LLMRELAY_ROWS:
        title = CLIENTS[name].label
        for metric in ("c1", "c64"):
            value = results.ratio(metric, name)
            check(
                f"{title}: CPU/request {metric.replace('c', 'c=')} ≤ 1.2×",
                value,
                value is not None and value <= 1.2,
                f"{value:.3f}×" if value else "",
            )
        delta = results.delta("ttfc", name)
        check(
            f"{title}: first chunk ≤ baseline + 100 µs",
            delta,
            delta is not None and delta <= 100,
            f"{delta:+.0f} µs" if delta is not None else "",
        )
        kb = results.ratio("kb", name)
        check(f"{title}: memory per open stream ≤ 1.2×", kb, kb is not None and kb <= 1.2, f"{kb:.3f}×" if kb else "")
        opened = results.values["open"].get(name)
        low = min(opened) if opened else None
        check(
            f"{title}: all {config.memory_streams} streams open at once",
            low,
            low == config.memory_streams,
            f"{low:.0f}" if low is not None else "",
        )
        conns = [results.conns(kind, name) for kind in ("c1", "c64", "stream", "late")]
        seen = [c for c in conns if c is not None]
        check(
            f"{title}: 0 new connections per request after warm-up",
            seen[0] if seen else None,
            bool(seen) and max(seen) == 0,
            " / ".join("–" if c is None else f"{c:.2g}" for c in conns),
        )
    aiohttp_time = min(imports.get("import aiohttp", [0])) or None
    for statement in ("import llmrelay", "from llmrelay import OpenaiTemplate"):
        times = imports.get(statement)
        value = min(times) / aiohttp_time if times and aiohttp_time else None
        check(
            f"`{statement}` ≤ 1.2× `import aiohttp`",
            value,
            value is not None and value <= 1.2,
            f"{value:.3f}×" if value else "",
        )
    return rows


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one repetition, smaller sizes (< 1 min)")
    parser.add_argument("--reps", type=int, help="repetitions of each CPU measurement")
    parser.add_argument("--clients", help=f"comma-separated subset of: {', '.join(CLIENTS)}")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the clients to separate CPUs")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the Markdown (default: bench/results.md)"
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.reps:
        config.reps = args.reps
    names = list(CLIENTS)
    if args.clients:
        names = [name.strip() for name in args.clients.split(",")]
        unknown = [name for name in names if name not in CLIENTS]
        if unknown:
            parser.error(f"unknown client(s): {', '.join(unknown)}")
        if BASELINE not in names:
            names.insert(0, BASELINE)
    out = args.out or (None if args.quick or args.clients else RESULTS)
    command = "python -m bench" + "".join(f" {arg}" for arg in (argv if argv is not None else sys.argv[1:]))
    started = time.perf_counter()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    server_cpu, client_cpu = (os.cpu_count() - 1, 0) if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {client_cpu})

    logdir = Path(tempfile.mkdtemp(prefix="llmrelay-bench-"))
    server = Server([config.stream_chunks, config.sink_chunks, config.json_chunks], server_cpu)
    workers: dict[str, Worker] = {}
    skipped: dict[str, str] = {}
    results = Results()
    say = print
    say(f"fake server at {server.base} (pid {server.proc.pid}); worker logs in {logdir}")
    try:
        for name in names:
            workers[name] = Worker(name, server.base, client_cpu, logdir)
        for name in names:
            if not workers[name].ready():
                skipped[name] = workers.pop(name).error or "failed"
                say(f"note: skipping {CLIENTS[name].label}: {skipped[name]}")
        if BASELINE not in workers:
            raise SystemExit("the baseline client could not start")
        active = [name for name in names if name in workers]
        stream_model = f"stream-{config.stream_chunks}"
        burst_model = f"burst-{config.stream_chunks}"
        json_model = f"stream-{config.json_chunks}"
        late_model = f"late-{config.json_chunks}"
        for name in active:
            answer = workers[name].call("warm", stream_model=stream_model, json_model=json_model, concurrency=64)
            workers[name].call("warm", stream_model=late_model, json_model=json_model, concurrency=1)
            if not answer["ok"]:
                results.failed[name].add("warm-up")

        def measure(name: str, kind: str, op: str, requests: int, **arguments: Any) -> dict[str, Any]:
            # Idle keep-alive connections expire while the other clients take their turns (aiohttp after
            # 15 s, httpx after 5 s): an uncounted round first, so only the measured requests are counted.
            primed = workers[name].call(
                "prime", model=json_model, concurrency=arguments.get("concurrency", 1), stream=op != "requests"
            )
            if not primed["ok"]:
                results.failed[name].add(kind)
            before = server.stats()
            answer = workers[name].call(op, **arguments)
            after = server.stats()
            counts = results.accepts[kind][name]
            counts[0] += after["accepts"] - before["accepts"]
            counts[1] += answer.get("n", requests)
            answer["server_cpu"] = after["cpu"] - before["cpu"]
            if not answer["ok"]:
                results.failed[name].add(kind)
            return answer

        for rep in range(config.reps):
            say(f"repetition {rep + 1}/{config.reps}")
            order = active[rep % len(active) :] + active[: rep % len(active)]
            sunk = sink(server, config.sink_chunks)
            results.values["sink_rate"]["server"].append(sunk["rate"])
            results.values["sink_cpu"]["server"].append(sunk["cpu_us"])
            # Every measurement runs in turns, the clients taking turns in a rotated order, so a burst of
            # load from elsewhere on the machine hits every client alike; each turn is one sample of the
            # ratio to the baseline.
            shown: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for _turn in range(config.stream_turns):
                stream = {}
                for name in order:
                    answer = measure(name, "stream", "stream", 1, model=stream_model)
                    stream[name] = answer["cpu"] / config.stream_chunks * 1e6
                    results.extra["stream_rate"][name].append((config.stream_chunks + 4) / answer["wall"])
                    results.extra["server_share"][name].append(answer["server_cpu"] / answer["wall"])
                    results.extra["client_share"][name].append(answer["cpu"] / answer["wall"])
                results.add_rep("stream", stream)
                for name, value in stream.items():
                    shown["stream"][name].append(value)
                burst = {}
                for name in order:
                    answer = measure(name, "burst", "stream", 1, model=burst_model)
                    burst[name] = answer["cpu"] / config.stream_chunks * 1e6
                results.add_rep("burst", burst)
                for name, value in burst.items():
                    shown["burst"][name].append(value)
            for _turn in range(config.blocks):
                c1, c64, ttfc = {}, {}, {}
                for name in order:
                    n = config.requests_c1 // config.blocks
                    answer = measure(name, "c1", "requests", n, model=json_model, n=n, concurrency=1)
                    c1[name] = answer["cpu"] / answer["n"] * 1e6
                for name in order:
                    n = config.requests_c64 // config.blocks
                    answer = measure(name, "c64", "requests", n, model=json_model, n=n, concurrency=64)
                    c64[name] = answer["cpu"] / answer["n"] * 1e6
                for name in order:
                    n = config.ttfc_requests // config.blocks
                    answer = measure(name, "late", "ttfc", n, model=late_model, n=n)
                    ttfc[name] = median(answer["times"]) * 1e6
                for metric, turn in (("c1", c1), ("c64", c64), ("ttfc", ttfc)):
                    results.add_rep(metric, turn)
                    for name, value in turn.items():
                        shown[metric][name].append(value)
            for metric, title, digits in (
                ("stream", "stream µs/chunk", 2),
                ("burst", "burst µs/chunk", 2),
                ("c1", "c=1 µs/request", 0),
                ("c64", "c=64 µs/request", 0),
                ("ttfc", "first chunk µs", 0),
            ):
                values = ", ".join(f"{name} {median(shown[metric][name]):.{digits}f}" for name in active)
                say(f"  {title} (medians of this repetition): {values}")
        for worker in workers.values():
            worker.close()
        workers.clear()

        for rep in range(config.memory_reps):
            say(f"memory {rep + 1}/{config.memory_reps}: {config.memory_streams} concurrent streams per client")
            order = active[rep % len(active) :] + active[: rep % len(active)]
            peak, kb, opened = {}, {}, {}
            for name in order:
                try:
                    answer = memory_run(name, server, config, client_cpu, logdir)
                except (WorkerError, subprocess.TimeoutExpired) as error:
                    say(f"  {name}: {error}")
                    results.failed[name].add("memory")
                    continue
                if not answer["ok"]:
                    results.failed[name].add("memory")
                peak[name] = answer["peak_kb"]
                kb[name] = (answer["peak_kb"] - answer["before_kb"]) / config.memory_streams
                opened[name] = answer["server_max_open"]
                say(
                    f"  {name}: peak {answer['peak_kb'] / 1024:.1f} MB, {kb[name]:.1f} KB/stream, "
                    f"{opened[name]} open at once, {answer['completed']} completed"
                )
            results.add_rep("peak", peak)
            results.add_rep("kb", kb)
            for name, value in opened.items():
                results.values["open"][name].append(value)

        say("cold imports")
        statements = ["import aiohttp", "import llmrelay"] + [CLIENTS[name].import_statement for name in active]
        statements = list(dict.fromkeys(statements))
        imports: dict[str, list[float]] = {statement: [] for statement in statements}
        for statement in statements:  # one unmeasured run each: bytecode caches are written
            import_time(statement)
        for _ in range(config.import_runs):
            for statement in statements:
                imports[statement].append(import_time(statement))
        for name in active:
            best = min(imports[CLIENTS[name].import_statement])
            results.values["import"][name].append(best)
        base_import = min(imports[CLIENTS[BASELINE].import_statement])
        for name in active:
            results.ratios["import"][name].append(results.values["import"][name][0] / base_import)
    finally:
        for worker in workers.values():
            worker.close()
        server.close()

    raw = {"values": results.values, "ratios": results.ratios, "deltas": results.deltas, "imports": imports}
    (logdir / "raw.json").write_text(json.dumps(raw, indent=1))
    report = render(results, names, skipped, config, command, time.perf_counter() - started, imports)
    say("")
    say(report)
    if out is not None:
        out.write_text(report)
        say(f"written to {out}")
