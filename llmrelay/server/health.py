"""Health answers for load balancers and orchestrators (SPEC 8.3, 8.9).

* ``GET /health``: ``{"status": "ok"}``, 503 ``{"status": "draining"}`` once SIGTERM / SIGINT started the drain;
* ``GET /health/live``: 200 while the process answers at all (draining too: it is finishing its work);
* ``GET /health/ready``: 200 when the configuration is loaded, the gateway is not draining and, with
  ``redis_url``, Redis answers a PING within :data:`READY_TIMEOUT_S`; else 503 with the reason.

While draining, connections opened after the drain started are answered by :func:`draining_handler`: the
health paths as above, every other request 503 ``shutting_down`` with ``Connection: close`` — so a load
balancer polling on new connections sees the 503, and no new work starts on a gateway that is stopping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

__all__ = ["READY_TIMEOUT_S", "draining_handler", "health", "live", "ready"]

JSON = "application/json"
READY_TIMEOUT_S = 1.0
_OK = b'{"status":"ok"}'
_DRAINING = b'{"status":"draining"}'


def health(draining: bool) -> web.Response:
    if draining:
        return web.Response(body=_DRAINING, status=503, content_type=JSON)
    return web.Response(body=_OK, content_type=JSON)


def live() -> web.Response:
    return web.Response(body=_OK, content_type=JSON)


async def ready(config: Any, draining: bool, state: Any) -> web.Response:
    """Ready for traffic: config loaded, not draining, Redis reachable when configured."""
    problem = None
    if config is None:
        problem = "no configuration loaded"
    elif draining:
        problem = "draining"
    else:
        reachable = getattr(state, "reachable", None)
        if config.server.redis_url and reachable is not None and not await reachable(READY_TIMEOUT_S):
            problem = "redis unreachable"
    if problem is None:
        return web.Response(body=b'{"status":"ready"}', content_type=JSON)
    return web.Response(body=orjson.dumps({"status": "not ready", "reason": problem}), status=503, content_type=JSON)


_NOT_READY_DRAINING = b'{"status":"not ready","reason":"draining"}'
_SHUTTING_DOWN = orjson.dumps(
    {
        "error": {
            "message": "the gateway is shutting down: send the request to another replica",
            "type": "server_error",
            "param": None,
            "code": "shutting_down",
        }
    }
)


def draining_handler(request_id: Callable[[web.BaseRequest], str]) -> Callable[[web.BaseRequest], Awaitable[Any]]:
    """The low-level handler for connections opened while draining (see the module docstring)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        probe = request.method in ("GET", "HEAD")
        if probe and path == "/health":
            response = health(True)
        elif probe and path == "/health/ready":
            response = web.Response(body=_NOT_READY_DRAINING, status=503, content_type=JSON)
        elif probe and path == "/health/live":
            response = live()
        else:
            response = web.Response(body=_SHUTTING_DOWN, status=503, content_type=JSON)
            response.headers["Retry-After"] = "1"
        response.headers["Connection"] = "close"
        response.headers["x-request-id"] = request_id(request)
        return response

    return handle
