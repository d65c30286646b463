"""Property-based reliability tests (hypothesis): framing never changes the answer, garbage never escapes.

* Any split of a valid event stream into reads — 1-byte reads, splits inside CR LF and inside
  multi-byte UTF-8 — gives the same events, at the decoder and end to end over a socket.
* Garbage bodies and headers from the server raise only llmrelay errors, and never hang: each
  example is bounded in time.

Example counts are modest so the suite stays fast; ``LLMRELAY_LONG_TESTS=1`` runs many more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from helpers import make_provider, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_server import Reply, ScriptedServer, chunk

from llmrelay.errors import RelayError
from llmrelay.http.sse import SSEDecoder

LONG = os.environ.get("LLMRELAY_LONG_TESTS") == "1"
EXAMPLE_BOUND = 15.0  # seconds for one end-to-end example: past it, the call hung

CI = bool(os.environ.get("CI"))  # CI runs the same examples every time (a failure there is reproducible)
FAST = settings(max_examples=2000 if LONG else 150, deadline=None, derandomize=CI)
WIRE = settings(
    max_examples=300 if LONG else 30,
    deadline=None,
    derandomize=CI,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# text with multi-byte UTF-8 (2, 3 and 4 bytes) and separators that are not SSE line ends
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('ab ,.{}":é\u00fc\u2028\u2029\u0085日本語✓😀🚀\t')),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    ),
    max_size=12,
)
ENDING = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A valid event stream and the events it holds."""
    parts: list[str] = []
    events: list[tuple[bytes, bytes]] = []

    def end(line: str) -> None:
        ending = draw(ENDING)
        if ending.startswith("\n") and parts and parts[-1].endswith("\r"):
            ending = "\r"  # CR then LF would be one CR LF line end, not two
        parts.append(line + ending)

    if draw(st.booleans()):
        parts.append("\ufeff")
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            end(":" + draw(TEXT))  # a comment
        name = draw(st.sampled_from(["", "message", "ping", "update"]))
        if name:
            end(f"event: {name}")
        lines = draw(st.lists(TEXT, min_size=1, max_size=3))
        for line in lines:
            end("data: " + line)
        end("")  # the empty line that dispatches
        events.append(((name or "message").encode(), "\n".join(lines).encode()))
    return "".join(parts).encode(), events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def decode(reads: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    events = [event for read in reads for event in decoder.feed(read)]
    return events + decoder.flush()


@FAST
@given(stream=event_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_of_a_valid_stream_gives_the_same_events(
    stream: tuple[bytes, list[tuple[bytes, bytes]]], cuts: list[int]
) -> None:
    data, expected = stream
    assert decode([data]) == expected
    assert decode(split(data, cuts)) == expected


@FAST
@given(stream=event_streams())
def test_one_byte_reads_give_the_same_events(stream: tuple[bytes, list[tuple[bytes, bytes]]]) -> None:
    data, expected = stream
    assert decode([data[i : i + 1] for i in range(len(data))]) == expected


@FAST
@given(stream=event_streams(), data=st.data())
def test_splits_inside_crlf_and_inside_utf8_characters(
    stream: tuple[bytes, list[tuple[bytes, bytes]]], data: st.DataObject
) -> None:
    raw, expected = stream
    # the awkward places: between CR and LF, and after a UTF-8 lead or continuation byte
    awkward = [i for i in range(1, len(raw)) if raw[i - 1 : i + 1] == b"\r\n" or raw[i] & 0xC0 == 0x80]
    if awkward:
        cuts = data.draw(st.lists(st.sampled_from(awkward), min_size=1, max_size=6))
        assert decode(split(raw, cuts)) == expected


# ------------------------------------------------------------------ end to end, over a socket


def run_bounded(coroutine: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, EXAMPLE_BOUND)

    return asyncio.run(bounded())


async def outcome(provider: type, **kwargs: Any) -> tuple[list[Any], BaseException | None]:
    items: list[Any] = []
    try:
        async for item in provider.create_async_generator("", [{"role": "user", "content": "Hi"}], **kwargs):
            items.append(item)
    except Exception as error:
        return items, error
    return items, None


@WIRE
@given(
    pieces=st.lists(TEXT.filter(bool), min_size=1, max_size=6),
    ending=st.sampled_from(["\n\n", "\r\n\r\n", "\r\r"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    one_byte=st.booleans(),
)
def test_any_split_on_the_wire_gives_the_same_text(
    server_session: ScriptedServer, pieces: list[str], ending: str, cuts: list[int], one_byte: bool
) -> None:
    server = server_session
    events = [chunk(piece) for piece in pieces] + [chunk(finish_reason="stop")]
    body = b"".join(f"data: {json.dumps(event, ensure_ascii=False)}{ending}".encode() for event in events)
    body += f"data: [DONE]{ending}".encode()
    reads = [body[i : i + 1] for i in range(len(body))] if one_byte else split(body, cuts)
    writes: list[bytes | float] = []
    for read in reads:  # a pause now and then, so the client really sees separate reads
        writes += [read, 0.002] if len(writes) % 20 == 0 else [read]
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=writes))
    items, error = run_bounded(outcome(make_provider(server), stream=True, timeout=5))
    assert error is None, repr(error)
    assert text_of(items) == "".join(pieces)


GARBAGE_BYTES = st.binary(max_size=200)
FRAMED_GARBAGE = st.one_of(
    GARBAGE_BYTES,
    st.builds(lambda body: b"data: " + body + b"\n\n", GARBAGE_BYTES),
    st.builds(lambda body: b'data: {"choices": ' + body + b"}\n\n", GARBAGE_BYTES),
)


@WIRE
@given(
    content_type=st.sampled_from(["text/event-stream", "application/json", "text/plain", "text/html", ""]),
    body=FRAMED_GARBAGE,
    mode=st.sampled_from(["chunked", "length", "close"]),
    end=st.sampled_from(["finish", "abrupt", "reset", "keep_open"]),
    status=st.sampled_from([200, 200, 200, 400, 429, 500]),
    stream=st.booleans(),
    lie=st.sampled_from(
        [[], [], [("Transfer-Encoding", "chunked")], [("Content-Length", "7")], [("Content-Encoding", "gzip")]]
    ),
)
def test_a_garbage_body_raises_only_llmrelay_errors(
    server_session: ScriptedServer,
    content_type: str,
    body: bytes,
    mode: str,
    end: str,
    status: int,
    stream: bool,
    lie: list[tuple[str, str]],
) -> None:
    server = server_session
    # a framing header that does not match the body (the server writes the body raw, after the head)
    headers = [("Content-Type", content_type)] if content_type else []
    headers += lie
    server.script(Reply(status=status, headers=headers, writes=[body], body_mode=mode, end=end, keep_open_timeout=5))  # type: ignore[arg-type]
    _, error = run_bounded(outcome(make_provider(server), stream=stream, timeout=0.3))
    if status >= 400:  # an error status is an error whatever the body says (or invalid HTTP)
        assert isinstance(error, RelayError), repr(error)
        assert error.status in (status, None), repr(error)
    else:
        assert error is None or isinstance(error, RelayError), repr(error)


HEADER_LINE = st.one_of(
    st.binary(max_size=60).filter(lambda line: b"\r\n" not in line),
    st.sampled_from(
        [
            b"Content-Length: -1",
            b"Content-Length: abc",
            b"Content-Length: 99999",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Content-Encoding: gzip",
            b"Content-Encoding: br",
            b"Content-Type: text/event-stream",
            b"Content-Type: application/json; charset=nope",
            b"Location: ftp://elsewhere/",
            b"Location: http://[bad",
            b"Retry-After: nan",
            b"Connection: upgrade",
            b"Upgrade: websocket",
            b": no name",
            b"X-Long: " + b"x" * 9000,
        ]
    ),
)
ERROR_STATUS_LINES = (b"HTTP/1.1 301 Moved", b"HTTP/1.1 503 Busy", b"HTTP/1.1 99999 Big", b"HTTP/2 200")
STATUS_LINE = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 301 Moved",
            b"HTTP/1.1 101 Switching Protocols",
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.1 204 No Content",
            b"HTTP/1.1 503 Busy",
            b"HTTP/1.0 200 OK",
            b"HTTP/2 200",
            b"HTTP/1.1 99999 Big",
        ]
    ),
    st.binary(max_size=40).filter(lambda line: b"\r\n" not in line),
)


@WIRE
@given(
    status_line=STATUS_LINE,
    header_lines=st.lists(HEADER_LINE, max_size=5),
    body=GARBAGE_BYTES,
    stream=st.booleans(),
)
def test_garbage_headers_raise_only_llmrelay_errors(
    server_session: ScriptedServer, status_line: bytes, header_lines: list[bytes], body: bytes, stream: bool
) -> None:
    server = server_session
    raw = b"\r\n".join([status_line, *header_lines]) + b"\r\n\r\n" + body
    server.script(Reply(raw=raw))
    _, error = run_bounded(outcome(make_provider(server), stream=stream, timeout=1))
    if status_line in ERROR_STATUS_LINES:  # whatever the headers, this is no answer
        assert isinstance(error, RelayError), repr(error)
    else:
        assert error is None or isinstance(error, RelayError), repr(error)
