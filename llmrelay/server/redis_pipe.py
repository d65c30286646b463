"""One Redis connection for the per-request limit commands, pipelined (SPEC 8.8, issue 17).

redis-py's client takes a pooled connection per command, checks it, sends, waits for the reply and gives the
connection back: correct, but most of a round trip's cost. The limit checks of a request need only one answer
(admit); giving a slot back needs none. :class:`Pipe` keeps one connection made by redis-py's pool (so the URL's
host, unix socket, TLS, password and database work as everywhere else), writes each command as it comes, and one
task reads the replies in the order the commands were written. So:

* :meth:`Pipe.call` writes a command and waits for its reply;
* :meth:`Pipe.post` writes a command and returns at once; a failed reply is handed to the command's ``failed``
  callback (the state counts it and accounts locally what was lost);
* commands of one process reach Redis in the order they were written (one connection): a release posted before
  an admit is applied before it;
* at most ``max_pending`` commands wait for their replies; a post beyond that waits for the reply of the oldest.

A reply that does not come within the connection's ``socket_timeout``, or a broken connection, fails every
command waiting on it; the next command opens a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

__all__ = ["Pipe"]

Failed = Callable[[BaseException], None]

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class Pipe:
    def __init__(self, pool: Any, max_pending: int = 1024) -> None:
        self._pool = pool
        self._conn: Any = None
        self._connecting: asyncio.Lock | None = None
        self._waiting: deque[asyncio.Future[Any] | Failed] = deque()
        self._reader: asyncio.Task[None] | None = None
        self.max_pending = max_pending

    @property
    def pending(self) -> int:
        """Commands written whose replies have not been read yet."""
        return len(self._waiting)

    async def call(self, *args: Any) -> Any:
        """Write a command and wait for its reply (an error reply raises its ``ResponseError``). Sent again once
        on a connection error (a connection the server closed, e.g. after a restart), never after a timeout."""
        for attempt in (1, 2):
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            await self._write(args, future)
            try:
                return await future
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def post(self, failed: Failed, *args: Any) -> None:
        """Write a command without waiting for its reply; ``failed(error)`` if it fails."""
        while len(self._waiting) >= self.max_pending and self._reader is not None:
            await asyncio.shield(self._reader)  # bounded: wait until the replies written so far are read
        await self._write(args, failed)

    async def _write(self, args: tuple[Any, ...], waiter: asyncio.Future[Any] | Failed) -> None:
        conn = self._conn if self._conn is not None else await self._connect()
        packed = pack(args)
        self._waiting.append(waiter)
        try:
            conn._writer.write(packed)  # at once, in the order of the calls; read_response reads the replies
        except (OSError, AttributeError) as error:  # closed under us (AttributeError: no writer any more)
            self._broken(conn, RedisConnectionError(f"connection lost: {error}"))
            return
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(conn))

    async def open(self) -> None:
        """Connect now rather than at the first command."""
        await self._connect()

    async def _connect(self) -> Any:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None:
                conn = self._pool.make_connection()
                await conn.connect()
                self._conn = conn
            return self._conn

    async def _read(self, conn: Any) -> None:
        waiting = self._waiting
        while waiting and self._conn is conn:
            try:
                reply, error = await conn.read_response(disconnect_on_error=False), None
            except ResponseError as refused:  # an error reply: the connection is still in step
                reply, error = None, refused
            except _ERRORS as lost:
                self._broken(conn, lost)
                return
            except asyncio.CancelledError:
                self._broken(conn, RedisConnectionError("connection closed"))
                raise
            _settle(waiting.popleft(), reply, error)

    def _broken(self, conn: Any, error: BaseException) -> None:
        """Every command waiting on ``conn`` fails with ``error``; the next command connects again."""
        if self._conn is conn:
            self._conn = None
            waiting, self._waiting = self._waiting, deque()
            for waiter in waiting:
                _settle(waiter, None, error)
        with contextlib.suppress(Exception):
            conn._close()  # at once (disconnect() would await the reader); the reader task ends on its own

    async def close(self) -> None:
        """Wait for the replies of the commands written so far, then close the connection."""
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()


def pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP (an array of bulk strings): ``str`` as UTF-8, ``int`` in decimal, ``bytes`` as they are.
    The few argument types the state sends, without redis-py's general encoder (a third of a command's cost)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode() if isinstance(arg, (str, int)) else None
        if data is None:
            raise TypeError(f"a Redis command argument must be str, int or bytes, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _settle(waiter: asyncio.Future[Any] | Failed, reply: Any, error: BaseException | None) -> None:
    if isinstance(waiter, asyncio.Future):
        if waiter.done():
            return
        if error is None:
            waiter.set_result(reply)
        else:
            waiter.set_exception(error)
    elif error is not None:
        waiter(error)
