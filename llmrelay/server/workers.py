"""``llmrelay serve --workers N``: N gateway processes on one port (SO_REUSEPORT), supervised together (SPEC 8.8).

The supervisor (the process the user started) picks the port, starts N workers — each the same ``llmrelay serve``
command with ``--workers 1`` and the chosen port — and waits until every one of them listens; then it prints the
one startup line. The kernel spreads new connections over the workers' sockets. SIGTERM / SIGINT to the
supervisor is passed to every worker (each drains its in-flight requests, then exits); the supervisor exits 0 when
all did — at any moment, start-up included (no more workers are started once it came). SIGHUP is passed to every
worker that listens (each reloads its configuration, see :mod:`.reload`), and to a starting one once it listens.
A worker that dies while serving is logged and started again. The workers sit in their own process group (Ctrl-C
reaches only the supervisor, which forwards it once) and get SIGTERM if the supervisor itself dies, even while they
start (Linux: PR_SET_PDEATHSIG, set before exec). ``--workers`` is bounded by :func:`max_workers` (4 per CPU).

Worker side: :func:`is_worker`, :func:`listen_socket` (the SO_REUSEPORT socket), :func:`ready_stream` (where the
startup line goes: to the supervisor) and :func:`add_worker_header` (``x-llmrelay-worker: PID`` on responses).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp import web

from .reload import take_early_reload

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "READY_FD_ENV",
    "WORKER_HEADER",
    "Supervisor",
    "add_worker_header",
    "is_worker",
    "listen_socket",
    "max_workers",
    "ready_stream",
    "supervise",
    "unshared_warning",
    "workers_problem",
]

READY_FD_ENV = "LLMRELAY_WORKER_READY_FD"
WORKER_HEADER = "x-llmrelay-worker"
WORKERS_PER_CPU = 4
_RESTART_BACKOFF_MAX_S = 10.0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS tells it, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    """The most ``--workers`` accepted: each worker is a whole gateway process with its own event loop, so
    beyond a few per CPU they only compete for the same CPUs and memory (and a typo must not fork-bomb)."""
    return WORKERS_PER_CPU * usable_cpus()


def workers_problem(count: int) -> str | None:
    """Why ``--workers count`` is refused, else None."""
    if count < 1:
        return f"--workers must be at least 1, not {count}"
    bound = max_workers()
    if count > bound:
        cpus = usable_cpus()
        return (
            f"--workers {count} is more than this machine can use: at most {bound} "
            f"({WORKERS_PER_CPU} per CPU, {cpus} CPU{'s' if cpus != 1 else ''} available); each worker is a whole "
            "gateway process, so more only compete for the same CPUs and memory"
        )
    return None


# ------------------------------------------------------------------------------ worker side


def is_worker() -> bool:
    """True in a process a supervisor started."""
    return READY_FD_ENV in os.environ


def listen_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` with SO_REUSEPORT, so several workers share the port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _ReadyStream:
    """A text stream for the worker's startup line: sends ``PID<TAB>line`` to the supervisor's pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        for line in text.splitlines():
            with contextlib.suppress(OSError):  # the supervisor is gone: nothing to tell
                os.write(self.fd, f"{os.getpid()}\t{line}\n".encode())
        return len(text)

    def flush(self) -> None:
        pass


def ready_stream() -> TextIO:
    """Where a worker writes its startup line (the supervisor prints one line for all of them)."""
    return _ReadyStream(int(os.environ[READY_FD_ENV]))  # type: ignore[return-value]


def add_worker_header(app: web.Application) -> None:
    """Name the worker that answered in every response (``x-llmrelay-worker: PID``), to see the spreading."""
    pid = str(os.getpid())

    async def header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = pid

    app.on_response_prepare.append(header)


