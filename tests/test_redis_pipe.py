"""The pipelined Redis connection of the limit checks (llmrelay.server.redis_pipe) against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, redis_command

pytest.importorskip("redis")

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmrelay.server.redis_pipe import Pipe, PyReader, bulk, pack

READERS: dict[str, Callable[[], Any] | None] = {"hiredis": None, "python": PyReader}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def new_pipe(url: str, reader: Callable[[], Any] | None = None, timeout_s: float = 2.0) -> Pipe:
    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return Pipe(pool, timeout_s, reader=reader)


def c(*args: Any) -> bytes:
    return pack(args)


@pytest.mark.parametrize("reader", READERS)
def test_replies_of_every_kind_come_back_to_their_commands(redis: RedisServer, reader: str) -> None:
    big = "x" * 300_000  # spread over several reads

    async def main() -> None:
        pipe = new_pipe(redis.url, READERS[reader])
        try:
            calls = [
                c("SET", "k", big),
                c("GET", "k"),
                c("GET", "missing"),
                c("INCRBY", "n", 41),
                c("EVAL", "return {1, {'a', {}}, 'b', redis.status_reply('fine')}", 0),
                c("EVAL", "return {1, redis.error_reply('INNER oops')}", 0),
                c("LRANGE", "nothing", 0, -1),
                c("PING"),
            ]
            replies = await asyncio.gather(*(pipe.call(command) for command in calls))
            assert replies[:4] == [b"OK", big.encode(), None, 41]
            assert replies[4] == [1, [b"a", []], b"b", b"fine"]
            assert replies[5][0] == 1 and isinstance(replies[5][1], ResponseError)
            assert "INNER oops" in str(replies[5][1])
            assert replies[6:] == [[], b"PONG"]
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await pipe.call(c("LPUSH", "k", "v"))
            with pytest.raises(NoScriptError):
                await pipe.call(c("EVALSHA", "0" * 40, 0))
            assert await pipe.call(c("GET", "n")) == b"41"  # still in step after the errors
            assert pipe.pending == 0
        finally:
            await pipe.close()

    run(main())


def test_the_python_reader_reads_what_hiredis_reads_in_any_split(redis: RedisServer) -> None:
    """The raw replies of a real Redis, fed in pieces of every size: the same values as hiredis, in order."""
    hiredis = pytest.importorskip("hiredis")
    commands = [
        c("SET", "k", "v\r\nw"),
        c("GET", "k"),
        c("GET", "missing"),
        c("INCR", "n"),
        c("EVAL", "return {1, {'a', {}}, false, redis.error_reply('E1 bad')}", 0),
        c("NOSUCHCOMMAND"),
        c("PING"),
    ]
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"".join(commands))
        raw = b""
        while raw.count(b"PONG") == 0:
            raw += sock.recv(65536)

    def read_all(reader: Any, size: int) -> list[Any]:
        replies = []
        for start in range(0, len(raw), size):
            reader.feed(raw[start : start + size])
            while (reply := reader.gets()) is not False:
                replies.append(reply)
        return replies

    def comparable(reply: Any) -> Any:
        if isinstance(reply, list):
            return [comparable(item) for item in reply]
        return ("error", str(reply)) if isinstance(reply, Exception) else reply

    expected = comparable(read_all(hiredis.Reader(replyError=ResponseError), len(raw)))
    assert len(expected) == len(commands)
    for size in (1, 2, 3, 7, len(raw)):
        assert comparable(read_all(PyReader(), size)) == expected


def test_a_post_goes_at_once_when_idle_else_with_the_next_call_or_at_the_end_of_the_turn(redis: RedisServer) -> None:
    """A posted command goes at once when no reply is due; while replies are due, posts wait for the end of the
    event loop's turn or the next call, whichever comes first, and go together in one write, in order: a release
    posted before an admit reaches Redis before it."""

    async def main() -> None:
        pipe = new_pipe(redis.url)
        failures: list[BaseException] = []
        try:
            await pipe.open()
            link = pipe._link
            assert link is not None
            for _ in range(3):
                await pipe.post(failures.append, c("INCR", "n"))
            assert pipe.pending == 3 and len(link.out) == 2  # the first went at once, the other two wait
            assert await pipe.call(c("GET", "n")) == b"3"  # the call wrote them first, in order
            await pipe.post(failures.append, c("INCR", "n"))
            assert not link.out  # idle: at once
            await pipe.post(failures.append, c("INCR", "n"))
            assert len(link.out) == 1
            await asyncio.sleep(0)  # the end of the turn
            assert not link.out
            await pipe.drain()
            assert redis_command(redis.port, "GET", "n") == b"$1\r\n5\r\n"
            await pipe.post(failures.append, c("LPUSH", "n", "x"))  # refused (WRONGTYPE): handed to the callback
            await pipe.drain()
            assert len(failures) == 1 and "WRONGTYPE" in str(failures[0]) and pipe.pending == 0
        finally:
            await pipe.close()

    run(main())


def test_a_late_reply_fails_every_command_waiting_and_the_next_command_connects_again() -> None:
    """Redis stopped (SIGSTOP): the oldest command's reply is late after the timeout, so every command waiting on
    the connection fails with a timeout (the replies would be out of step); once Redis answers, a new connection."""
    with RedisServer() as own:

        async def main() -> None:
            pipe = new_pipe(own.url, timeout_s=0.2)
            failures: list[BaseException] = []
            try:
                assert await pipe.call(c("PING")) == b"PONG"
                own.pause()
                await pipe.post(failures.append, c("INCR", "n"))
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await pipe.call(c("INCR", "n"))
                assert time.monotonic() - started < 5
                assert len(failures) == 1 and isinstance(failures[0], RedisTimeoutError)
                assert pipe.pending == 0
                own.resume()
                assert await pipe.call(c("PING")) == b"PONG"
            finally:
                own.resume()
                await pipe.close()

        run(main())


def test_a_connection_closed_by_the_server_is_replaced() -> None:
    """The server closes the connection (CLIENT KILL, a restart): what waited fails with a connection error, the
    next call opens a new connection; a call whose connection is lost as it is sent goes again once."""
    with RedisServer() as own:

        async def main() -> None:
            pipe = new_pipe(own.url)
            try:
                client = await pipe.call(c("CLIENT", "ID"))
                failures: list[BaseException] = []
                assert redis_command(own.port, "CLIENT", "KILL", "ID", str(client)) == b":1\r\n"  # closed, unseen yet
                await pipe.post(failures.append, c("INCR", "n"))
                await pipe.drain()
                assert len(failures) == 1 and isinstance(failures[0], RedisConnectionError)
                assert redis_command(own.port, "GET", "n") == b"$-1\r\n"
                assert await pipe.call(c("INCR", "n")) == 1  # on a new connection
                own.kill()
                own.start()
                assert await pipe.call(c("INCR", "n")) == 1  # the old connection was closed: sent again once
                own.kill()
                with pytest.raises(RedisConnectionError):
                    await pipe.call(c("PING"))
                assert pipe.pending == 0
            finally:
                await pipe.close()

        run(main())


def test_the_url_chooses_the_socket_and_the_database(tmp_path: Path) -> None:
    """redis-py opens the connection (unix socket, database, ...), then the pipe reads and writes it."""
    path = tmp_path / "redis.sock"
    with RedisServer(args=("--unixsocket", str(path), "--unixsocketperm", "700")) as own:

        async def main() -> None:
            pipe = new_pipe(f"unix://{path}?db=3&protocol=3")  # the pipe's own connection speaks RESP2 all the same
            try:
                assert await pipe.call(c("SET", "where", "db3")) == b"OK"
                info = (await pipe.call(c("CLIENT", "INFO"))).decode()
                assert f"addr={path}" in info and " db=3 " in info
            finally:
                await pipe.close()
            assert redis_command(own.port, "GET", "where") == b"$-1\r\n"  # not in db 0
            check = aioredis.Redis(port=own.port, db=3)
            assert await check.get("where") == b"db3"
            await check.aclose()

        run(main())


def test_pack_and_bulk_make_one_command() -> None:
    head = pack(("EVALSHA", "abc", 1, b"k\r\n"), more=1)
    assert head + bulk("é") == b"*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$3\r\nk\r\n\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError, match="float"):
        pack(("SET", "k", 1.5))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reply_that_came_while_the_process_did_not_run_is_not_late(redis: RedisServer, loop: str) -> None:
    """A busy process: it does not come back to its event loop for longer than the timeout while the reply arrives
    (here: a callback reading another connection blocks). Its timer is then due before it reads the socket again
    (uvloop runs timers first): the reply is read, not taken as late."""

    async def main() -> None:
        pipe, other = new_pipe(redis.url, timeout_s=0.05), new_pipe(redis.url)
        try:
            link = (await pipe._connect(), await other._connect())[0]
            call: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def busy(_: BaseException) -> None:  # runs while the other connection's reply is read
                link.send(c("PING"), call, True)
                time.sleep(0.2)

            await redis_command_async(redis.port, "SET", "s", "v")
            await other.post(busy, c("LPUSH", "s", "x"))  # WRONGTYPE: its callback runs
            assert await call == b"PONG"
            assert await pipe.call(c("PING")) == b"PONG"  # the same connection, in step
        finally:
            await pipe.close()
            await other.close()

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        run(main())


async def redis_command_async(port: int, *words: str) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, redis_command, port, *words)
