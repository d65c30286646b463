"""The gateway's HTTP face (SPEC 8.3-8.9, 9.1): the route table, the middlewares, the aiohttp application.

Every request goes: the middleware (:class:`~llmrelay.server.exchange.Exchange`, the gateway key, access log,
metrics, 499 on hang-up, errors → the door's error body) → the endpoint's handler: a door
(:mod:`llmrelay.server.doors`) over the door-neutral :class:`~llmrelay.server.pipeline.Pipeline`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import health, playground
from .accesslog import AccessLog, Entry
from .config import Config
from .doors import Door, chat, embeddings, images, messages, responses
from .exchange import Exchange, request_id
from .keys import KeyRing
from .listing import Listing
from .metrics import CONTENT_TYPE, Metrics
from .pipeline import Handler, Pipeline, chat_handler
from .problems import GatewayError
from .state import MemoryState, State
from .stream import StreamWriter

__all__ = ["Endpoint", "Gateway"]

# Where the middleware keeps the request's Exchange (a typed key where aiohttp has them).
EXCHANGE: Any = web.RequestKey("exchange", Exchange) if hasattr(web, "RequestKey") else "llmrelay.exchange"
Plain = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Endpoint:
    """One row of the route table: ``method`` and ``path`` (aiohttp's syntax), the ``door`` (its error shape, and
    its handler: ``door.handle`` when it has one, else the chat operation), whether the caller's key is checked
    (``auth``). A ``plain`` endpoint (health, metrics) is served as it is: no key, no access-log line."""

    __slots__ = ("auth", "door", "handle", "method", "path", "plain")

    def __init__(
        self,
        method: str,
        path: str,
        door: Any,
        handle: Handler | None = None,
        *,
        auth: bool = True,
        plain: Plain | None = None,
    ) -> None:
        self.method, self.path, self.door, self.auth, self.plain = method, path, door, auth, plain
        self.handle: Handler = handle or getattr(door, "handle", None) or chat_handler(door)

    @property
    def shown(self) -> str:
        """The path as the 404 message shows it (``{model:.+}`` → ``{model}``)."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


