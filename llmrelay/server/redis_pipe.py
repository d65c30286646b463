"""One Redis connection for the per-request limit commands, pipelined (SPEC 8.8, issue 17).

redis-py's client takes a pooled connection per command, checks it, sends, and a reader coroutine waits for the
reply under a timeout: correct, but most of a round trip's cost. The limit checks of a request need only one
answer (admit); giving a slot back needs none. :class:`Pipe` keeps one connection: redis-py's pool opens it (so the
URL's host, unix socket, TLS, password and database work as everywhere else; RESP2), then the pipe takes its
transport over with an :class:`asyncio.Protocol` of its own that parses each read as it arrives (hiredis, else a small
parser here) and settles the waiting commands in place: no reader task, no timeout context per command. So:

* :meth:`Pipe.call` writes a command (with every command posted before it) and waits for its reply;
* :meth:`Pipe.post` sends a command without waiting for its reply: at once when no reply is due (low load), else
  at the end of the event loop's turn or with the next :meth:`Pipe.call`, whichever comes first (under load, the
  releases of many requests go in one write). A failed reply is handed to the command's ``failed`` callback;
* commands of one process reach Redis in the order they were queued (one connection): a release posted before an
  admit is applied before it;
* at most ``max_pending`` commands wait for their replies; a post beyond that waits until the replies of the
  commands sent so far are read.

A reply that does not come within ``timeout_s`` of its command (and a millisecond more), or a broken connection,
fails every command waiting on the connection; the next command opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis
except ImportError:  # the [redis] extra brings it; plain redis-py works too, with the parser below
    hiredis = None  # type: ignore[assignment]

__all__ = ["Pipe", "PyReader", "bulk", "pack"]

Failed = Callable[[BaseException], None]
Waiter = asyncio.Future[Any] | Failed


class Pipe:
    def __init__(self, pool: Any, timeout_s: float, max_pending: int = 1024, reader: Callable[[], Any] | None = None):
        self._pool = pool
        self._timeout_s = timeout_s
        self._link: _Link | None = None
        self._connecting: asyncio.Lock | None = None
        self._reader = reader or _new_reader
        self.max_pending = max_pending

    @property
    def pending(self) -> int:
        """Commands queued or written whose replies have not been read yet."""
        return len(self._link.waiting) if self._link is not None else 0

    async def call(self, command: bytes) -> Any:
        """Write a command (:func:`pack`) and wait for its reply (an error reply raises its ``ResponseError``).
        Sent again once on a connection error (a connection the server closed, e.g. after a restart), never after a
        timeout."""
        for attempt in (1, 2):
            link = self._link if self._link is not None else await self._connect()
            future: asyncio.Future[Any] = link.loop.create_future()
            link.send(command, future, True)
            try:
                return await future
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def post(self, failed: Failed, command: bytes) -> None:
        """Queue a command (:func:`pack`) without waiting for its reply; ``failed(error)`` if it fails."""
        link = self._link if self._link is not None else await self._connect()
        if len(link.waiting) >= self.max_pending:  # bounded: wait until the replies of what was sent are read
            await self.drain()
            link = self._link if self._link is not None else await self._connect()
        # Idle (the common case at low load: no reply due), it goes at once, so it reaches Redis before anything this
        # process does next (a response to write); busy, it waits for the end of the turn and goes with the rest.
        link.send(command, failed, not link.waiting)

    async def open(self) -> None:
        """Connect now rather than at the first command."""
        await self._connect()

    async def _connect(self) -> _Link:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._link is None:
                conn = self._pool.make_connection()
                conn.protocol = 2  # what the pipe reads, whatever the URL asks of the pool's other connections
                await conn.connect()  # TCP / unix socket / TLS, AUTH, SELECT: redis-py's handshake
                self._link = _Link(self, _take_over(conn), self._reader(), self._timeout_s)
            return self._link

    def _gone(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    async def drain(self) -> None:
        """Send what is queued and wait until the replies of every command sent so far are read (or failed)."""
        link = self._link
        if link is not None and link.waiting:
            link.flush()
            if link.closed or not link.waiting:  # failed as it was written
                return
            idle = link.loop.create_future()
            link.idle.append(idle)
            await idle

    async def close(self) -> None:
        """Wait for the replies of the commands sent so far, then close the connection."""
        await self.drain()
        link, self._link = self._link, None
        if link is not None:
            link.fail(RedisConnectionError("connection closed"))


class _Link(asyncio.Protocol):
    """One open connection: the commands queued and written, in order, each with what waits for its reply."""

    def __init__(self, pipe: Pipe, writer: asyncio.StreamWriter, reader: Any, timeout_s: float) -> None:
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.writer = writer  # kept: a StreamWriter closes its transport when it is collected
        self.transport = transport = writer.transport
        self.reader = reader
        self.timeout_s = timeout_s
        self.waiting: deque[tuple[float, Waiter]] = deque()  # (when its reply is due, waiter)
        self.out: list[bytes] = []  # queued, not written yet
        self.flush_soon = False
        self.timer: asyncio.TimerHandle | None = None
        self.idle: list[asyncio.Future[None]] = []  # settled when no reply is due any more
        self.closed = False
        transport.set_protocol(self)

    def send(self, packed: bytes, waiter: Waiter, now: bool) -> None:
        if self.closed:
            _settle(waiter, RedisConnectionError("connection lost"))
            return
        due = self.loop.time() + self.timeout_s
        self.waiting.append((due, waiter))
        self.out.append(packed)
        if now:
            self.flush()
        elif not self.flush_soon:
            self.flush_soon = True
            self.loop.call_soon(self.flush)
        if self.timer is None:
            self.timer = self.loop.call_at(due, self.check_due)

    def flush(self) -> None:
        self.flush_soon = False
        if not self.out or self.closed:
            return
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        try:
            self.transport.write(data)
        except (OSError, RuntimeError) as error:  # closed under us
            self.fail(RedisConnectionError(f"connection lost: {error}"))

    def check_due(self, late: bool = False) -> None:
        """The oldest command's reply is late: the connection is out of use (its replies would be out of step).
        Checked twice, the second time after the event loop has read its sockets once more: a process that did not
        run for a while (a busy machine) finds its timers due before it reads the replies that came meanwhile."""
        self.timer = None
        if self.closed or not self.waiting:
            return
        due = self.waiting[0][0]
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self.check_due)
        elif not late:
            self.timer = self.loop.call_later(0.001, self.check_due, True)
        else:
            self.fail(RedisTimeoutError("timeout reading from redis"))

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        try:
            reader.feed(data)
            while waiting:
                reply = reader.gets()
                if reply is False:
                    break
                _settle(waiting.popleft()[1], _error_of(reply) if isinstance(reply, ResponseError) else reply)
        except Exception as error:  # a protocol error: nothing read from here on can be trusted
            self.fail(RedisConnectionError(f"unreadable reply: {error}"))
            return
        if not waiting:
            if reader.gets() is not False:  # a reply nobody asked for: out of step
                self.fail(RedisConnectionError("unexpected reply"))
            self.settle_idle()

    def settle_idle(self) -> None:
        idle, self.idle = self.idle, []
        for future in idle:
            if not future.done():
                future.set_result(None)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost fails what waits

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection lost: {exc}" if exc else "connection closed by the server"))

    def fail(self, error: BaseException) -> None:
        """Every command waiting on this connection fails with ``error``; the next command connects again."""
        self.pipe._gone(self)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.out.clear()
        waiting, self.waiting = self.waiting, deque()
        for _, waiter in waiting:
            _settle(waiter, error)
        self.settle_idle()


def _take_over(conn: Any) -> asyncio.StreamWriter:
    """The stream of a connection redis-py opened and set up; from here on the pipe reads and writes its
    transport."""
    writer: asyncio.StreamWriter | None = conn._writer
    reader: asyncio.StreamReader | None = conn._reader
    if writer is None or reader is None or len(reader._buffer):  # type: ignore[attr-defined]
        raise RedisConnectionError("the redis connection is not in a usable state")
    conn._writer = conn._reader = None  # redis-py forgets it (no close, no warning when it is collected)
    return writer


def _error_of(reply: ResponseError) -> ResponseError:
    message = str(reply)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else reply


def _settle(waiter: Waiter, reply: Any) -> None:
    if isinstance(waiter, asyncio.Future):
        if waiter.done():
            return
        if isinstance(reply, BaseException):
            waiter.set_exception(reply)
        else:
            waiter.set_result(reply)
    elif isinstance(reply, BaseException):
        waiter(reply)


def _new_reader() -> Any:
    if hiredis is not None:
        return hiredis.Reader(replyError=ResponseError)
    return PyReader()


class PyReader:
    """RESP2 replies from a byte stream, as hiredis's ``Reader`` gives them: ``feed(bytes)``, then ``gets()`` until
    it returns ``False`` (no complete reply yet). Error replies are returned as :class:`ResponseError`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> Any:
        parsed = self._parse(0)
        if parsed is None:
            return False
        reply, end = parsed
        del self._buffer[:end]
        return reply

    def _parse(self, start: int) -> tuple[Any, int] | None:
        buffer = self._buffer
        eol = buffer.find(b"\r\n", start)
        if eol < 0:
            return None
        kind, line, after = buffer[start : start + 1], bytes(buffer[start + 1 : eol]), eol + 2
        if kind == b"+":
            return line, after
        if kind == b"-":
            return ResponseError(line.decode(errors="replace")), after
        if kind == b":":
            return int(line), after
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if len(buffer) < after + size + 2:
                return None
            return bytes(buffer[after : after + size]), after + size + 2
        if kind == b"*":
            items: list[Any] = []
            for _ in range(max(0, int(line))):
                parsed = self._parse(after)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return (items if int(line) >= 0 else None), after
        raise RedisError(f"unexpected reply type {kind!r}")


def pack(args: tuple[Any, ...], more: int = 0) -> bytes:
    """A command in RESP (an array of bulk strings): ``str`` as UTF-8, ``int`` in decimal, ``bytes`` as they are.
    The few argument types the state sends, without redis-py's general encoder (a third of a command's cost).
    ``more``: that many arguments follow, each added with :func:`bulk` (a packed head reused for many commands)."""
    parts = [b"*%d\r\n" % (len(args) + more)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode() if isinstance(arg, (str, int)) else None
        if data is None:
            raise TypeError(f"a Redis command argument must be str, int or bytes, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def bulk(text: str) -> bytes:
    """One more argument of a command packed with ``more``."""
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)
