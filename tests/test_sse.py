"""SSE framing: the decoder on its own, and over real sockets through OpenaiTemplate."""

from __future__ import annotations

import json
import time

import pytest
from helpers import collect, collect_error, kinds, make_provider, text_of
from scripted_server import Reply, chunk, fragment, sse, sse_reply

from llmrelay.errors import ResponseError
from llmrelay.http import sse as sse_module
from llmrelay.http.sse import MAX_EVENT_SIZE, SSEDecoder
from llmrelay.responses import FinishReason, ProviderInfo

# ------------------------------------------------------------------ decoder unit tests

SAMPLE = (
    b"\xef\xbb\xbf: comment\r\n"
    b'data: {"a": "caf\xc3\xa9 \xe2\x80\xa8 \xc2\x85"}\r\n\r\n'
    b"event: ping\ndata:no-space\n\n"
    b"data: line1\rdata: line2\r\r"
    b"id: 7\nretry: 1500\ndata\n\n"
    b"data: last\r\n\r\n"
)
SAMPLE_EVENTS = [
    (b"message", '{"a": "café \u2028 \u0085"}'.encode()),
    (b"ping", b"no-space"),
    (b"message", b"line1\nline2"),
    (b"message", b""),
    (b"message", b"last"),
]


def decode(*reads: bytes) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    events = []
    for read in reads:
        events.extend(decoder.feed(read))
    events.extend(decoder.flush())
    return events


def test_decoder_whole_sample() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(SAMPLE) == SAMPLE_EVENTS
    assert decoder.flush() == []
    assert decoder.last_event_id == b"7"
    assert decoder.retry == 1500


def test_decoder_every_split_point_gives_the_same_events() -> None:
    for cut in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:cut], SAMPLE[cut:]) == SAMPLE_EVENTS, cut


def test_decoder_every_pair_of_split_points() -> None:
    size = len(SAMPLE)
    for first in range(0, size + 1, 3):
        for second in range(first, size + 1, 2):
            assert decode(SAMPLE[:first], SAMPLE[first:second], SAMPLE[second:]) == SAMPLE_EVENTS, (first, second)


def test_decoder_one_byte_at_a_time() -> None:
    assert decode(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE)))) == SAMPLE_EVENTS


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_decoder_line_endings(ending: bytes) -> None:
    body = b"data: a" + ending + b"data: b" + ending + ending + b": c" + ending + b"data: d" + ending + ending
    assert decode(body) == [(b"message", b"a\nb"), (b"message", b"d")]
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == [(b"message", b"a\nb"), (b"message", b"d")]


def test_decoder_crlf_split_across_reads_is_one_line_end() -> None:
    # A CR at the end of one read and the LF at the start of the next: one line end, not two
    # (two would dispatch an event in the middle of a multi-line data field).
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [(b"message", b"a\nb")]
    assert decode(b"data: a\r\n\r", b"\ndata: b\r\n\r\n") == [(b"message", b"a"), (b"message", b"b")]


def test_decoder_bom_only_at_start_and_split() -> None:
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [(b"message", b"x")]
    assert decode(b"\xef\xbb", b"\xbfdata: x\n\n") == [(b"message", b"x")]
    # A second BOM is not a BOM: it is part of the field name, so the line is an unknown field.
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [(b"message", b"y")]
    # Bytes that merely start like a BOM are kept.
    assert decode(b"\xef", b"data: x\n\n") == []  # unknown field name b"\xefdata"
    assert decode(b"data: \xef", b"\xbb\xbf\n\n") == [(b"message", b"\xef\xbb\xbf")]


def test_decoder_fields() -> None:
    assert decode(b"data:x\n\n") == [(b"message", b"x")]
    assert decode(b"data:  two spaces\n\n") == [(b"message", b" two spaces")]
    assert decode(b"data: a:b: c\n\n") == [(b"message", b"a:b: c")]
    assert decode(b"event: error\ndata: {}\n\n") == [(b"error", b"{}")]
    assert decode(b"event: x\n\ndata: y\n\n") == [(b"message", b"y")]  # event type reset by a blank line
    assert decode(b"unknown: z\nid\n:only a comment\n\n") == []
    assert decode(b"data\ndata\n\n") == [(b"message", b"\n")]


