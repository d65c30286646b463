"""Checks of the arguments every request takes: timeouts, headers, the API key.

Each raises a clear ``TypeError`` / ``ValueError`` naming the argument, before
anything is sent, so a wrong value never turns into an obscure error deep in
aiohttp, a silently different request, or a retried "connection error".

Timeouts (``timeout``: connecting and each gap between received bytes;
``total_timeout``: the whole call):

* ``None`` — the default: :data:`DEFAULT_TIMEOUT` (120 s) for ``timeout``, no limit for ``total_timeout``;
* ``float("inf")`` — no limit;
* a positive finite number of seconds — that limit;
* ``0``, negative numbers, NaN, booleans and non-numbers (``"10"``) — ``ValueError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from numbers import Real

__all__ = ["DEFAULT_TIMEOUT", "check_api_key", "check_headers", "check_secrets", "check_timeout"]

DEFAULT_TIMEOUT = 120.0

_DEFAULTS: dict[str, float] = {"timeout": DEFAULT_TIMEOUT}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field name
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than tab


def check_timeout(name: str, value: object) -> float | None:
    """The limit in seconds ``value`` asks for, ``None`` for no limit (see the module docstring)."""
    if value is None:
        return _DEFAULTS.get(name)
    if (type(value) is float or type(value) is int) and 0 < value < math.inf:  # the common case, fast
        return float(value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number of seconds (or None), not {type(value).__name__} {value!r:.40}")
    seconds = float(value)
    if seconds == math.inf:
        return None
    if not seconds > 0:  # also NaN
        raise ValueError(f"{name} must be a positive number of seconds, float('inf') or None, not {value!r}")
    return seconds


def check_headers(headers: object, name: str = "headers") -> None:
    """Refuse what is not a mapping of header names to string values a server would read as sent.

    ``TypeError`` for a non-mapping, a non-string name or a value that is neither a string nor
    ``None`` (which providers read as "remove this header"); ``ValueError`` for a name that is not
    an HTTP token (a ``:``, a space, a control character) and a value with a line break or other
    control character.
    """
    if type(headers) is not dict and not isinstance(headers, Mapping):
        raise TypeError(f"{name} must be a mapping like {{'X-Name': 'value'}}, not {type(headers).__name__}")
    for field, value in headers.items():
        if field not in _good_names:
            _check_name(field, name)
        if value is None or (type(value) is str and value.isprintable()):
            continue  # the common case, fast; tabs and the rest are looked at below
        if not isinstance(value, str):
            raise TypeError(f"{name}: the value of {field!r} must be a string, not {type(value).__name__}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"{name}: the value of {field!r} has a line break or another control character")


_good_names: set[str] = set()  # header names already checked (they repeat on every request)


def _check_name(field: object, name: str) -> None:
    if not isinstance(field, str):
        raise TypeError(f"{name}: header names must be strings, not {type(field).__name__} {field!r:.40}")
    if not _TOKEN.fullmatch(field):
        raise ValueError(f"{name}: {field!r:.60} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    if len(_good_names) < 1024:
        _good_names.add(field)


def check_api_key(value: object, source: str = "api_key") -> str | None:
    """``value`` if it can be an API key (a string without surrounding spaces or control characters) or None.

    ``source`` names where the key came from (``"api_key"``, ``"GROQ_API_KEY"``) for the message;
    the key itself is never quoted.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{source} must be a string, not {type(value).__name__}")
    if not value.isprintable() or value != value.strip():
        raise ValueError(f"the API key ({source}) has surrounding spaces or a control character such as a line break")
    return value


def check_secrets(secrets: Iterable[object]) -> tuple[str | None, ...]:
    """``secrets`` as a tuple; ``TypeError`` (naming ``api_key``) for one that is neither a string nor None."""
    result = tuple(secrets)
    for secret in result:
        if secret is not None and not isinstance(secret, str):
            raise TypeError(f"api_key must be a string, not {type(secret).__name__}")
    return result  # type: ignore[return-value]
