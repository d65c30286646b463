"""A scripted, byte-exact OpenAI-compatible HTTP/1.1 server for tests.

The server runs its own asyncio event loop in a daemon thread, so both plain
(sync) tests and tests that run their own loop (``asyncio.run``) can talk to it.
Tests script what each request gets back and inspect what was received::

    server.script(sse_reply(chunk("Hel"), chunk("lo"), chunk(finish_reason="stop"), "[DONE]"))
    ...  # point the client under test at server.base ("http://127.0.0.1:PORT/v1")
    assert server.requests[0].json()["stream"] is True

Replies are chosen per request: a route registered with :meth:`ScriptedServer.route`
(exact method + path, query ignored) wins; otherwise the next reply queued with
:meth:`ScriptedServer.script` is taken; otherwise the request gets a 500 with the
body ``no scripted reply`` and a line in ``server.errors``.

Every ``bytes`` item of :attr:`Reply.writes` is one socket write (TCP_NODELAY,
drained), and with the default chunked framing also exactly one HTTP chunk, so a
client sees the fragmentation a test chose. A ``float`` item sleeps that long.
The server never invents a ``Content-Type``; the helpers set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import socket
import ssl as ssl_module
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union
from urllib.parse import parse_qs

__all__ = [
    "Handler",
    "Headers",
    "RecordedRequest",
    "Reply",
    "ScriptedServer",
    "chunk",
    "completion",
    "embedding_vector",
    "embeddings",
    "embeddings_handler",
    "fragment",
    "json_reply",
    "sse",
    "sse_event",
    "sse_reply",
    "text_reply",
    "tool_call",
    "tool_call_delta",
    "usage",
]

BodyMode = Literal["chunked", "length", "close"]
End = Literal["finish", "keep_open", "abrupt", "reset"]
_BODY_MODES = ("chunked", "length", "close")
_ENDS = ("finish", "keep_open", "abrupt", "reset")
CREATED = 1_700_000_000  # fixed "created" timestamp used by chunk() / completion()


# --------------------------------------------------------------------------- records


class Headers(Mapping[str, str]):
    """Case-insensitive view over the raw ``(name, value)`` pairs, in received order.

    ``headers["x"]`` joins repeated fields with ``", "``; use :meth:`get_all` or
    :meth:`count` to check how often a field appeared. ``raw`` keeps the pairs as sent.
    """

    def __init__(self, raw: Iterable[tuple[str, str]] = ()) -> None:
        self.raw: list[tuple[str, str]] = list(raw)

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [value for field_name, value in self.raw if field_name.lower() == key]

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name.lower() for name, _ in self.raw))

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self.raw})

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"


@dataclass(eq=False)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str  # request target as sent, including any query string
    headers: Headers
    body: bytes  # de-chunked if the request used Transfer-Encoding: chunked
    connection: int  # 1-based number of the TCP connection it arrived on
    version: str = "HTTP/1.1"
    client_disconnected: bool = False  # set (later, from the server thread) when the peer went away

    @property
    def raw_headers(self) -> list[tuple[str, str]]:
        return self.headers.raw

    @property
    def route_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.path.partition("?")[2], keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8")


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """A scripted response.

    body_mode:
      ``"chunked"`` (default) - ``Transfer-Encoding: chunked``, one chunk per bytes write
      (empty writes are skipped, they would end the body);
      ``"length"`` - ``Content-Length`` of all writes joined, writes still separate;
      ``"close"`` - no framing header, ``Connection: close``, body ends when the socket closes.
      A framing header the test put in ``headers`` itself is not added again (lets a test lie).
    end:
      ``"finish"`` - complete the body, keep the connection for the next request;
      ``"keep_open"`` - send no terminating chunk and hold the socket (reading and
      discarding input) until the client closes it - then the request's
      ``client_disconnected`` is set - or ``keep_open_timeout`` passes; never reused;
      ``"abrupt"`` - close (FIN) right after the writes, no terminating chunk;
      ``"reset"`` - abortive close (SO_LINGER 0, RST) right after the writes.
    raw:
      if set, written verbatim instead of everything else, then the connection closes.
    head_delay:
      seconds to wait before anything is sent (e.g. for read-timeout tests).
    """

    status: int = 200
    reason: str | None = None
    headers: list[tuple[str, str]] | dict[str, str] = field(default_factory=list)
    writes: list[bytes | float] = field(default_factory=list)
    body_mode: BodyMode = "chunked"
    end: End = "finish"
    raw: bytes | None = None
    keep_open_timeout: float = 30.0
    head_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.body_mode not in _BODY_MODES:
            raise ValueError(f"body_mode must be one of {_BODY_MODES}, not {self.body_mode!r}")
        if self.end not in _ENDS:
            raise ValueError(f"end must be one of {_ENDS}, not {self.end!r}")
        for item in self.writes:
            if isinstance(item, bool) or not isinstance(item, (bytes, bytearray, int, float)):
                raise TypeError(f"writes items must be bytes or a delay in seconds, not {item!r}")

    @property
    def body(self) -> bytes:
        """All bytes writes joined (what a client should read as the body)."""
        return b"".join(bytes(w) for w in self.writes if isinstance(w, (bytes, bytearray)))

    def header_list(self) -> list[tuple[str, str]]:
        if isinstance(self.headers, Mapping):
            return list(self.headers.items())
        return list(self.headers)


Handler = Union[Reply, Callable[[RecordedRequest], Reply]]


def _with_content_type(
    headers: list[tuple[str, str]] | dict[str, str] | None, content_type: str
) -> list[tuple[str, str]]:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    if not any(name.lower() == "content-type" for name, _ in items):
        items.insert(0, ("Content-Type", content_type))
    return items


def _interleave(pieces: Iterable[bytes], delay: float) -> list[bytes | float]:
    out: list[bytes | float] = []
    for i, piece in enumerate(pieces):
        if i and delay:
            out.append(delay)
        out.append(piece)
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(item: Mapping[str, Any] | list[Any] | str | bytes, end: str = "\n\n") -> bytes:
    """One SSE event: JSON (compact) or str after ``data: ``; bytes are returned verbatim."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    payload = item if isinstance(item, str) else _dumps(item)
    return f"data: {payload}{end}".encode()


