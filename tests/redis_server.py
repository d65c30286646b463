"""A real ``redis-server`` for tests: on a free loopback port, no persistence, stopped by the test that started it."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

__all__ = ["Monitor", "RedisServer", "free_port", "redis_command", "redis_server_path"]

# DEBUG SLEEP stands for a slow Redis in the tests; Redis >= 7 refuses DEBUG unless enabled.
_DEBUG = ["--enable-debug-command", "local"]


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if shutil.which("/usr/bin/redis-server") else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_command(port: int, *words: str) -> bytes:
    """One raw RESP command on a connection of its own (what another client would do); the raw reply."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``start()`` a redis-server, ``kill()`` it (SIGKILL), ``start()`` it again on the same port, ``pause()`` /
    ``resume()`` it (SIGSTOP / SIGCONT), ``stop()``."""

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        path = redis_server_path()
        if path is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs Debian's redis-server)")
        self.path = path
        self.port = port or free_port()
        self.args = args  # more redis-server options, e.g. ("--unixsocket", path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.process is not None:
            raise RuntimeError("redis-server already running")
        self.process = subprocess.Popen(
            [
                self.path,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *_DEBUG,
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, with everything it held."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a stalled or partitioned Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`: it answers again, with everything it held."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            if not sock.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Monitor:
    """Every command clients send to a redis-server (its MONITOR feed), from ``with Monitor(port) as m:`` until
    ``m.commands()``: (client address, COMMAND) pairs, without the commands scripts run inside Redis."""

    _LINE = re.compile(rb'^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')

    def __init__(self, port: int) -> None:
        self.port = port
        self._data = bytearray()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Monitor:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self._sock.sendall(b"MONITOR\r\n")
        if not self._sock.recv(5).startswith(b"+OK"):
            raise RuntimeError("MONITOR refused")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(65536):
                self._data += chunk

    def commands(self) -> list[tuple[str, str]]:
        """What was sent so far (a marker command from another client tells when the feed has caught up)."""
        marker = f"monitor-end-{time.monotonic_ns()}"
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"ECHO {marker}\r\n".encode())
            sock.recv(256)
        deadline = time.monotonic() + 10
        while marker.encode() not in self._data:
            if time.monotonic() > deadline:
                raise RuntimeError("the MONITOR feed never showed the marker")
            time.sleep(0.01)
        found = []
        for line in bytes(self._data).split(b"\r\n"):
            match = self._LINE.match(line)
            if match and match.group(1) != b"lua" and marker.encode() not in line:
                found.append((match.group(1).decode(), match.group(2).decode().upper()))
        return found

    def __exit__(self, *exc_info: object) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
