"""Environment variables read on every request (keys, base URLs), without the cost of a miss."""

from __future__ import annotations

import os
import sys

__all__ = ["getenv"]

_ENCODING = sys.getfilesystemencoding()
_POSIX = os.name == "posix"


def getenv(name: str) -> str | None:
    """``os.environ.get(name)``. A variable that is not set (the common case) is answered from CPython's store
    behind ``os.environ`` (bytes keys on POSIX): ``os.environ.get`` raises and catches a ``KeyError`` for a miss,
    ~1 µs, several times per request."""
    data = getattr(os.environ, "_data", None)
    if _POSIX and type(data) is dict and name.encode(_ENCODING, "surrogateescape") not in data:
        return None
    return os.environ.get(name)
