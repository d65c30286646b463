"""Checking base URLs and joining endpoint paths onto them.

A base URL is where a provider's endpoints hang: ``https://host/v1``, or an
Azure-style ``https://host/openai/deployments/x?api-version=2024-06-01`` whose
query string must stay at the end of every URL built from it. Nothing in a base
URL is dropped or rewritten silently: a value that cannot mean what its author
meant (no scheme, ``ftp://``, spaces, control characters, a ``#fragment``,
which a client never sends) is a ``ValueError`` naming the argument — raised
before any request, and never retried.

Error messages never quote a URL's query or user info: a key may sit there.
"""

from __future__ import annotations

import functools

__all__ = ["check_api_base", "check_url", "join_url"]

SCHEMES = ("http", "https")


def _shown(url: str) -> str:
    """The part of ``url`` an error message may quote: no user info, no query, bounded."""
    head = url.partition("?")[0].partition("#")[0]
    scheme, sep, rest = head.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        head = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return head if len(head) <= 100 else head[:99] + "…"


def check_url(url: object, name: str = "url") -> str:
    """``url`` if it is an absolute ``http(s)://`` URL with a host and nothing a request would silently alter.

    ``TypeError`` for a non-string, ``ValueError`` (naming ``name``) for surrounding or inner spaces,
    control characters, a missing or unsupported scheme, no host, a bad port or a ``#fragment``.
    """
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a string URL like 'https://host/v1', not {type(url).__name__}")
    if not url.isprintable() or " " in url:
        where = "surrounding spaces" if url != url.strip() else "a space or a control character (such as a line break)"
        raise ValueError(f"{name} {_shown(url).strip()!r} has {where}; a URL has neither")
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{name} {_shown(url)!r} has no scheme: write it as 'https://{_shown(url)}' (or http://)")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"{name} {_shown(url)!r}: unsupported scheme {scheme!r}; use http:// or https://")
    if "#" in url:
        raise ValueError(f"{name} {_shown(url)!r} has a #fragment, which is never sent to a server; remove it")
    problem = _authority_problem(url[len(scheme) + 3 :].partition("/")[0].partition("?")[0])
    if problem:
        raise ValueError(f"{name} {_shown(url)!r} is not a valid URL: {problem}")
    return url


def _authority_problem(authority: str) -> str | None:
    """What is wrong with ``[user@]host[:port]``, if anything (plain string work: this runs on every request)."""
    host = authority.rpartition("@")[2]
    port = ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return "an IPv6 host without its closing ']'"
        host, port = host[: end + 1], host[end + 1 :]
        if port and not port.startswith(":"):
            return "text after the IPv6 host"
        port = port[1:]
    elif ":" in host:
        host, _, port = host.partition(":")
    if not host:
        return "no host"
    if port and not (port.isdigit() and port.isascii() and 0 < int(port) <= 65535):
        return "the port must be a number from 1 to 65535"
    return None


def check_api_base(url: object) -> str:
    """A checked base URL (see :func:`check_url`), its path's trailing slashes removed, its query kept.

    ``check_api_base("https://h/v1/?api-version=1")`` → ``"https://h/v1?api-version=1"``.
    """
    base = check_url(url, "api_base")
    head, question, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    authority, slash, path = rest.partition("/")
    head = f"{scheme}://{authority}{slash}{path}".rstrip("/") if path else f"{scheme}://{authority}"
    return f"{head}{question}{query}"


@functools.lru_cache(maxsize=512)  # a pure function called on every request with the same few arguments
def join_url(base: str, path: str) -> str:
    """``path`` (``"chat/completions"``, may carry its own query) joined under ``base``, before its query.

    ``join_url("https://h/v1?api-version=1", "chat/completions")`` →
    ``"https://h/v1/chat/completions?api-version=1"``. A ``#fragment`` in either is a ``ValueError``.
    """
    if "#" in base or "#" in path:
        raise ValueError(f"cannot join {_shown(base)!r} and {path!r}: a #fragment is never sent to a server")
    head, _, query = base.partition("?")
    path, _, path_query = path.partition("?")
    if path.strip("/"):
        head = head.rstrip("/") + "/" + path.lstrip("/")
    query = f"{query}&{path_query}" if query and path_query else query or path_query
    return f"{head}?{query}" if query else head