def sse(*items: Mapping[str, Any] | list[Any] | str | bytes, end: str = "\n\n") -> bytes:
    """SSE body: ``sse(chunk("hi"), "[DONE]")`` -> ``b'data: {...}\\n\\ndata: [DONE]\\n\\n'``."""
    return b"".join(sse_event(item, end) for item in items)


def fragment(data: bytes, size: int = 1, delay: float = 0.0) -> list[bytes | float]:
    """Split *data* into writes of *size* bytes, optionally sleeping *delay* between them."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return _interleave((data[i : i + size] for i in range(0, len(data), size)), delay)


def json_reply(obj: Any, status: int = 200, headers: list[tuple[str, str]] | dict[str, str] | None = None) -> Reply:
    """``application/json`` body with ``Content-Length``."""
    return Reply(
        status=status,
        headers=_with_content_type(headers, "application/json"),
        writes=[_dumps(obj).encode()],
        body_mode="length",
    )


def text_reply(
    text: str,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
) -> Reply:
    """Plain text body with ``Content-Length``."""
    return Reply(
        status=status,
        headers=_with_content_type(headers, content_type),
        writes=[text.encode()],
        body_mode="length",
    )


def sse_reply(
    *items: Mapping[str, Any] | list[Any] | str | bytes,
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
    per_event_writes: bool = True,
    delay: float = 0.0,
    end: End = "finish",
    status: int = 200,
) -> Reply:
    """``text/event-stream`` reply, chunked, one write (chunk) per event by default."""
    events = [sse_event(item) for item in items]
    pieces = events if per_event_writes else [b"".join(events)]
    return Reply(
        status=status,
        headers=_with_content_type(headers, "text/event-stream"),
        writes=_interleave(pieces, delay),
        end=end,
    )


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    reasoning_content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "test-model",
    id: str = "chatcmpl-1",
    index: int = 0,
    choices: bool | list[Any] | None = True,
    **extra: Any,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``. Delta keys appear only when not None.

    ``choices=False`` omits the key, ``None`` sends ``null``, a list is sent as given;
    *extra* keys are merged at the top level.
    """
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
    }
    if choices is True:
        fields = {
            "role": role,
            "content": content,
            "reasoning_content": reasoning_content,
            "tool_calls": tool_calls,
        }
        delta = {k: v for k, v in fields.items() if v is not None}
        obj["choices"] = [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    elif choices is not False:
        obj["choices"] = choices
    if usage is not None:
        obj["usage"] = usage
    obj.update(extra)
    return obj


def completion(
    content: str | None,
    *,
    model: str = "test-model",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    reasoning_content: str | None = None,
    id: str = "chatcmpl-1",
    **extra: Any,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` with one assistant choice."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        obj["usage"] = usage
    obj.update(extra)
    return obj


def embedding_vector(text: str | list[int], dimensions: int = 3) -> list[float]:
    """The scripted server's vector for one input: ``[len, len + 0.5, len + 0.25, …]`` (exact in float32)."""
    size = float(len(text))
    return [size + (0.5 if k % 2 else 0.25) * min(k, 1) for k in range(dimensions)]


def embeddings(
    vectors: list[list[float] | str], model: str = "test-embed", prompt_tokens: int = 2, **extra: Any
) -> dict[str, Any]:
    """An ``/embeddings`` answer in the OpenAI shape (a ``str`` vector is sent as given: base64)."""
    obj: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    obj.update(extra)
    return obj


def embeddings_handler(dimensions: int = 3, model: str | None = None) -> Callable[[RecordedRequest], Reply]:
    """A handler answering ``POST /embeddings`` as a real server does: one :func:`embedding_vector` per input
    (a string, strings, token ids or token-id lists), floats whatever ``encoding_format`` asked."""

    def handle(req: RecordedRequest) -> Reply:
        body = req.json()
        value = body["input"]
        if isinstance(value, str) or (value and all(isinstance(item, int) for item in value)):
            items = [value]
        else:
            items = list(value)
        vectors: list[list[float] | str] = [embedding_vector(item, dimensions) for item in items]
        tokens = sum(len(item) for item in items)
        return json_reply(embeddings(vectors, model or body.get("model") or "test-embed", tokens))

    return handle


def usage(prompt_tokens: int = 1, completion_tokens: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        **extra,
    }


def tool_call(name: str, arguments: str | Mapping[str, Any], id: str = "call_1") -> dict[str, Any]:
    """A complete tool call as in a non-streamed message."""
    args = arguments if isinstance(arguments, str) else _dumps(arguments)
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


def tool_call_delta(
    index: int = 0,
    *,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    """A streamed tool-call fragment; only the given parts appear (``type`` comes with ``id``)."""
    delta: dict[str, Any] = {"index": index}
    if id is not None:
        delta["id"] = id
        delta["type"] = "function"
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        delta["function"] = function
    return delta


# --------------------------------------------------------------------------- server


class _BadRequestError(Exception):
    pass


def _wants_close(headers: Iterable[tuple[str, str]]) -> bool:
    return any(name.lower() == "connection" and "close" in value.lower() for name, value in headers)


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.is_closing():
        raise ConnectionResetError("connection already closed")
    writer.write(data)
    await writer.drain()


async def _read_until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


class ScriptedServer:
    """Scripted HTTP/1.1 server on 127.0.0.1 (ephemeral port) in a background thread.

    Attributes read by tests: ``requests``, ``errors`` (handler exceptions, unscripted
    requests, bad requests, event-loop errors), ``connections`` (TCP connections accepted),
    ``served`` (requests received, also those ``max_records`` dropped from ``requests``).

    ``max_records`` keeps only the last N requests in ``requests`` (None: all), so a soak
    test can measure the client's memory without the server's records growing.
    """

    def __init__(
        self, host: str = "127.0.0.1", ssl: ssl_module.SSLContext | None = None, max_records: int | None = None
    ) -> None:
        self.host = host
        self.ssl = ssl  # a server-side context: serve HTTPS
        self.max_records = max_records
        self.served = 0
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self.connections = 0
        self._queue: deque[Handler] = deque()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # ---- lifecycle (call from test code, not from a handler)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def start(self) -> ScriptedServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, name="scripted-server", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._check_not_in_loop()
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._loop = self._thread = self._server = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Drop open connections, queued replies, routes, records, errors and the count."""
        self._check_not_in_loop()
        if self._loop is not None:
            self._call(self._close_connections())
        with self._lock:
            self._queue.clear()
            self._routes.clear()
        self.requests.clear()
        self.errors.clear()
        self.connections = 0
        self.served = 0

    # ---- scripting

    def script(self, *replies: Handler) -> None:
        """Queue replies (or callables) for the next requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve every ``method path`` request (query ignored) with *handler*; beats the queue."""
        with self._lock:
            self._routes[(method.upper(), path)] = handler

    @property
    def pending(self) -> int:
        """Queued replies not yet taken."""
        with self._lock:
            return len(self._queue)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 2.0) -> bool:
        """Poll *predicate* until true (returns True) or *timeout* passes (returns False)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    async def wait_for_async(self, predicate: Callable[[], object], timeout: float = 2.0) -> bool:
        """:meth:`wait_for` for tests running their own event loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # ---- loop plumbing

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _check_not_in_loop(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("call this from test code, not from a reply handler")

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(f"event loop error: {context.get('message')} {context.get('exception')!r}")

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0, limit=1 << 20, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_connections(self) -> None:
        tasks = list(self._conns)
        for writer in self._conns.values():
            writer.transport.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._close_connections()
        if self._server is not None:
            await self._server.wait_closed()

    # ---- per connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections += 1
        number = self.connections
        self._conns[task] = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._serve_one(reader, writer, number):
                pass
        except Exception:
            self.errors.append("server error:\n" + traceback.format_exc())
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        """Serve one request; True if the connection may carry another."""
        try:
            req = await self._read_request(reader, writer, number)
        except (OSError, asyncio.IncompleteReadError):
            return False
        except (_BadRequestError, ValueError) as exc:
            self.errors.append(f"bad request on connection {number}: {exc}")
            with contextlib.suppress(OSError):
                bad = text_reply(f"bad request: {exc}", 400, headers=[("Connection", "close")])
                await self._send(bad, None, reader, writer)
            return False
        if req is None:
            return False
        self.requests.append(req)
        self.served += 1
        if self.max_records is not None and len(self.requests) > self.max_records:
            del self.requests[: len(self.requests) - self.max_records]
        reply = self._choose(req)
        try:
            keep_alive = await self._send(reply, req, reader, writer)
        except OSError:
            req.client_disconnected = True
            return False
        if req.version == "HTTP/1.0" and "keep-alive" not in req.headers.get("connection", ""):
            return False
        return keep_alive and not _wants_close(req.raw_headers)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> RecordedRequest | None:
        line = b""
        while not line.strip():  # tolerate stray blank lines between requests
            line = await reader.readline()
            if not line:
                return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequestError(f"bad request line {line!r}")
        method, target, version = parts
        raw: list[tuple[str, str]] = []
        while True:
            header_line = await reader.readline()
            if not header_line:
                raise asyncio.IncompleteReadError(header_line, None)
            if header_line in (b"\r\n", b"\n"):
                break
            name, sep, value = header_line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequestError(f"bad header line {header_line!r}")
            raw.append((name, value.strip()))
        headers = Headers(raw)
        if "100-continue" in headers.get("expect", "").lower():
            await _write(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(reader, headers)
        return RecordedRequest(method, target, headers, body, number, version)

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = await reader.readline()
                if not size_line:
                    raise asyncio.IncompleteReadError(size_line, None)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                parts.append(await reader.readexactly(size))
                if (await reader.readexactly(2)) != b"\r\n":
                    raise _BadRequestError("chunk not followed by CRLF")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields are ignored
            return b"".join(parts)
        length = headers.get("content-length")
        if length is None:
            return b""
        size = int(length)
        if size < 0:
            raise _BadRequestError(f"negative Content-Length {length!r}")
        return await reader.readexactly(size)

    def _choose(self, req: RecordedRequest) -> Reply:
        with self._lock:
            handler = self._routes.get((req.method.upper(), req.route_path))
            if handler is None and self._queue:
                handler = self._queue.popleft()
        if handler is None:
            self.errors.append(f"no scripted reply for {req.method} {req.path}")
            return text_reply("no scripted reply", status=500)
        if isinstance(handler, Reply):
            return handler
        try:
            reply = handler(req)
            if not isinstance(reply, Reply):
                raise TypeError(f"handler returned {reply!r}, not a Reply")
            return reply
        except Exception as exc:
            self.errors.append(f"handler for {req.method} {req.path} raised:\n{traceback.format_exc()}")
            return text_reply(f"handler error: {exc!r}", status=500)

    async def _send(
        self,
        reply: Reply,
        req: RecordedRequest | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Write *reply*; True if the connection may serve another request."""
        if reply.head_delay:
            await asyncio.sleep(reply.head_delay)
        if reply.raw is not None:
            await _write(writer, reply.raw)
            return False
        headers = reply.header_list()
        names = {name.lower() for name, _ in headers}
        chunked = reply.body_mode == "chunked"
        if chunked and "transfer-encoding" not in names:
            headers.append(("Transfer-Encoding", "chunked"))
        elif reply.body_mode == "length" and "content-length" not in names:
            headers.append(("Content-Length", str(len(reply.body))))
        elif reply.body_mode == "close" and "connection" not in names:
            headers.append(("Connection", "close"))
        reason = reply.reason
        if reason is None:
            try:
                reason = http.HTTPStatus(reply.status).phrase
            except ValueError:
                reason = "Unknown"
        head = f"HTTP/1.1 {reply.status} {reason}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        await _write(writer, head.encode("latin-1"))

        for item in reply.writes:
            if not isinstance(item, (bytes, bytearray)):
                await asyncio.sleep(item)
            elif chunked:
                if item:
                    await _write(writer, b"%x\r\n%s\r\n" % (len(item), item))
            else:
                await _write(writer, bytes(item))

        if reply.end == "finish":
            if chunked:
                await _write(writer, b"0\r\n\r\n")
            return reply.body_mode != "close" and not _wants_close(headers)
        if reply.end == "keep_open":
            try:
                await asyncio.wait_for(_read_until_eof(reader), reply.keep_open_timeout)
            except asyncio.TimeoutError:
                return False
            if req is not None:
                req.client_disconnected = True
        elif reply.end == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return False  # keep_open, abrupt and reset all end the connection
