"""Tool calls streamed as they arrive, for the doors that open one item or block per call (Responses, Messages).

Pure, no I/O. :class:`LiveCalls` says which :class:`~llmrelay.responses.ToolCallPiece` a door renders now and which
waits; :class:`InputDecoder` turns the JSON arguments of a custom tool's call into its free-form ``input`` text
piece by piece.

The rule (one item or block closed before the next opens, and every call complete): the first call to arrive is
rendered live, piece by piece, and stays open until the complete :class:`~llmrelay.responses.ToolCalls` comes at
the end of the answer (only then is it known that no more of its pieces will come). Whatever arrives while it is
open — pieces of the other calls, text, reasoning — waits and is rendered after it closes, in order: the other
calls (one delta per piece they had), then the waiting text. Upstreams send calls one after another, so in practice
only parallel calls after the first wait.
"""

from __future__ import annotations

import re
from typing import Any

from ...responses import ToolCallPiece

__all__ = ["InputDecoder", "LiveCalls"]

Rest = tuple[int, dict[str, Any], "list[str] | None"]  # a call rendered when the calls are complete


class LiveCalls:
    """Which tool-call pieces a door renders now (see the module's rule).

    ``take(piece)`` is true when the piece is rendered now: it opens the first call (``opens(piece)``) or continues
    it; false when it waits. ``live`` is the open call's first piece (``None`` before, and after ``finish``).
    ``hold(item)`` keeps another event for after the calls while a call is open (true when it was kept).
    """

    __slots__ = ("closed", "later", "live", "waiting")

    def __init__(self) -> None:
        self.live: ToolCallPiece | None = None
        self.closed = False  # the calls were finished: nothing waits any more
        self.waiting: dict[int, list[str]] = {}  # call number -> its pieces that waited
        self.later: list[Any] = []  # text / reasoning that arrived while a call was open

    def take(self, piece: ToolCallPiece) -> bool:
        live = self.live
        if live is None and not self.closed:
            self.live = piece
            return True
        if live is not None and piece.index == live.index:
            return True
        self.waiting.setdefault(piece.index, []).append(piece.arguments)
        return False

    def opens(self, piece: ToolCallPiece) -> bool:
        return self.live is piece

    def hold(self, item: Any) -> bool:
        if self.live is None:
            return False
        self.later.append(item)
        return True

    def finish(self, calls: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[Rest]]:
        """At the complete calls: the open call's final form (``None``: none was open), then each other call as
        (number, call, the pieces that waited for it — ``None``: it came with no pieces: render it whole).
        Afterwards ``later`` holds the events to render after the calls."""
        live = self.live
        self.live = None
        self.closed = True
        number = live.index if live is not None else -1
        open_call = calls[number] if 0 <= number < len(calls) else None
        rest = [(n, call, self.waiting.get(n)) for n, call in enumerate(calls) if n != number]
        return open_call, rest


_HEAD = ("{", '"input"', ":", '"')  # the arguments' text before the input's first character, blanks aside
_SPECIAL = re.compile(r'["\\]')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class InputDecoder:
    """The ``input`` string of arguments ``{"input": "…"}``, decoded as the arguments arrive piece by piece.

    ``feed(piece)`` returns the input text the piece completes (escapes undone; an escape or a surrogate pair split
    across pieces waits for its end). Arguments of another form (another key first, not a string …) stop the
    decoding: ``feed`` returns ``""`` from then on, and the door sends what is missing when the call ends.
    """

    __slots__ = ("_head", "_pending", "_state")

    def __init__(self) -> None:
        self._state = "head"  # head → body → end (or off)
        self._head = ""  # the arguments so far, while the input has not started
        self._pending = ""  # the start of an escape split across pieces

    def feed(self, piece: str) -> str:
        if self._state == "body":
            return self._body(piece)
        if self._state != "head":
            return ""
        self._head += piece
        start = _input_start(self._head)
        if start is None:
            return ""
        if start < 0:
            self._state = "off"
            return ""
        self._state = "body"
        rest, self._head = self._head[start:], ""
        return self._body(rest)

    def _body(self, piece: str) -> str:
        text = self._pending + piece if self._pending else piece
        self._pending = ""
        out: list[str] = []
        at, size = 0, len(text)
        while at < size:
            found = _SPECIAL.search(text, at)
            if found is None:
                out.append(text[at:])
                break
            stop = found.start()
            out.append(text[at:stop])
            if text[stop] == '"':
                self._state = "end"
                break
            char, used = _escape(text, stop)
            if used == 0:  # the escape goes on in the next piece
                self._pending = text[stop:]
                break
            if char is None:
                self._state = "off"
                break
            out.append(char)
            at = stop + used
        return "".join(out)


def _input_start(head: str) -> int | None:
    """Where the input's text starts in ``head``: ``None`` when ``head`` may still become ``{"input": "``, ``-1``
    when it cannot."""
    at = 0
    for token in _HEAD:
        while at < len(head) and head[at] in " \t\r\n":
            at += 1
        part = head[at : at + len(token)]
        if part != token:
            return None if token.startswith(part) and at + len(part) == len(head) else -1
        at += len(token)
    return at


def _escape(text: str, at: int) -> tuple[str | None, int]:
    """The character of the escape at ``text[at]`` (a backslash) and its length; length 0 when the text ends
    inside it; ``None`` when it is not valid JSON (a lone surrogate included)."""
    if at + 1 >= len(text):
        return None, 0
    kind = text[at + 1]
    if kind != "u":
        return _ESCAPES.get(kind), 2
    code = _hex(text, at + 2)
    if code is None:
        return (None, 0) if len(text) < at + 6 and _may_be_hex(text[at + 2 :]) else (None, 6)
    if 0xDC00 <= code < 0xE000:
        return None, 6  # a low surrogate with no high one before it
    if not 0xD800 <= code < 0xDC00:
        return chr(code), 6
    after = text[at + 6 : at + 8]
    if after != "\\u"[: len(after)]:
        return None, 6
    low = _hex(text, at + 8)
    if low is None:
        return (None, 0) if len(text) < at + 12 and _may_be_hex(text[at + 8 :]) else (None, 12)
    if not 0xDC00 <= low < 0xE000:
        return None, 12
    return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12


def _hex(text: str, at: int) -> int | None:
    digits = text[at : at + 4]
    if len(digits) != 4 or not _may_be_hex(digits):
        return None
    return int(digits, 16)


def _may_be_hex(digits: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in digits)
