"""The output file: what a previous run finished (resume), and appending results safely (SPEC 10.3, 10.4).

A line is done when it holds a 2xx answer or a 4xx that retrying cannot fix (not 408, 409, 429); everything
else (a 5xx, a 429, a failure with no HTTP answer) is sent again. :func:`prepare` reads the file once, keeps the
hashes of the done ids and, when something must go (a line to send again, a torn last line from a crash, a second
line for an id), rewrites the file through a temporary file, ``fsync`` and ``rename``, so a crash during the
rewrite leaves either the old file or the new one. :class:`Appender` writes each result with one ``write`` as
it completes (so a ``kill -9`` loses nothing written) and ``fsync``\\ s at least every second and at close.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .inputs import SortedHashes, id_hash

__all__ = ["RETRY_STATUSES", "Appender", "Previous", "is_done", "is_success", "prepare"]

RETRY_STATUSES = frozenset((408, 409, 429))
FSYNC_INTERVAL_S = 1.0


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status <= 299


def is_done(status: int | None) -> bool:
    """A line with this status is final: 2xx, or a 4xx other than 408 / 409 / 429."""
    if status is None:
        return False
    return 200 <= status <= 299 or (400 <= status <= 499 and status not in RETRY_STATUSES)


def _status(record: Any) -> int | None:
    if type(record) is not dict:
        return None
    response = record.get("response")
    if type(response) is not dict:
        return None
    status = response.get("status_code")
    return status if type(status) is int else None


@dataclass
class Previous:
    """The done lines of a previous run: their id hashes, split by success."""

    succeeded: SortedHashes = field(default_factory=SortedHashes)
    failed: SortedHashes = field(default_factory=SortedHashes)
    dropped: int = 0  # lines removed to be sent again (or torn / repeated)
    torn: bool = False

    def status_of(self, custom_id: str) -> bool | None:
        """True: done and succeeded; False: done and failed; None: to send."""
        value = id_hash(custom_id)
        if value in self.succeeded:
            return True
        if value in self.failed:
            return False
        return None


def _records(path: Path) -> Iterator[tuple[bytes, str | None, int | None, bool]]:
    """(raw line, custom_id, status, complete) per line; the last line is incomplete when it lacks its newline
    or does not parse (a write cut short by a crash)."""
    with open(path, "rb") as file:
        for raw in file:
            complete = raw.endswith(b"\n")
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield raw, None, None, False
                continue
            custom_id = record.get("custom_id") if type(record) is dict else None
            yield raw, custom_id if type(custom_id) is str else None, _status(record), complete


def prepare(path: Path) -> Previous:
    """Read a previous run's output (if any), keep its done lines, rewrite the file if anything must go."""
    previous = Previous()
    if not path.exists():
        return previous
    rewrite = False
    for _raw, custom_id, status, complete in _records(path):
        if not complete or custom_id is None:
            rewrite = True
            previous.torn = previous.torn or not complete
            continue
        if not is_done(status):
            rewrite = True
            continue
        (previous.succeeded if is_success(status) else previous.failed).add(id_hash(custom_id))
    succeeded, failed = previous.succeeded.freeze(), previous.failed.freeze()
    both = succeeded.common(failed)
    repeated = succeeded.repeated() | failed.repeated() | both
    if rewrite or repeated:
        previous.dropped = _rewrite(path, repeated)
    if both:  # an id done twice, once well and once not: what counts is the line kept
        again = prepare(path)
        again.dropped, again.torn = previous.dropped, previous.torn
        return again
    return previous


def _rewrite(path: Path, repeated: set[int]) -> int:
    """Write the done lines (the first one per id) to a temporary file and rename it over ``path``."""
    dropped = 0
    kept_repeated: set[str] = set()
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            for raw, custom_id, status, complete in _records(path):
                if not complete or custom_id is None or not is_done(status):
                    dropped += 1
                    continue
                if id_hash(custom_id) in repeated:
                    if custom_id in kept_repeated:
                        dropped += 1
                        continue
                    kept_repeated.add(custom_id)
                out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)
    return dropped


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class Appender:
    """Appends result lines: one ``os.write`` each (a result is on disk for the OS at once, whatever happens to
    this process next); a background thread ``fsync``\\ s every :data:`FSYNC_INTERVAL_S` while lines came in, and
    :meth:`close` once more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dirty = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sync_loop, name="llmrelay-batch-fsync", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        written = os.write(self.fd, line)
        if written < len(line):  # a short write (a full disk, a signal): the rest follows
            view = memoryview(line)[written:]
            while view:
                view = view[os.write(self.fd, view) :]
        self._dirty = True

    def _sync_loop(self) -> None:
        while not self._stop.wait(FSYNC_INTERVAL_S):
            self.sync()

    def sync(self) -> None:
        with self._lock:
            if self._dirty and self.fd >= 0:
                self._dirty = False
                os.fsync(self.fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        _fsync_directory(self.path.parent)