def test_decoder_flush_dispatches_unterminated_event() -> None:
    assert decode(b"data: [DONE]") == [(b"message", b"[DONE]")]
    assert decode(b"data: [DONE]\n") == [(b"message", b"[DONE]")]
    assert decode(b"") == []


def test_decoder_unicode_line_separators_are_not_line_ends() -> None:
    payload = json.dumps({"t": "a\u2028b\u2029c\u0085d\x0be\x0cf"}, ensure_ascii=False).encode()
    assert decode(b"data: " + payload + b"\n\n") == [(b"message", payload)]


def feed_big_event(size: int, read: int = 4096) -> float:
    """CPU seconds to decode one ``size``-byte event arriving in ``read``-byte pieces (best of three)."""
    body = b"data: " + b"A" * size + b"\n\n"
    pieces = [body[i : i + read] for i in range(0, len(body), read)]
    best = float("inf")
    for _ in range(3):
        decoder = SSEDecoder()
        started = time.process_time()
        events = [event for piece in pieces for event in decoder.feed(piece)]
        best = min(best, time.process_time() - started)
        assert len(events) == 1 and len(events[0][1]) == size
    return best


def test_decoder_time_is_linear_in_the_size_of_one_event() -> None:
    small, large = feed_big_event(1 << 20), feed_big_event(8 << 20)
    # CPU-time ratio, best of three each: linear measured 10-12 (8 plus cache effects); the old decoder,
    # which appended every read to the pending line, measured 67
    assert large / max(small, 1e-4) < 20, (small, large)


def test_decoder_caps_one_event() -> None:
    assert MAX_EVENT_SIZE == 64 * 1024 * 1024
    limit = 1 << 20
    decoder = SSEDecoder(max_event_size=limit)
    with pytest.raises(ResponseError, match="larger than"):
        for _ in range(limit // 4096 + 2):
            decoder.feed(b"A" * 4096)  # one endless line
    decoder = SSEDecoder(max_event_size=limit)
    with pytest.raises(ResponseError, match="larger than"):
        for _ in range(limit // 4096 + 2):
            decoder.feed(b"data: " + b"B" * 4090 + b"\n")  # many data lines, never dispatched
    decoder = SSEDecoder(max_event_size=limit)
    for _ in range(3):  # events below the cap, however many, are fine
        assert decoder.feed(b"data: " + b"C" * (limit - 100) + b"\n\n") == [(b"message", b"C" * (limit - 100))]


def test_an_event_over_the_cap_raises_response_error_through_the_provider(server, monkeypatch) -> None:
    monkeypatch.setattr(sse_module, "MAX_EVENT_SIZE", 256 * 1024)
    big = sse(chunk("x" * (300 * 1024)))
    items, error = collect_error_stream(server, [sse(chunk("before ")), *fragment(big, 16384, delay=0.002)])
    assert text_of(items) == "before "
    assert isinstance(error, ResponseError) and "larger than" in str(error)


def collect_error_stream(server, writes: list[bytes | float]) -> tuple[list, BaseException]:
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=writes))
    return collect_error(make_provider(server), stream=True)


# ------------------------------------------------------------------ over the wire


def stream_text(server, body: bytes | list[bytes | float], **kwargs) -> list:
    writes = body if isinstance(body, list) else [body]
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=writes, **kwargs))
    return collect(make_provider(server), stream=True)


HELLO = [chunk("Hel"), chunk("lo, "), chunk("wörld ✓"), chunk(finish_reason="stop")]


def test_comment_lines_and_data_without_space(server) -> None:
    body = b": keep-alive\n\n" + b"".join(b"data:" + json.dumps(c).encode() + b"\n\n" for c in HELLO)
    body += b": OPENROUTER PROCESSING\n\ndata:[DONE]\n\n"
    items = stream_text(server, body)
    assert text_of(items) == "Hello, wörld ✓"
    assert items[-1] == FinishReason("stop")


@pytest.mark.parametrize("ending", ["\n\n", "\r\r", "\r\n\r\n", "\r\n\n", "\n\r\n"])
def test_line_endings(server, ending: str) -> None:
    items = stream_text(server, sse(*HELLO, "[DONE]", end=ending))
    assert text_of(items) == "Hello, wörld ✓"
    assert kinds(items) == ["info", "text", "text", "text", "finish"]