def unshared_warning(workers: int, redis_url: str | None, limited_keys: Sequence[str]) -> str | None:
    """The warning for ``--workers N`` with key limits but no Redis: each worker counts on its own."""
    if workers <= 1 or redis_url or not limited_keys:
        return None
    return (
        f"warning: {workers} workers without redis_url: each worker keeps its own rpm / tpm / max_concurrent "
        f"counters (a key gets up to {workers} times its limits; keys: {', '.join(limited_keys)})"
    )


# ---------------------------------------------------------------------------- supervisor side


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs before exec: its own process group (Ctrl-C reaches the supervisor only), and SIGTERM
    when the supervisor dies (Linux). A supervisor that died before the request was made: exit at once."""

    def setup() -> None:
        os.setpgrp()
        if sys.platform.startswith("linux"):
            with contextlib.suppress(Exception):
                pr_set_pdeathsig = 1
                ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return setup


class _Worker:
    def __init__(self, index: int, process: subprocess.Popen[bytes]) -> None:
        self.index = index
        self.process = process
        self.started = time.monotonic()
        self.ready = False
        self.reload = False  # a SIGHUP to pass on once it listens (it takes SIGHUP over only then)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class Supervisor:
    """Starts ``workers`` copies of ``command`` (each listens on ``port`` itself), restarts any that dies, and
    passes SIGTERM / SIGINT on to all of them. :meth:`run` returns the exit status."""

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        drain_timeout_s: float = 30.0,
        stderr: TextIO | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        problem = workers_problem(workers)
        if problem:
            raise ValueError(problem)
        self.command = list(command)
        self.count = workers
        self.drain_timeout_s = drain_timeout_s
        self.stderr = stderr or sys.stderr
        self.env = dict(os.environ if env is None else env)
        self.workers: list[_Worker] = []
        self.restarts = 0
        self._stopping = False
        self._reloading = False
        self._read_fd, self._write_fd = os.pipe()
        self._buffer = b""
        self._failures: dict[int, int] = {}  # worker index -> deaths in a row soon after starting

    def _say(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def _spawn(self, index: int) -> _Worker:
        env = {**self.env, READY_FD_ENV: str(self._write_fd)}
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(self._write_fd,),
            preexec_fn=_die_with(os.getpid()),  # safe: the supervisor runs no threads
        )
        return _Worker(index, process)

    def _stop(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _hup(self, signum: int, frame: Any) -> None:
        self._reloading = True

    def _pass_reload(self) -> None:
        """SIGHUP to every worker that listens; the others get it as soon as they do."""
        if not self._reloading:
            return
        self._reloading = False
        for worker in self.workers:
            if worker.ready:
                worker.signal(signal.SIGHUP)
            else:
                worker.reload = True

    def _read_ready(self, timeout: float) -> list[tuple[int, str]]:
        """(pid, startup line) of workers that reported listening within ``timeout``."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._read_fd, selectors.EVENT_READ)
            if not selector.select(timeout):
                return []
        self._buffer += os.read(self._read_fd, 65536)
        *lines, self._buffer = self._buffer.split(b"\n")
        found = []
        for line in lines:
            pid, _, text = line.decode(errors="replace").partition("\t")
            if pid.isdigit():
                found.append((int(pid), text))
        return found

    def _mark_ready(self, reports: list[tuple[int, str]]) -> str | None:
        line = None
        for pid, text in reports:
            for worker in self.workers:
                if worker.process.pid == pid:
                    worker.ready = True
                    line = line or text
                    if worker.reload:
                        worker.reload = False
                        worker.signal(signal.SIGHUP)
        return line

    def run(self) -> int:
        previous = {number: signal.signal(number, self._stop) for number in (signal.SIGTERM, signal.SIGINT)}
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hup)
            self._reloading = self._reloading or take_early_reload()
        try:
            for index in range(self.count):
                if self._stopping:  # SIGTERM / SIGINT while starting them: start no more
                    break
                self.workers.append(self._spawn(index))
            status = self._start()
            if status is None:
                self._serve()
                status = self._drain()
            return status
        finally:
            self._kill_all()
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(self._read_fd)
            os.close(self._write_fd)

    def _start(self) -> int | None:
        """Wait until every worker listens; then print the startup line. An exit status when they could not."""
        line = None
        while not all(worker.ready for worker in self.workers):
            if self._stopping:
                return self._drain()
            self._pass_reload()
            first = self._mark_ready(self._read_ready(0.05))
            line = line or first
            for worker in self.workers:
                code = worker.process.poll()
                if code is not None and not worker.ready:
                    # It printed why (bad config, port taken, Redis unreachable); stop the others the same way.
                    self._drain()
                    return code if code > 0 else 1
        assert line is not None
        self._say(_with_workers(line, self.count))
        return None

    def _serve(self) -> None:
        while not self._stopping:
            self._pass_reload()
            self._mark_ready(self._read_ready(0.2))
            for position, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                quick = time.monotonic() - worker.started < 5
                deaths = self._failures.get(worker.index, 0) + 1 if quick else 1
                self._failures[worker.index] = deaths
                wait = min(_RESTART_BACKOFF_MAX_S, 0.5 * 2 ** (deaths - 1)) if deaths > 1 else 0.0
                self._say(
                    f"llmrelay: worker {worker.process.pid} exited ({_status(code)}); "
                    f"starting another{f' in {wait:g} s' if wait else ''}"
                )
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not self._stopping:
                    time.sleep(0.05)
                if not self._stopping:
                    self.workers[position] = self._spawn(worker.index)
                    self.restarts += 1

    def _drain(self) -> int:
        """SIGTERM to every worker; wait for them to finish their requests; the exit status."""
        for worker in self.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s + 10
        clean = True
        for worker in self.workers:
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"llmrelay: worker {worker.process.pid} did not stop in time; killing it")
                worker.process.kill()
                code = worker.process.wait()
            # A worker stopped before it listened (still starting up) had nothing to drain.
            clean = clean and (code == 0 or (code == -signal.SIGTERM and not worker.ready))
        return 0 if clean else 1

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"status {code}"


