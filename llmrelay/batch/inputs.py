"""Reading a batch input file: checking it whole before any request (SPEC 10.2), then streaming its lines.

A line is ``{"custom_id", "method": "POST", "url", "body"}``; blank lines are skipped; line numbers are the
file's own (1-based). The check holds one 64-bit hash per ``custom_id`` (8 bytes a line, in sorted runs merged
lazily), never the lines: a 1,000,000-line file is checked in a few MB. Two different ids that share a hash
are told apart by a second, targeted pass, so a duplicate is reported only when the ids are equal.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "FIELDS",
    "MAX_PROBLEMS",
    "Checked",
    "InputError",
    "Line",
    "SortedHashes",
    "check_input",
    "id_hash",
    "iter_lines",
    "parse_line",
]

MAX_PROBLEMS = 20
FIELDS = ("custom_id", "method", "url", "body")
_FIELD_SET = frozenset(FIELDS)
RUN = 65536  # hashes sorted per run while checking

BodyCheck = Callable[[str, dict[str, Any]], "str | None"]


def id_hash(custom_id: str) -> int:
    """The hash a ``custom_id`` is kept as (valid within one process: ``hash`` of a str is salted per process)."""
    return hash(custom_id)


class InputError(Exception):
    """The input file has problems; ``problems`` are ``INPUT:LINE: what`` strings (at most :data:`MAX_PROBLEMS`)."""

    def __init__(self, problems: list[str], more: bool = False) -> None:
        self.problems = problems
        self.more = more
        tail = f"\n(stopped after {MAX_PROBLEMS} problems)" if more else ""
        super().__init__("\n".join(problems) + tail)


class Line:
    """One checked input line (``raw``: its bytes, as a Ray actor is sent them)."""

    __slots__ = ("body", "custom_id", "number", "raw", "url")

    def __init__(self, number: int, custom_id: str, url: str, body: dict[str, Any], raw: bytes) -> None:
        self.number = number
        self.custom_id = custom_id
        self.url = url
        self.body = body
        self.raw = raw


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of every non-blank line, streamed."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if raw.strip():
                yield number, raw


def _describe(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_line(number: int, raw: bytes, check_body: BodyCheck) -> Line | str:
    """The line, or what is wrong with it (without the ``INPUT:LINE:`` prefix)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return f"invalid JSON ({str(error).split(':')[0]})"
    if type(data) is not dict:
        return f"a line must be a JSON object, not {type(data).__name__}"
    if data.keys() != _FIELD_SET:
        for name in FIELDS:
            if name not in data:
                return f"missing {name!r}"
        unknown = next(name for name in data if name not in _FIELD_SET)
        return f"unknown field {unknown!r} (a line has {', '.join(FIELDS)})"
    custom_id, method, url, body = data["custom_id"], data["method"], data["url"], data["body"]
    if type(custom_id) is not str or not custom_id:
        return f"'custom_id' must be a non-empty string, not {_describe(custom_id)}"
    if method != "POST":
        return f"'method' must be \"POST\", not {_describe(method)}"
    if type(url) is not str:
        return f"'url' must be a string, not {_describe(url)}"
    if type(body) is not dict:
        return f"'body' must be a JSON object, not {type(body).__name__}"
    if body.get("stream") is True:
        return "'body' has \"stream\": true; batch answers are not streamed (remove it)"
    problem = check_body(url, body)
    if problem is not None:
        return problem
    return Line(number, custom_id, url, body, raw)


class SortedHashes:
    """A set of ``custom_id`` hashes in sorted ``array('q')`` runs: 8 bytes an id, membership by binary search."""

    def __init__(self) -> None:
        self.runs: list[array[int]] = []
        self._open: array[int] = array("q")
        self.count = 0

    def add(self, value: int) -> None:
        self._open.append(value)
        self.count += 1
        if len(self._open) >= RUN:
            self._seal()

    def _seal(self) -> None:
        if self._open:
            self.runs.append(array("q", sorted(self._open)))
            self._open = array("q")

    def freeze(self) -> SortedHashes:
        """Merge the runs into one sorted array (call once, after the last ``add``)."""
        self._seal()
        if len(self.runs) > 1:
            self.runs = [array("q", heapq.merge(*self.runs))]
        return self

    def repeated(self) -> set[int]:
        """The hashes seen more than once (after :meth:`freeze`)."""
        found: set[int] = set()
        if not self.runs:
            return found
        previous = None
        for value in self.runs[0]:
            if value == previous:
                found.add(value)
            previous = value
        return found

    def common(self, other: SortedHashes) -> set[int]:
        """The hashes in both sets (both frozen): one walk over the two sorted arrays."""
        found: set[int] = set()
        if not self.runs or not other.runs:
            return found
        mine, theirs = self.runs[0], other.runs[0]
        i = j = 0
        while i < len(mine) and j < len(theirs):
            if mine[i] < theirs[j]:
                i += 1
            elif mine[i] > theirs[j]:
                j += 1
            else:
                found.add(mine[i])
                i += 1
                j += 1
        return found

    def __contains__(self, value: object) -> bool:
        if not self.runs:
            return False
        run = self.runs[0]
        low, high = 0, len(run)
        while low < high:
            middle = (low + high) // 2
            if run[middle] < value:  # type: ignore[operator]
                low = middle + 1
            else:
                high = middle
        return low < len(run) and run[low] == value

    def __len__(self) -> int:
        return self.count


@dataclass
class Checked:
    """What the check learnt: the number of lines and the hashes of their ids."""

    lines: int
    ids: SortedHashes


def check_input(path: Path, check_body: BodyCheck, label: str | None = None) -> Checked:
    """Check every line (raises :class:`InputError`); problems are ``label:LINE: what`` (label: the path given)."""
    label = label or str(path)
    problems: list[tuple[int, str]] = []
    more = False
    ids = SortedHashes()
    lines = 0
    for number, raw in iter_lines(path):
        lines += 1
        parsed = parse_line(number, raw, check_body)
        if isinstance(parsed, str):
            if len(problems) >= MAX_PROBLEMS:
                more = True
                break
            problems.append((number, parsed))
            continue
        ids.add(id_hash(parsed.custom_id))
    ids.freeze()
    if not more:
        problems.extend(_duplicates(path, ids.repeated()))
        problems.sort()
        more = len(problems) > MAX_PROBLEMS
    if problems:
        raise InputError([f"{label}:{number}: {what}" for number, what in problems[:MAX_PROBLEMS]], more)
    return Checked(lines, ids)


def _duplicates(path: Path, suspects: Iterable[int]) -> list[tuple[int, str]]:
    """A second pass over the lines whose id hash repeats: the real duplicates, with the line of the first."""
    suspects = set(suspects)
    if not suspects:
        return []
    first: dict[str, int] = {}
    found: list[tuple[int, str]] = []
    for number, raw in iter_lines(path):
        try:
            custom_id = orjson.loads(raw).get("custom_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if type(custom_id) is not str or id_hash(custom_id) not in suspects:
            continue
        if custom_id in first:
            if len(found) <= MAX_PROBLEMS:
                found.append((number, f"duplicate custom_id {custom_id!r} (first on line {first[custom_id]})"))
        else:
            first[custom_id] = number
    return found
