"""The playground (SPEC 11): one static page, its script and its style, served by the gateway itself.

The files ship as package data beside this module and are read once, when the routes are added. Every answer
carries ``Content-Security-Policy: default-src 'self'``: the page may load nothing and talk to nothing but the
gateway that served it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

__all__ = ["ASSETS", "handlers", "load_assets"]

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = "default-src 'self'"
# path → (file in llmrelay/server/playground/, content type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/app.css": ("app.css", "text/css; charset=utf-8"),
    "/playground/icon.svg": ("icon.svg", "image/svg+xml"),
}
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every asset's bytes and content type, by the path it is served at."""
    folder = resources.files(__package__ or "llmrelay.server").joinpath("playground")
    return {path: (folder.joinpath(name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}


def _handler(body: bytes, kind: str) -> PageHandler:
    headers = {**_HEADERS, "Content-Type": kind}

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers=headers)

    return serve


def handlers() -> dict[str, PageHandler]:
    """The handler of each asset, by the path it is served at."""
    return {path: _handler(body, kind) for path, (body, kind) in load_assets().items()}