def test_mixed_line_endings_in_one_stream(server) -> None:
    endings = ["\r\n\r\n", "\n\n", "\r\r", "\r\n\n"]
    body = b"".join(sse(c, end=endings[i % 4]) for i, c in enumerate(HELLO)) + b"data: [DONE]\r\n\r\n"
    assert text_of(stream_text(server, body)) == "Hello, wörld ✓"


def test_crlf_split_across_reads_between_data_lines(server) -> None:
    # {"choices": ...} spread over two data lines split at a token boundary, CR | LF across reads.
    obj = chunk("two-line")
    text = json.dumps(obj)
    cut = text.index('"choices"')
    writes: list[bytes | float] = [
        b"data: " + text[:cut].encode() + b"\r",
        0.01,
        b"\ndata: " + text[cut:].encode() + b"\r",
        0.01,
        b"\n\r",
        0.01,
        b"\n" + sse(chunk(finish_reason="stop"), "[DONE]", end="\r\n\r\n"),
    ]
    items = stream_text(server, writes)
    assert text_of(items) == "two-line"
    assert kinds(items) == ["info", "text", "finish"]


def test_leading_bom(server) -> None:
    items = stream_text(server, b"\xef\xbb\xbf" + sse(*HELLO, "[DONE]"))
    assert text_of(items) == "Hello, wörld ✓"


def test_leading_bom_split_across_reads(server) -> None:
    writes: list[bytes | float] = [b"\xef", 0.01, b"\xbb", 0.01, b"\xbf" + sse(*HELLO, "[DONE]")]
    assert text_of(stream_text(server, writes)) == "Hello, wörld ✓"


def test_multi_line_data(server) -> None:
    text = json.dumps(chunk("multi", finish_reason="stop"), indent=1)
    body = b"".join(b"data: " + line.encode() + b"\n" for line in text.split("\n")) + b"\n" + sse("[DONE]")
    items = stream_text(server, body)
    assert text_of(items) == "multi"
    assert items[-1] == FinishReason("stop")


def test_unicode_separators_inside_json_strings(server) -> None:
    weird = "a\u2028b\u2029c\u0085d\re\nf"
    raw = json.dumps(chunk(weird, finish_reason="stop"), ensure_ascii=False).encode()
    assert b"\xe2\x80\xa8" in raw and b"\xc2\x85" in raw
    items = stream_text(server, b"data: " + raw + b"\n\n" + sse("[DONE]"))
    assert text_of(items) == weird


def test_one_byte_per_write(server) -> None:
    body = b": hi\r\n" + sse(*HELLO, "[DONE]", end="\r\n\r\n")
    items = stream_text(server, fragment(body, 1))
    assert text_of(items) == "Hello, wörld ✓"
    assert kinds(items) == ["info", "text", "text", "text", "finish"]


def test_multibyte_utf8_split_across_writes(server) -> None:
    body = sse(chunk("日本語 ✓ 😀"), chunk(finish_reason="stop"), "[DONE]")
    start = body.index("😀".encode())
    writes: list[bytes | float] = [body[: start + 1], 0.01, body[start + 1 : start + 3], 0.01, body[start + 3 :]]
    assert text_of(stream_text(server, writes)) == "日本語 ✓ 😀"


def test_many_events_in_one_write_and_one_event_over_many(server) -> None:
    body = sse(*[chunk(str(i)) for i in range(200)], chunk(finish_reason="stop"), "[DONE]")
    items = stream_text(server, fragment(body, 997))
    assert text_of(items) == "".join(str(i) for i in range(200))


def test_empty_data_event_is_skipped(server) -> None:
    body = b"data:\n\ndata: \n\n" + sse(*HELLO, "[DONE]")
    items = stream_text(server, body)
    assert text_of(items) == "Hello, wörld ✓"
    assert isinstance(items[0], ProviderInfo)


def test_non_json_data_raises_response_error_quoting_it_bounded(server) -> None:
    junk = "this is <b>not</b> json " * 100
    server.script(sse_reply(chunk("before "), junk))
    items, error = collect_error(make_provider(server), stream=True)
    assert text_of(items) == "before "
    assert isinstance(error, ResponseError)
    assert "this is <b>not</b> json" in str(error)
    assert len(str(error)) < 600


def test_unknown_event_types_are_ignored(server) -> None:
    body = b"event: ping\ndata: {}\n\n" + sse(*HELLO, "[DONE]")
    assert text_of(stream_text(server, body)) == "Hello, wörld ✓"
