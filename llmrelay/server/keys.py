"""Gateway keys: making them, and checking the one a caller presents (constant time, SHA-256 only in memory)."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..client.convert import model_choosing_fields
from .config import GatewayKey
from .problems import GatewayError

__all__ = ["KEY_PREFIX", "KeyRing", "allowed", "config_line", "new_key", "widening_field"]

KEY_PREFIX = "sk-llmrelay-"


def new_key() -> str:
    """A new random key: ``sk-llmrelay-`` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def config_line(name: str, key: str) -> str:
    """The ``[[keys]]`` entry that holds only the key's SHA-256."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f'[[keys]]\nname = "{name}"\nsha256 = "{digest}"'


class KeyRing:
    """The configured keys; :meth:`find` maps the secret a caller sent to its key (or None), :meth:`caller` the
    request headers to the caller's key."""

    def __init__(self, keys: list[GatewayKey]) -> None:
        self.keys = list(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> GatewayKey | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for key in self.keys:  # every key compared, in constant time: the timing says nothing about which matched
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def caller(self, headers: Mapping[str, str]) -> GatewayKey:
        """The caller's key from ``Authorization: Bearer`` (any case) or ``x-api-key`` (SPEC 9.1.2): the first
        valid one, Authorization first; none valid → 401 ``invalid_api_key``."""
        given = [bearer(headers.get("Authorization")), headers.get("x-api-key", "").strip() or None]
        tokens = [token for token in given if token]
        for token in tokens:
            key = self.find(token)
            if key is not None:
                return key
        raise GatewayError(
            401,
            "invalid_api_key",
            "no gateway key given: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            if not tokens
            else "the gateway key is not valid: check the key you send (keys are made with `llmrelay keys new`)",
        )


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@lru_cache(maxsize=4096)
def _match(globs: tuple[str, ...], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def allowed(key: GatewayKey | None, names: tuple[str, ...]) -> bool:
    """Whether ``key`` may use a model known by any of ``names`` (route name, ``provider/model``)."""
    if key is None or key.models is None:
        return True
    return any(_match(key.models, name) for name in names)


def widening_field(key: GatewayKey | None, options: Mapping[str, Any]) -> str | None:
    """A field of the call with which the upstream would choose other models (OpenRouter's ``models`` /
    ``route``) when ``key`` is limited to some models, else None: such a key may not send them (refused, 403)."""
    if key is None or key.models is None:
        return None
    fields = model_choosing_fields(options)
    return fields[0] if fields else None
