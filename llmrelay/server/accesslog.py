"""One access-log line per request on stderr (SPEC 8.9): never a prompt, an answer or a key, only key names."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, TextIO

import orjson

__all__ = ["AccessLog", "Entry"]


class Entry:
    """What one request leaves in the log; filled in while it is answered."""

    __slots__ = (
        "cache",
        "key",
        "method",
        "model",
        "path",
        "provider",
        "request_id",
        "route",
        "start",
        "status",
        "tokens",
    )

    def __init__(self, method: str, path: str, request_id: str, start: float) -> None:
        self.method = method
        self.path = path
        self.request_id = request_id
        self.start = start
        self.status = 0
        self.key: str | None = None
        self.route: str | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.tokens: int | None = None
        self.cache: str | None = None


MODEL_MAX = 256  # characters of a model name in a log line


def _word(value: str | None) -> str:
    """A value as one word of the text log: ``-`` when missing, JSON-quoted when it has spaces or control
    characters (a caller's model name must not forge a log line)."""
    if not value:
        return "-"
    if value.isprintable() and " " not in value and '"' not in value:
        return value
    return orjson.dumps(value).decode()


_known_word = functools.lru_cache(maxsize=1024)(_word)  # paths, key, route, provider and model names repeat


class AccessLog:
    def __init__(self, log_format: str = "text", stream: TextIO | None = None) -> None:
        if log_format not in ("text", "json", "off"):
            raise ValueError(f"log format must be text, json or off, not {log_format!r}")
        self.format = log_format
        self.stream = stream
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, entry: Entry, end: float) -> None:
        if self.format == "off":
            return
        duration = end - entry.start
        model = entry.model
        if model is not None and len(model) > MODEL_MAX:  # an upstream reports the model name it likes
            model = model[: MODEL_MAX - 3] + "..."
        if self.format == "json":
            record: dict[str, Any] = {
                "time": self._now(),
                "method": entry.method,
                "path": entry.path,
                "status": entry.status,
                "duration_s": round(duration, 6),
                "key": entry.key,
                "route": entry.route,
                "provider": entry.provider,
                "model": model,
                "tokens": entry.tokens,
                "request_id": entry.request_id,
            }
            if entry.cache:
                record["cache"] = entry.cache
            line = orjson.dumps(record).decode() + "\n"
        else:
            line = (
                f"{self._now()} {entry.method} {_known_word(entry.path)} {entry.status} {duration * 1000:.1f}ms"
                f" key={_known_word(entry.key)} route={_known_word(entry.route)}"
                f" provider={_known_word(entry.provider)} model={_known_word(model)}"
                f" tokens={'-' if entry.tokens is None else entry.tokens}"
                f" request_id={_word(entry.request_id)}{' cache=' + entry.cache if entry.cache else ''}\n"
            )
        stream = self.stream or sys.stderr
        try:
            stream.write(line)  # stderr is line-buffered (Python >= 3.9): each line goes out as it is written
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not fail requests
