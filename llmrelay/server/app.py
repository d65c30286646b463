"""The gateway's HTTP face (SPEC 8.3-8.7): aiohttp.web handlers over the shared core.

The handlers parse and check what the caller sent, choose targets, and hand the work to the providers through
:mod:`llmrelay.client.convert`, :mod:`llmrelay.client.router` and :mod:`llmrelay.errors`; every OpenAI-shape,
retry and error rule lives there, not here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from ..client.convert import ChatCall, StreamShape, chat_call_from_json, completion_dict
from ..client.retry import cap_retry_after
from ..client.router import END, Opened, RateLimitSkip, Skip, failures_text, first_success, is_retryable, open_events
from ..errors import (
    AllProvidersFailedError,
    MissingAuthError,
    PaymentRequiredError,
    RelayError,
    http_status,
)
from ..http.sse import DONE_EVENT, KEEPALIVE_COMMENT, encode_data
from ..responses import Answer, AudioResponse, FinishReason, ImageResponse, ProviderInfo, Reasoning, ToolCalls, Usage
from . import health
from .accesslog import AccessLog, Entry
from .config import Config, GatewayKey, Route, Target, split_model
from .keys import KeyRing, allowed, bearer, widening_field
from .metrics import CONTENT_TYPE, Metrics
from .state import LimitExceeded, MemoryState, State

__all__ = ["Gateway"]

log = logging.getLogger("llmrelay.server")
T = TypeVar("T")

JSON = "application/json"
OWN_KEY = "gateway's own API key"
LISTING_TIMEOUT = 10.0  # seconds one provider may take to list its models
# Paths the gateway serves and their methods (for 405 versus 404).
PATHS = {
    "/v1/chat/completions": ("POST",),
    "/v1/models": ("GET",),
    "/v1/images/generations": ("POST",),
    "/health": ("GET",),
    "/health/live": ("GET",),
    "/health/ready": ("GET",),
    "/metrics": ("GET",),
}
IMAGE_OPTIONS = ("n", "size", "quality", "style", "response_format", "background", "output_format")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """An error the gateway itself answers with (8.4's own rows): status, code, message, param."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _ERROR_TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }


_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def _request_id(request: web.BaseRequest) -> str:
    """The caller's ``x-request-id`` when it is sane, else a new one (a per-process random prefix and a count)."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 200 and given.isprintable() and given.strip() == given:
        return given
    return f"req-{_ID_PREFIX}{next(_ids):x}"


def _header_value(value: str) -> str:
    """A name as a header value: as it is when printable ASCII, else percent-encoded (a line break in a model
    name must not break, or forge, the response head)."""
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe="/:@-._~ ")


def _encode(item: Any) -> list[Any]:
    """One provider event as JSON-able data, for the response cache."""
    if type(item) is str:
        return ["t", item]
    if isinstance(item, Reasoning):
        return ["r", item.token]
    if isinstance(item, ToolCalls):
        return ["c", item.calls]
    if isinstance(item, Usage):
        return ["u", item.to_dict()]
    if isinstance(item, FinishReason):
        return ["f", item.reason]
    if isinstance(item, AudioResponse):
        return ["a", item.data, item.transcript]
    if isinstance(item, ImageResponse):
        return ["m", item.images, item.alt]
    if isinstance(item, ProviderInfo):
        return ["i", item.name, item.model]
    return ["t", str(item)]


def _decode(data: list[Any]) -> Any:
    kind = data[0]
    if kind == "t":
        return data[1]
    if kind == "r":
        return Reasoning(data[1])
    if kind == "c":
        return ToolCalls(data[1])
    if kind == "u":
        return Usage.from_dict(data[1])
    if kind == "f":
        return FinishReason(data[1])
    if kind == "a":
        return AudioResponse(data[1], data[2])
    if kind == "m":
        return ImageResponse(data[1], data[2])
    return ProviderInfo(data[1], data[2], "cache")


_MARK = "\x00llmrelay-text\x00"
_MARK_JSON = orjson.dumps(_MARK)


def _text_template(shape: Any) -> tuple[bytes, bytes]:
    """The SSE event of a text piece, split around the text: built once per stream from the shape's own chunk
    (so the OpenAI-shape rules stay in one place), then only the piece is encoded per event."""
    event = encode_data(orjson.dumps(shape.chunk({"content": _MARK})))
    head, found, tail = event.partition(_MARK_JSON)
    assert found, "the text chunk does not hold its text"
    return head, tail


class _Live:
    """A stream being written, for the keep-alive ticker."""

    __slots__ = ("last", "response", "writing")

    def __init__(self, response: web.StreamResponse, now: float) -> None:
        self.response = response
        self.last = now
        self.writing = False


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
        self.busy: dict[str, int] = {}
        self.turns: dict[str, int] = {}
        self.default_provider = config.default_provider_name()
        self.max_body = int(config.server.max_body_mb * 1024 * 1024)
        self.keepalive_s = config.server.keepalive_s
        self._classes: dict[str, Any] = {}
        self._models: tuple[float, bytes] | None = None
        self._models_lock = asyncio.Lock()
        self._live: set[_Live] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------ application

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body + 1)
        add = app.router.add_route
        add("POST", "/v1/chat/completions", self.chat)
        add("GET", "/v1/models", self.models)
        add("GET", "/v1/models/{model:.+}", self.model)
        add("POST", "/v1/images/generations", self.images)
        add("GET", "/health", self.health)
        add("GET", "/health/live", self.live)
        add("GET", "/health/ready", self.ready)
        add("GET", "/metrics", self.metrics_page)
        add("*", "/{tail:.*}", self.fallback)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self._ticker = asyncio.create_task(self._keepalive_loop())

    async def _stop(self, app: web.Application) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self.state.close()

    # --------------------------------------------------------------------------- plumbing

    def _begin(self, request: web.Request) -> Entry:
        self.inflight += 1
        self.idle.clear()
        return Entry(request.method, request.path, _request_id(request), time.perf_counter())

    def _end(self, entry: Entry) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.idle.set()
        end = time.perf_counter()
        self.metrics.observe_duration(end - entry.start)
        self.metrics.request(entry.route or "", entry.provider or "", entry.model or "", entry.status)
        self.access.write(entry, end)

    def _headers(self, entry: Entry) -> dict[str, str]:
        headers = {"x-request-id": entry.request_id}
        if entry.provider:
            headers["x-llmrelay-provider"] = _header_value(entry.provider)
        if entry.model:
            headers["x-llmrelay-model"] = _header_value(entry.model)
        if entry.cache:
            headers["x-llmrelay-cache"] = entry.cache
        return headers

    def _json(self, entry: Entry, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        entry.status = status
        all_headers = self._headers(entry)
        if headers:
            all_headers.update(headers)
        return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=all_headers)

    def _gateway_error(self, entry: Entry, error: GatewayError) -> web.Response:
        return self._json(entry, error.to_dict(), error.status, error.headers)

    def _error_body(self, error: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, OpenAI error body and extra headers for an error raised while serving (SPEC 8.4)."""
        if isinstance(error, GatewayError):
            return error.status, error.to_dict(), error.headers
        if isinstance(error, AllProvidersFailedError):
            status, body, headers = self._error_body(error.most_informative())
            # The status and code of the most informative failure; the message names every target's own.
            body["error"]["message"] = f"every target failed: {failures_text(error)}"
            return status, body, headers
        if isinstance(error, RelayError):
            status = http_status(error)
            headers = {}
            if status == 429 and error.retry_after is not None and math.isfinite(error.retry_after):
                seconds = min(error.retry_after, self.config.server.max_cooldown_s)
                headers["Retry-After"] = str(max(1, math.ceil(seconds)))
            return status, error.to_dict(), headers
        if isinstance(error, (ValueError, TypeError)):  # a provider refused what it was given
            return 400, GatewayError(400, "invalid_request", str(error)).to_dict(), {}
        log.error("internal error while serving a request", exc_info=error)
        body = GatewayError(500, "internal_error", "the gateway failed; see its log").to_dict()
        body["error"]["type"] = "server_error"
        return 500, body, {}

    def _error(self, entry: Entry, error: BaseException) -> web.Response:
        status, body, headers = self._error_body(error)
        return self._json(entry, body, status, headers)

    def _authenticate(self, request: web.Request, entry: Entry) -> GatewayKey | None:
        if not self.keys:
            return None
        token = bearer(request.headers.get("Authorization"))
        key = self.keys.find(token) if token else None
        if key is None:
            raise GatewayError(
                401,
                "invalid_api_key",
                "no gateway key given: send 'Authorization: Bearer <key>'"
                if token is None
                else "the gateway key is not valid: check the key you send (keys are made with `llmrelay keys new`)",
            )
        entry.key = key.name
        return key

    async def _body(self, request: web.Request) -> Any:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise self._too_large()
        try:
            raw = await asyncio.wait_for(request.read(), self.config.server.read_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        except ConnectionResetError:  # the caller went away while sending its body: nothing to answer, no error
            raise GatewayError(499, "client_closed_request", "the caller closed the connection mid-body") from None
        except asyncio.TimeoutError:
            seconds = self.config.server.read_timeout_s
            raise GatewayError(
                408, "request_timeout", f"the request body did not arrive within {seconds:g} s (read_timeout_s)"
            ) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            what = "empty" if not raw else "not valid JSON"
            raise GatewayError(400, "invalid_json", f"the request body is {what}: send a JSON object") from None

    async def _object_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._body(request)
        if type(body) is not dict:
            raise GatewayError(400, "invalid_json", "the request body must be a JSON object")
        return body

    def _too_large(self) -> GatewayError:
        return GatewayError(
            413,
            "request_too_large",
            f"the request body is larger than max_body_mb = {self.config.server.max_body_mb:g} MB",
        )

    def provider_class(self, name: str) -> Any:
        cls = self._classes.get(name)
        if cls is None:
            cls = self.config.provider(name)
            if cls is None:
                raise GatewayError(
                    404,
                    "model_not_found",
                    f"unknown provider {name!r}: GET /v1/models lists what this gateway serves",
                    "model",
                )
            self._classes[name] = cls
        return cls

    def resolve(self, model: str) -> tuple[Route | None, list[Target]]:
        """A route name → its route; ``provider/model`` → that provider; a bare name → the default provider."""
        route = self.config.routes.get(model)
        if route is not None:
            return route, route.targets
        split = split_model(model)
        target = Target(*split) if split is not None else Target(self.default_provider, model)
        self.provider_class(target.provider)
        return None, [target]

    def _check_model(self, key: GatewayKey | None, route: Route | None, targets: list[Target], model: str) -> None:
        if key is None or key.models is None:
            return
        names = (route.name,) if route is not None else (targets[0].label,)
        if not allowed(key, names):
            raise GatewayError(
                403, "model_not_allowed", f"the key {key.name!r} may not use the model {model!r}", "model"
            )

    async def _admit(self, key: GatewayKey | None) -> str | None:
        if key is None or not key.limited:
            return None
        try:
            return await self.state.admit(key.name, key.rpm, key.tpm, key.max_concurrent)
        except LimitExceeded as error:
            retry = str(max(1, math.ceil(error.retry_after)))
            raise GatewayError(
                429,
                "rate_limit_exceeded",
                f"the key {key.name!r} is over its {error.limit} limit; retry after {retry} s",
                headers={"Retry-After": retry},
            ) from None

    def _order(self, route: Route) -> list[Target]:
        targets = route.targets
        if route.strategy == "round-robin" and len(targets) > 1:
            turn = self.turns.get(route.name, 0)
            self.turns[route.name] = turn + 1
            start = turn % len(targets)
            return targets[start:] + targets[:start]
        if route.strategy == "least-busy" and len(targets) > 1:
            busy = self.busy
            return sorted(targets, key=lambda target: busy.get(target.label, 0))
        return targets

    async def _dispatch(
        self,
        route: Route | None,
        targets: list[Target],
        attempt: Callable[[Target], Awaitable[T]],
        entry: Entry | None = None,
    ) -> T:
        """Run ``attempt`` on the single target, or on a route's targets per its strategy with cooldowns and
        retries; ``entry`` keeps the provider of the last target tried (a failed request names it too)."""
        cap = self.config.server.max_cooldown_s
        metrics = self.metrics

        async def tried(target: Target) -> T:
            if entry is not None:
                entry.provider, entry.model = target.provider, target.model or None
            try:
                return await attempt(target)
            except RelayError as error:
                cap_retry_after(error, cap)
                raise

        if route is None:
            try:
                return await tried(targets[0])
            except RelayError as error:
                metrics.upstream_error(targets[0].provider, error)
                raise
        state = self.state

        async def before_attempt(target: Target) -> None:
            left = await state.cooling(target.label)
            if left > 0:
                metrics.cooldown_skip(target.label)
                if await state.rate_limited(target.label):
                    raise RateLimitSkip(
                        f"{target.label} is rate limited for {math.ceil(left)} s more", retry_after=left
                    )
                raise Skip(f"{target.label} is cooling down for {math.ceil(left)} s more after failing")

        async def after_error(target: Target, error: BaseException) -> None:
            if isinstance(error, RelayError):
                metrics.upstream_error(target.provider, error)
            if is_retryable(error):
                retry_after = getattr(error, "retry_after", None)
                await state.failed(target.label, route.cooldown_after, route.cooldown_s, retry_after)

        async def on_success(target: Target) -> None:
            await state.succeeded(target.label)

        return await first_success(
            self._order(route),
            tried,
            name=lambda target: target.label,
            fall_back=is_retryable,  # SPEC 8.6: only a retryable error moves on to the next target
            before_attempt=before_attempt,
            after_error=after_error,
            on_success=on_success,
            max_retries=route.retries,
            max_retry_after=cap,
            on_retry=lambda target: metrics.retry(route.name),
        )

    def _own_credentials(self, error: RelayError, target: Target, cls: Any) -> None:
        """Upstream 401/402: the gateway's own upstream key is at fault, never the caller's: say which."""
        if isinstance(error, (MissingAuthError, PaymentRequiredError)) and OWN_KEY not in error.message:
            what = "has no credit left for" if isinstance(error, PaymentRequiredError) else "refused"
            error.message = (
                f"the upstream {target.provider} {what} the {OWN_KEY} ({cls.get_api_key_env()}); "
                f"the gateway's operator must fix it: {error.message}"
            )

    def _options(self, provider: str, options: dict[str, Any]) -> dict[str, Any]:
        extra = self.config.provider_options.get(provider)
        return {**extra, **options} if extra else options

    # --------------------------------------------------------------------------- handlers

    async def chat(self, request: web.Request) -> web.StreamResponse:
        entry = self._begin(request)
        slot: str | None = None
        key: GatewayKey | None = None
        try:
            try:
                key = self._authenticate(request, entry)
                body = await self._object_body(request)
                call = chat_call_from_json(body)
                route, targets = self.resolve(call.model)
                entry.route = route.name if route is not None else None
                if route is None:
                    entry.provider, entry.model = targets[0].provider, targets[0].model or None
                self._check_model(key, route, targets, call.model)
                widening = widening_field(key, call.options)
                if widening is not None and key is not None:
                    raise GatewayError(
                        403,
                        "model_not_allowed",
                        f"the key {key.name!r} is limited to some models, so it may not send {widening!r} "
                        "(it lets the upstream choose other models)",
                        widening,
                    )
                slot = await self._admit(key)
            except (GatewayError, RelayError) as error:
                return self._error(entry, error)
            cache_key = None
            if route is not None and route.cache_ttl_s > 0:
                cache_key = self._cache_key(route, body, key)
                # Cache-Control: no-cache asks for a fresh answer (which then replaces the cached one).
                if "no-cache" not in request.headers.get("cache-control", "").lower():
                    cached = await self.state.cache_get(cache_key)
                    if cached is not None:
                        entry.cache = "hit"
                        self.metrics.cache_result("hit")
                        return await self._replay(request, entry, call, cached)
                entry.cache = "miss"
                self.metrics.cache_result("miss")
            if call.stream:
                return await self._stream(request, entry, call, route, targets, key, cache_key)
            return await self._complete(entry, call, route, targets, key, cache_key)
        except asyncio.CancelledError:
            entry.status = 499  # the caller went away
            raise
        finally:
            if slot is not None and key is not None:
                await self.state.release(key.name, slot)
            self._end(entry)

    def _cache_key(self, route: Route, body: dict[str, Any], key: GatewayKey | None) -> str:
        params = {name: value for name, value in body.items() if name not in ("stream", "stream_options", "user")}
        scope = "" if route.cache_shared or key is None else key.name
        digest = hashlib.sha256(
            b"%s\0%s\0%s" % (route.name.encode(), scope.encode(), orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
        )
        return "llmrelay:cache:" + digest.hexdigest()

    async def _account(
        self, entry: Entry, key: GatewayKey | None, provider: str, model: str, usage: Usage | None
    ) -> None:
        if usage is None:
            return
        entry.tokens = usage.total_tokens
        self.metrics.add_tokens(provider, model, usage.prompt_tokens, usage.completion_tokens)
        if key is not None and key.tpm is not None:
            await self.state.add_tokens(key.name, usage.total_tokens)

    async def _complete(
        self,
        entry: Entry,
        call: ChatCall,
        route: Route | None,
        targets: list[Target],
        key: GatewayKey | None,
        cache_key: str | None,
    ) -> web.Response:
        recorded: list[list[Any]] | None = [] if cache_key is not None else None

        async def attempt(target: Target) -> tuple[Target, Answer]:
            cls = self.provider_class(target.provider)
            label = target.label
            self.busy[label] = self.busy.get(label, 0) + 1
            answer = Answer()
            try:
                async for item in cls.create_async_generator(
                    target.model, call.messages, stream=False, **self._options(target.provider, call.options)
                ):
                    answer.add(item)
                    if recorded is not None:
                        recorded.append(_encode(item))
            except RelayError as error:
                if recorded is not None:
                    recorded.clear()
                self._own_credentials(error, target, cls)
                raise
            finally:
                self.busy[label] -= 1
            return target, answer

        try:
            target, answer = await self._dispatch(route, targets, attempt, entry)
        except Exception as error:
            return self._error(entry, error)
        reported = answer.info.model if answer.info is not None and answer.info.model else target.model
        entry.provider, entry.model = target.provider, reported
        await self._account(entry, key, target.provider, reported, answer.usage)
        response = self._json(entry, completion_dict(answer, reported or call.model))
        if cache_key is not None and recorded is not None and route is not None:
            await self.state.cache_put(
                cache_key, orjson.dumps({"p": target.provider, "e": recorded}), route.cache_ttl_s
            )
        return response

    async def _replay(self, request: web.Request, entry: Entry, call: ChatCall, cached: bytes) -> web.StreamResponse:
        data = orjson.loads(cached)
        events = [_decode(item) for item in data["e"]]
        info = next((item for item in events if isinstance(item, ProviderInfo)), None)
        entry.provider = data["p"]
        entry.model = info.model if info is not None else None
        if not call.stream:
            answer = Answer()
            for item in events:
                answer.add(item)
            if answer.usage is not None:
                entry.tokens = answer.usage.total_tokens
            return self._json(entry, completion_dict(answer, entry.model or call.model))
        rest = [item for item in events if not isinstance(item, ProviderInfo)]
        shape = StreamShape(info, entry.model or call.model, data["p"], call.include_usage)
        response = await self._open_stream(request, entry)
        dumps = orjson.dumps
        chunks = shape.start(rest[0]) if rest else [shape.chunk(shape.role_delta(""))]
        for item in rest[1:]:
            delta = shape.delta(item)
            if delta is not None:
                chunks.append(shape.chunk(delta))
        chunks.extend(shape.end())
        try:
            await response.write_eof(b"".join([encode_data(dumps(chunk)) for chunk in chunks]) + DONE_EVENT)
        except ConnectionResetError:
            entry.status = 499
        return response

    async def _open_stream(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        entry.status = 200
        headers = self._headers(entry)
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        return response

    async def _stream(
        self,
        request: web.Request,
        entry: Entry,
        call: ChatCall,
        route: Route | None,
        targets: list[Target],
        key: GatewayKey | None,
        cache_key: str | None,
    ) -> web.StreamResponse:
        async def attempt(target: Target) -> tuple[Target, Opened]:
            cls = self.provider_class(target.provider)
            label = target.label
            self.busy[label] = self.busy.get(label, 0) + 1
            try:
                return target, await open_events(
                    cls, target.model, call.messages, self._options(target.provider, call.options)
                )
            except BaseException as error:
                self.busy[label] -= 1
                if isinstance(error, RelayError):
                    self._own_credentials(error, target, cls)
                raise

        try:
            target, opened = await self._dispatch(route, targets, attempt, entry)
        except Exception as error:
            return self._error(entry, error)
        label = target.label
        try:
            info = opened.info
            reported = info.model if info is not None and info.model else target.model
            entry.provider, entry.model = target.provider, reported
            shape = StreamShape(info, reported or call.model, target.provider, call.include_usage)
            response = await self._open_stream(request, entry)
            live = _Live(response, time.monotonic())
            self._live.add(live)
            recorded: list[list[Any]] | None = None
            if cache_key is not None:
                recorded = [_encode(info)] if info is not None else []
            try:
                await self._pump(entry, opened, shape, live, recorded)
            finally:
                self._live.discard(live)
            if entry.status == 200:
                await self._account(entry, key, target.provider, reported, shape.usage)
                if recorded is not None and cache_key is not None and route is not None:
                    await self.state.cache_put(
                        cache_key, orjson.dumps({"p": target.provider, "e": recorded}), route.cache_ttl_s
                    )
            return response
        finally:
            self.busy[label] -= 1
            await opened.aclose()

    async def _pump(
        self, entry: Entry, opened: Opened, shape: Any, live: _Live, recorded: list[list[Any]] | None
    ) -> None:
        """Write the answer as it arrives: one SSE event per upstream event, then ``[DONE]``."""
        response = live.response
        write = response.write
        dumps = orjson.dumps
        chunk = shape.chunk
        delta_of = shape.delta
        clock = time.monotonic
        first = opened.first
        try:
            # What arrived together goes out in one write (the role chunk with the first piece; the finish and
            # usage chunks with [DONE] and the end of the body); every piece is still its own SSE event.
            chunks = shape.start(first) if first is not END else [chunk(shape.role_delta(""))]
            if recorded is not None and first is not END:
                recorded.append(_encode(first))
            await write(b"".join([encode_data(dumps(item)) for item in chunks]))
            live.last = clock()
            self.metrics.observe_ttft(time.perf_counter() - entry.start)
            head, tail_bytes = _text_template(shape)
            async for item in opened.events:
                if recorded is not None:
                    recorded.append(_encode(item))
                if type(item) is str:  # the hot path: the shape's own text chunk, with only the text encoded
                    await write(head + dumps(item) + tail_bytes)
                else:
                    delta = delta_of(item)
                    if delta is None:
                        continue
                    await write(encode_data(dumps(chunk(delta))))
                live.last = clock()
            tail = [encode_data(dumps(item)) for item in shape.end()]
            tail.append(DONE_EVENT)
            await response.write_eof(b"".join(tail))
        except ConnectionResetError:
            entry.status = 499  # the caller went away: the upstream is closed by the caller of _pump
        except Exception as error:
            # After the first byte the status line is gone: the error goes in-band, and no [DONE] follows.
            if isinstance(error, RelayError):
                self.metrics.upstream_error(entry.provider or "", error)
            status, body, _ = self._error_body(error)
            entry.status = status
            try:
                await write(encode_data(dumps(body)))
                await response.write_eof()
            except ConnectionResetError:
                pass

    async def _keepalive_loop(self) -> None:
        """Send ``: keep-alive`` to every stream whose upstream has been silent for ``keepalive_s``."""
        interval = self.keepalive_s
        tick = min(1.0, interval / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for live in list(self._live):
                if not live.writing and now - live.last >= interval:
                    live.writing = True
                    live.last = now
                    task = asyncio.create_task(self._keepalive(live))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _keepalive(self, live: _Live) -> None:
        try:
            await live.response.write(KEEPALIVE_COMMENT)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            live.writing = False

    # ------------------------------------------------------------------------- the rest

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

    async def fallback(self, request: web.Request) -> web.Response:
        entry = self._begin(request)
        try:
            methods = PATHS.get(request.path) or (("GET",) if request.path.startswith("/v1/models/") else None)
            if methods is None:
                error = GatewayError(
                    404,
                    "not_found",
                    f"unknown path {request.path!r}: this gateway serves "
                    + ", ".join(f"{' '.join(m)} {p}" for p, m in PATHS.items()),
                )
            else:
                error = GatewayError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}",
                    headers={"Allow": ", ".join(methods)},
                )
            return self._gateway_error(entry, error)
        finally:
            self._end(entry)

    async def _listing(self) -> bytes:
        cached = self._models
        ttl = self.config.server.models_ttl_s
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        async with self._models_lock:
            cached = self._models
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            data = await self._list_models()
            body = orjson.dumps({"object": "list", "data": data})
            self._models = (time.monotonic(), body)
            return body

    async def _list_models(self) -> list[dict[str, Any]]:
        now = int(time.time())
        entries = [
            {"id": name, "object": "model", "created": now, "owned_by": "llmrelay"} for name in self.config.routes
        ]
        names = list(self.config.providers)
        results = await asyncio.gather(*(self._provider_models(name) for name in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("listing the models of %s failed: %s", name, result)
                continue
            entries.extend(
                {"id": f"{name}/{model}", "object": "model", "created": now, "owned_by": name} for model in result
            )
        return entries

    async def _provider_models(self, name: str) -> list[str]:
        cls = self.config.providers[name]
        if name == "local":
            from ..providers import local

            if local.running_server() is None:  # do not start the embedded model just to list it
                return list(cls.fallback_models)
        models = await asyncio.wait_for(cls.get_models_async(timeout=LISTING_TIMEOUT), LISTING_TIMEOUT)
        return list(models)

    async def models(self, request: web.Request) -> web.Response:
        entry = self._begin(request)
        try:
            self._authenticate(request, entry)
            body = await self._listing()
            entry.status = 200
            return web.Response(body=body, content_type=JSON, headers=self._headers(entry))
        except GatewayError as error:
            return self._gateway_error(entry, error)
        finally:
            self._end(entry)

    async def model(self, request: web.Request) -> web.Response:
        entry = self._begin(request)
        try:
            key = self._authenticate(request, entry)
            model_id = request.match_info["model"]
            listing = orjson.loads(await self._listing())
            for item in listing["data"]:
                if item["id"] == model_id:
                    route, targets = self.resolve(model_id)
                    self._check_model(key, route, targets, model_id)
                    return self._json(entry, item)
            raise GatewayError(
                404,
                "model_not_found",
                f"the model {model_id!r} is not served here: GET /v1/models lists what is",
                "model",
            )
        except GatewayError as error:
            return self._gateway_error(entry, error)
        finally:
            self._end(entry)

    async def images(self, request: web.Request) -> web.Response:
        entry = self._begin(request)
        slot: str | None = None
        key: GatewayKey | None = None
        try:
            try:
                key = self._authenticate(request, entry)
                body = await self._object_body(request)
                prompt = body.get("prompt")
                if type(prompt) is not str or not prompt:
                    raise GatewayError(
                        400, "invalid_request", "'prompt' is required and must be a non-empty string", "prompt"
                    )
                model = body.get("model") or ""
                if type(model) is not str:
                    raise GatewayError(400, "invalid_request", "'model' must be a string", "model")
                route, targets = self.resolve(model) if model else (None, [Target(self.default_provider, "")])
                entry.route = route.name if route is not None else None
                self._check_model(key, route, targets, model)
                slot = await self._admit(key)
            except (GatewayError, RelayError) as error:
                return self._error(entry, error)
            options = {name: body[name] for name in IMAGE_OPTIONS if body.get(name) is not None}
            extra = {
                name: value
                for name, value in body.items()
                if name not in (*IMAGE_OPTIONS, "model", "prompt", "user") and value is not None
            }

            async def attempt(target: Target) -> tuple[Target, dict[str, Any]]:
                cls = self.provider_class(target.provider)
                try:
                    timeout = self._options(target.provider, {}).get("timeout")
                    return target, await cls.generate_images_async(
                        prompt, target.model, timeout=timeout, extra_data=extra or None, **options
                    )
                except RelayError as error:
                    self._own_credentials(error, target, cls)
                    raise

            try:
                target, data = await self._dispatch(route, targets, attempt, entry)
            except Exception as error:
                return self._error(entry, error)
            entry.provider = target.provider
            entry.model = target.model or None
            data.setdefault("created", int(time.time()))
            return self._json(entry, data)
        except asyncio.CancelledError:
            entry.status = 499
            raise
        finally:
            if slot is not None and key is not None:
                await self.state.release(key.name, slot)
            self._end(entry)