def _with_workers(line: str, workers: int) -> str:
    """The workers' startup line, saying how many there are inside its parentheses (SPEC 8.1's line ends with
    the parenthesis): ``llmrelay gateway on … (providers: …; routes: …; 3 workers)``."""
    if line.endswith(")"):
        return f"{line[:-1]}; {workers} workers)"
    return f"{line} ({workers} workers)"


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """For ``--port 0``: a free port, held (bound, not listening, SO_REUSEPORT) so workers can share it and
    nothing else takes it while the supervisor lives."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock, int(sock.getsockname()[1])


def worker_command(argv: Sequence[str], host: str, port: int) -> list[str]:
    """This ``llmrelay`` invocation again, as one worker on ``host:port`` (later options win in argparse)."""
    return [sys.executable, "-m", "llmrelay", *argv, "--host", host, "--port", str(port), "--workers", "1"]


def supervise(config: Config, host: str, port: int, workers: int, argv: Sequence[str]) -> int:
    """``llmrelay serve --workers N`` (N > 1): warn about unshared limits, check Redis, run the workers."""
    limited = [key.name for key in config.keys if key.limited]
    warning = unshared_warning(workers, config.server.redis_url, limited)
    if warning:
        sys.stderr.write(warning + "\n")
    if config.server.redis_url:
        from .redis_state import RedisUnavailable, check_redis

        try:
            check_redis(config.server.redis_url)
        except RedisUnavailable as error:
            sys.stderr.write(f"error: {error}\n")
            return 1
    reserved = None
    if port == 0:
        reserved, port = reserve_port(host)
    try:
        command = worker_command(argv, host, port)
        return Supervisor(command, workers, drain_timeout_s=config.server.drain_timeout_s).run()
    finally:
        if reserved is not None:
            reserved.close()