class Gateway:
    """One gateway process: configuration, shared state, metrics, access log and the aiohttp application."""

    def __init__(
        self, config: Config, state: State | None = None, *, log_format: str = "text", log_stream: Any = None
    ) -> None:
        self.config = config
        self.state: State = state if state is not None else MemoryState()
        self.keys = KeyRing(config.keys)
        self.metrics = Metrics(config)
        self.metrics.inflight.set_function(lambda: self.inflight)  # read when scraped: no cost per request
        self.access = AccessLog(log_format, log_stream)
        self.draining = False
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.max_body = int(config.server.max_body_mb * 1024 * 1024)
        self.writer = StreamWriter(self.metrics, config.server.keepalive_s)
        self.pipeline = Pipeline(config, self.state, self.metrics, self.writer)
        self.listing = Listing(config)
        self.endpoints = self.route_table()
        self._rows: dict[Any, Endpoint] = {}

    def route_table(self) -> list[Endpoint]:
        """Every path the gateway serves: a new door is one row here (and its module in ``doors``)."""
        return [
            Endpoint("POST", "/v1/chat/completions", chat),
            Endpoint("GET", "/v1/models", chat, self.listing.models),
            Endpoint("GET", "/v1/models/{model:.+}", chat, self.listing.model),
            Endpoint("POST", "/v1/images/generations", images),
            Endpoint("POST", "/v1/messages", messages),
            Endpoint("POST", "/v1/messages/count_tokens", messages, messages.count_tokens),
            Endpoint("POST", "/v1/embeddings", embeddings),
            Endpoint("POST", "/v1/responses", responses),
            Endpoint("GET", "/v1/responses/{response_id}", responses, responses.retrieve),
            Endpoint("DELETE", "/v1/responses/{response_id}", responses, responses.delete),
            Endpoint("GET", "/v1/responses/{response_id}/input_items", responses, responses.input_items),
            Endpoint("GET", "/health", chat, plain=self.health),
            Endpoint("GET", "/health/live", chat, plain=self.live),
            Endpoint("GET", "/health/ready", chat, plain=self.ready),
            Endpoint("GET", "/metrics", chat, plain=self.metrics_page),
            *self._playground(),
        ]

    def _playground(self) -> list[Endpoint]:
        """``GET /`` and the page's files (SPEC 11), unless ``[server] playground = false``."""
        if not self.config.server.playground:
            return []
        return [Endpoint("GET", path, chat, plain=handler) for path, handler in playground.handlers().items()]

    @property
    def default_provider(self) -> str:
        return self.pipeline.default_provider

    @default_provider.setter
    def default_provider(self, name: str) -> None:
        self.pipeline.default_provider = name

    def reload(self, config: Config) -> None:
        """Serve new requests with ``config`` (checked whole by the caller, see :mod:`.reload`): they get a new
        pipeline, while requests in flight finish on the one they started with. Limits, cooldowns and the cache
        stay in the state; in-flight counts (least-busy) and round-robin turns carry over."""
        pipeline = Pipeline(config, self.state, self.metrics, self.writer)
        pipeline.busy, pipeline.turns = self.pipeline.busy, self.pipeline.turns
        self.listing.reload(config)
        self.metrics.configure(config)  # the label values the new routes and providers name
        self.config, self.keys, self.pipeline = config, KeyRing(config.keys), pipeline

    # ------------------------------------------------------------------------ application

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body + 1, middlewares=[self._exchange])
        for endpoint in self.endpoints:
            handler = endpoint.plain or self._handler(endpoint)
            for method in (endpoint.method, "HEAD") if endpoint.method == "GET" else (endpoint.method,):
                self._rows[app.router.add_route(method, endpoint.path, handler)] = endpoint  # HEAD: GET's head
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    def _handler(self, endpoint: Endpoint) -> Plain:
        handle = endpoint.handle

        async def handler(request: web.Request) -> web.StreamResponse:
            return await handle(self.pipeline, request[EXCHANGE])  # read per request: a reload swaps it

        return handler

    async def _start(self, app: web.Application) -> None:
        self.writer.start()

    async def _stop(self, app: web.Application) -> None:
        await self.writer.stop()
        await self.state.close()

    # ------------------------------------------------------------------------ middlewares

    @web.middleware
    async def _exchange(self, request: web.Request, handler: Plain) -> web.StreamResponse:
        """The request's :class:`Exchange` and log entry, the caller's gateway key (one middleware: every layer
        costs on each resumption of a stream); errors → the door's error body; 499 on hang-up."""
        endpoint = self._rows.get(request.match_info.route)
        if endpoint is not None and endpoint.plain is not None:
            return await handler(request)
        door = endpoint.door if endpoint is not None else self._door_at(request.path)
        x = Exchange(request, self._begin(request), door, self.config.server, self.max_body)
        request[EXCHANGE] = x
        try:
            if "websocket" in request.headers.get("Upgrade", "").lower():
                raise GatewayError(405, "method_not_allowed", "WebSocket is not served here: send plain HTTP requests")
            if endpoint is not None and endpoint.auth and self.keys:
                x.key = self.keys.caller(request.headers)
                x.entry.key = x.key.name
            return await handler(request)
        except web.HTTPMethodNotAllowed as error:
            return x.error(self._not_allowed(request, sorted(error.allowed_methods)))
        except web.HTTPNotFound:
            return x.error(self._not_found(request))
        except asyncio.CancelledError:
            x.entry.status = 499  # the caller went away
            raise
        except Exception as error:
            return x.error(error)
        finally:
            del request[EXCHANGE]  # the request and its Exchange refer to each other: no cycle left for the GC
            if x.slot is not None:
                await self.pipeline.release(x)
            self._end(x.entry)

    def _begin(self, request: web.Request) -> Entry:
        self.inflight += 1
        self.idle.clear()
        return Entry(request.method, request.path, request_id(request), time.perf_counter())

    def _end(self, entry: Entry) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.idle.set()
        end = time.perf_counter()
        self.metrics.observe_duration(end - entry.start)
        self.metrics.request(entry.route or "", entry.provider or "", entry.model or "", entry.status)
        self.access.write(entry, end)

    # ------------------------------------------------------------------------- no route

    def _door_at(self, path: str) -> Door:
        """The door of a path served with other methods (its error shape for the 405), else chat's."""
        return next((endpoint.door for endpoint in self.endpoints if endpoint.path == path), chat)

    def _not_found(self, request: web.Request) -> GatewayError:
        served: dict[str, list[str]] = {}
        for endpoint in self.endpoints:
            served.setdefault(endpoint.shown, []).append(endpoint.method)
        listed = ", ".join(f"{' '.join(methods)} {path}" for path, methods in served.items())
        return GatewayError(404, "not_found", f"unknown path {request.path!r}: this gateway serves {listed}")

    def _not_allowed(self, request: web.Request, methods: list[str]) -> GatewayError:
        return GatewayError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}",
            headers={"Allow": ", ".join(methods)},
        )

    # ------------------------------------------------------------------------- plain endpoints

    async def health(self, request: web.Request) -> web.Response:
        return health.health(self.draining)

    async def live(self, request: web.Request) -> web.Response:
        return health.live()

    async def ready(self, request: web.Request) -> web.Response:
        return await health.ready(self.config, self.draining, self.state)

    async def metrics_page(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
