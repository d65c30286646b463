"""An incremental decoder for ``text/event-stream`` bodies.

It follows the WHATWG "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

* lines end in CR LF, a lone LF or a lone CR, also when a CR LF is split across reads;
* a UTF-8 byte order mark at the very start of the stream is dropped;
* a line starting with ``:`` is a comment;
* ``field:value`` — one optional space after the colon is removed; a line without a
  colon is a field with an empty value;
* ``data`` lines are joined with LF; ``event`` sets the event type; ``id`` and
  ``retry`` are kept as the spec says and otherwise unused here;
* an empty line dispatches the event when at least one ``data`` line came
  (``data:`` alone dispatches an event with empty data; the caller decides).

One leniency beyond the spec: at the end of the stream an event that lacks
its closing empty line is still dispatched (:meth:`SSEDecoder.flush`), because
servers that end with ``data: [DONE]\n`` exist and no token may be lost.

The decoder works on bytes, not text: line ends are ASCII, so a multi-byte UTF-8
character split across reads, or U+2028 / U+0085 inside a JSON string, never
breaks a line. Event data stays bytes, ready for ``orjson.loads``.

It is on the hot path of every streamed answer, so the common case — whole
``data: {...}\\n\\n`` events, LF only — takes one ``split`` and a few slices.
A line that spans many reads (a big base64 image in one event) is kept as a list
of parts and joined once, so its cost stays linear in its size. One event larger
than :data:`MAX_EVENT_SIZE` raises :class:`~llmrelay.errors.ResponseError`
instead of growing memory without bound: the size is checked as the event's
bytes arrive over several reads (an event that arrives whole in one read is
bounded by that read, which aiohttp keeps to a few hundred KiB).
"""

from __future__ import annotations

from ..errors import ResponseError

__all__ = ["MAX_EVENT_SIZE", "SSEDecoder"]

MAX_EVENT_SIZE = 64 * 1024 * 1024  # bytes of one event (its data lines and any unterminated line)

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the complete events as ``(event_type, data)`` pairs.

    ``max_event_size`` (default :data:`MAX_EVENT_SIZE`) bounds one event; a larger one raises ``ResponseError``.
    """

    __slots__ = (
        "_at_start",
        "_counted",
        "_data",
        "_data_size",
        "_event",
        "_limit",
        "_more",
        "_more_size",
        "_skip_lf",
        "_tail",
        "last_event_id",
        "retry",
    )

    def __init__(self, max_event_size: int | None = None) -> None:
        self._tail = b""  # the start of an unterminated line carried over to the next read ...
        self._more: list[bytes] = []  # ... and the reads after it that held no line end (joined once)
        self._more_size = 0
        self._data: list[bytes] = []
        self._data_size = 0  # bytes in ``_data`` (counted up to ``_counted`` lines)
        self._counted = 0
        self._event = b""
        self._skip_lf = False  # the previous read ended in CR: a LF starting this one is its pair
        self._at_start = True  # no byte seen yet: a BOM may still come, perhaps split
        self._limit = MAX_EVENT_SIZE if max_event_size is None else max_event_size
        self.last_event_id = b""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """Decode one read; return the events it completed (possibly none)."""
        if self._at_start:
            chunk = self._tail + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._tail = chunk
                return []
            self._tail = b""
            self._at_start = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                self._skip_lf = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._more.append(chunk)
                self._more_size += len(chunk)
                if len(self._tail) + self._more_size + self._data_size > self._limit:
                    raise self._too_large()
            return []
        lines = chunk.split(b"\n")
        if self._more:
            lines[0] = b"".join([self._tail, *self._more, lines[0]])
            self._more = []
            self._more_size = 0
            if len(lines[0]) + self._data_size > self._limit:
                raise self._too_large()
        elif self._tail:
            lines[0] = self._tail + lines[0]
        self._tail = lines.pop()
        return self._lines(lines)

    def flush(self) -> list[tuple[bytes, bytes]]:
        """At the end of the stream: dispatch what an unterminated last event holds."""
        tail = b"".join([self._tail, *self._more]) if self._more else self._tail
        self._tail = b""
        self._more = []
        self._more_size = 0
        if self._at_start:
            self._at_start = False
            if tail.startswith(_BOM):
                tail = tail[3:]
        return self._lines([tail, b""] if tail else [b""])

    def _lines(self, lines: list[bytes]) -> list[tuple[bytes, bytes]]:
        events: list[tuple[bytes, bytes]] = []
        data = first = self._data
        for line in lines:
            if not line:
                if data:
                    events.append((self._event or b"message", data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = b""
            elif line[:6] == b"data: ":
                data.append(line[6:])
            else:
                self._field(line, data)
        if data:
            self._count(data, data is first)
        elif self._data_size:
            self._data_size = self._counted = 0
        return events

    def _count(self, data: list[bytes], same: bool) -> None:
        """Add the data lines not counted yet to the size of the event being built; raise if it is too big."""
        counted, size = (self._counted, self._data_size) if same else (0, 0)
        for index in range(counted, len(data)):
            size += len(data[index]) + 1
        self._counted = len(data)
        self._data_size = size
        if size + len(self._tail) > self._limit:
            raise self._too_large()

    def _too_large(self) -> ResponseError:
        return ResponseError(
            f"a stream event is larger than {self._limit} bytes (llmrelay.http.sse.MAX_EVENT_SIZE); the stream was stopped"
        )

    def _field(self, line: bytes, data: list[bytes]) -> None:
        if line[:1] == b":":
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self.last_event_id = value
        elif name == b"retry":
            if value.isdigit() and len(value) <= 12:  # the upstream's text: int() refuses over 4300 digits
                self.retry = int(value)


# ------------------------------------------------------------------ encoding (the gateway's side)

DONE_EVENT = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT = b": keep-alive\n\n"


def encode_data(payload: bytes) -> bytes:
    """One event whose data is ``payload``, which must hold no line break (compact JSON from orjson has none)."""
    return b"data: " + payload + b"\n\n"
