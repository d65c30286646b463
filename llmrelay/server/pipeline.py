"""The door-neutral pipeline every door uses (SPEC 8.3-8.7, 9.1.1).

resolve the model (8.3) → check the key's ``models`` → admit (limits) → cache → dispatch (order, cooldowns,
failover, own-credential wording) → account → cache put → release. It knows no API shape: a door hands it a
:class:`~llmrelay.server.doors.DoorRequest` and renders what comes back (:mod:`llmrelay.server.doors`).

Operations: :meth:`Pipeline.chat` (the chat call, JSON or stream, cached), :meth:`Pipeline.call` (a one-shot
provider operation: images, embeddings) and :meth:`Pipeline.check` (model resolution and the key's ``models``
only, for doors that do no chat: count_tokens, ``GET /v1/models/{id}``).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from ..client.convert import RESERVED_FIELDS, ChatCall
from ..client.retry import MAX_RETRY_AFTER, cap_retry_after
from ..client.router import (
    Opened,
    RateLimitSkip,
    Skip,
    complete_events,
    first_success,
    is_retryable,
    open_events,
)
from ..errors import MissingAuthError, PaymentRequiredError, RelayError
from ..responses import Answer, ProviderInfo, Usage, event_from_cache, event_to_cache
from .config import Config, GatewayKey, ProviderClass, Route, Target, split_model
from .doors import ChatDoor, DoorRequest
from .exchange import Exchange
from .keys import allowed, widening_field
from .metrics import Metrics
from .problems import GatewayError
from .state import LimitExceeded, State
from .stream import StreamWriter

__all__ = ["Finished", "Handler", "Pipeline", "Plan", "chat_handler"]

T = TypeVar("T")
OWN_KEY = "gateway's own API key"
RESOLVED_KEPT = 4096  # resolved model names kept per pipeline
MAX_MODEL_LENGTH = 256  # characters of a requested model name (route, provider/model or bare name)
# What a chat handler may be told once an answer is complete: (the whole answer, the model that answered).
Finished = Callable[[Answer, str], Awaitable[None]]
# A door's handler: what the route table calls once the middleware made the Exchange (and checked the key).
Handler = Callable[["Pipeline", Exchange], Awaitable[web.StreamResponse]]
# Call parameters that never change an answer: not part of the cache key (8.7).
_NOT_CACHED = ("stream_options", "user")
# Output limits lowered to a target's cap (9.1.7); all named "max_tokens>N" in x-llmrelay-ignored.
_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@functools.lru_cache(maxsize=4096)  # model names come from callers: bounded
def _alias(aliases: tuple[tuple[str, str], ...], model: str) -> str:
    """The ``[aliases]`` target of ``model``: the first exact name or glob that matches (9.1.6), else ``model``."""
    for pattern, target in aliases:
        if fnmatch.fnmatchcase(model, pattern):
            return target
    return model


def _over(holder: Any, cap: int) -> dict[str, int]:
    if not isinstance(holder, dict):
        return {}
    return {name: cap for name in _LIMITS if type(holder.get(name)) is int and holder[name] > cap}


def _lowered(options: dict[str, Any], cap: int) -> dict[str, Any] | None:
    """``options`` with every output limit above ``cap`` lowered to it (top level and ``extra_data``); ``None``
    when none was above."""
    extra = options.get("extra_data")
    top, inner = _over(options, cap), _over(extra, cap)
    if not top and not inner:
        return None
    options = {**options, **top}
    if inner:
        options["extra_data"] = {**(extra or {}), **inner}
    return options


class Plan:
    """Where a requested model goes: its route (``None`` for ``provider/model`` or a bare name) and targets."""

    __slots__ = ("route", "targets")

    def __init__(self, route: Route | None, targets: list[Target]) -> None:
        self.route = route
        self.targets = targets


def chat_handler(door: ChatDoor) -> Handler:
    """The handler of a plain chat-like door: read the body, ``door.parse`` it, run :meth:`Pipeline.chat`."""

    async def handle(pipeline: Pipeline, x: Exchange) -> web.StreamResponse:
        return await pipeline.chat(x, door, door.parse(await x.body()))

    return handle


def _fold(events: list[Any]) -> Answer:
    answer = Answer()
    for item in events:
        answer.add(item)
    return answer


class Pipeline:
    """The steps every request goes through, shared by all doors; one per gateway process."""

    def __init__(self, config: Config, state: State, metrics: Metrics, writer: StreamWriter) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics
        self.writer = writer
        self.busy: dict[str, int] = {}  # in-flight requests per target label (least-busy)
        self.turns: dict[str, int] = {}  # round-robin turn per route
        self.default_provider = config.default_provider_name()
        self._classes: dict[str, ProviderClass] = {}
        self._resolved: dict[tuple[str, str], tuple[Route | None, list[Target]]] = {}

    # ---------------------------------------------------------------------------- operations

    async def chat(
        self, x: Exchange, door: ChatDoor, req: DoorRequest, finished: Finished | None = None
    ) -> web.StreamResponse:
        """The chat call of ``req`` through every step; answered in ``door``'s shape (JSON, or SSE when
        ``req.call.stream``). ``finished`` (optional) gets the whole answer once it is complete (not on errors or
        a caller that hung up)."""
        call = req.call
        if req.ignored:
            self._ignore(x, req)
        plan = self.check(x, call.model)
        self._check_fields(x, call)
        if x.key is not None and x.key.limited:
            await self.admit(x)
        cache_key = None
        route = plan.route
        if route is not None and route.cache_ttl_s > 0:
            cache_key = self.cache_key(route, call, x.key)
            # Cache-Control: no-cache asks for a fresh answer (which then replaces the cached one).
            if "no-cache" not in x.request.headers.get("cache-control", "").lower():
                cached = await self.state.cache_get(cache_key)
                if cached is not None:
                    x.entry.cache = "hit"
                    self.metrics.cache_result("hit")
                    return await self._replay(x, door, req, cached, finished)
            x.entry.cache = "miss"
            self.metrics.cache_result("miss")
        if call.stream:
            return await self._stream(x, door, req, plan, cache_key, finished)
        return await self._complete(x, door, req, plan, cache_key, finished)

    async def call(
        self, x: Exchange, model: str, invoke: Callable[[ProviderClass, Target, dict[str, Any]], Awaitable[T]]
    ) -> tuple[Target, T]:
        """A one-shot provider operation (images, embeddings): ``invoke(provider class, target, options)`` per
        target, with the key check, limits, order, cooldowns and failover of a chat call (no cache, no stream).
        ``options`` are the target provider's configured ``timeout`` / ``total_timeout``."""
        plan = self.check(x, model)
        await self.admit(x)

        async def attempt(target: Target) -> tuple[Target, T]:
            cls = self.provider_class(target.provider)
            try:
                return target, await invoke(cls, target, self.provider_options(target.provider, {}))
            except RelayError as error:
                self._own_credentials(error, target, cls)
                raise

        target, result = await self.dispatch(plan.route, plan.targets, attempt, x)
        x.entry.provider = target.provider
        x.entry.model = target.model or None
        return target, result

    def check(self, x: Exchange, model: str) -> Plan:
        """Resolve ``model`` (8.3) and check the caller's key may use it (403); fills the log entry's route (and
        provider/model for a single target). No limits, no upstream call."""
        if len(model) > MAX_MODEL_LENGTH:  # a caller's name goes into headers, the log and (bounded) metrics
            raise GatewayError(400, "invalid_request", f"'model' is longer than {MAX_MODEL_LENGTH} characters", "model")
        route, targets = self.resolve(model)
        entry = x.entry
        entry.route = route.name if route is not None else None
        if route is None:
            entry.provider, entry.model = targets[0].provider, targets[0].model or None
        key = x.key
        if key is not None and key.models is not None:
            names = (route.name,) if route is not None else (targets[0].label,)
            if not allowed(key, names):
                raise GatewayError(
                    403, "model_not_allowed", f"the key {key.name!r} may not use the model {model!r}", "model"
                )
        return Plan(route, targets)

    def _check_fields(self, x: Exchange, call: ChatCall) -> None:
        """Through any door, the upstream gets the authorised model and messages: no pass-through field may replace
        them (400); and a key limited to some models may not send fields that let the upstream choose others (403)."""
        extra = call.options.get("extra_data") or {}
        for name in RESERVED_FIELDS:
            if name in extra:
                raise GatewayError(400, "invalid_request", f"the body may not set {name!r} outside its own field", name)
        key = x.key
        field = widening_field(key, call.options)
        if field is not None and key is not None:
            raise GatewayError(
                403,
                "model_not_allowed",
                f"the key {key.name!r} is limited to some models, so it may not send {field!r} "
                "(it lets the upstream choose other models)",
                field,
            )

    # --------------------------------------------------------------------------------- steps

    def _ignore(self, x: Exchange, req: DoorRequest) -> None:
        """Name what the door dropped (9.1.4), or refuse it when ``[server] strict_fields = true``."""
        if self.config.server.strict_fields:
            param = req.ignored_params[0]
            raise GatewayError(
                400,
                "unknown_parameter",
                f"the field {param!r} is not supported here and this gateway refuses unsupported fields "
                "([server] strict_fields = true): remove it",
                param,
            )
        x.ignored.extend(req.ignored)

    def provider_class(self, name: str) -> ProviderClass:
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
        """``[aliases]`` first (9.1.6); then a route name → its route; ``provider/model`` → that provider; a bare
        name → the default provider. Kept per name (the configuration of a pipeline does not change)."""
        key = (model, self.default_provider)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolve(model)
            if len(self._resolved) >= RESOLVED_KEPT:  # model names come from callers: bounded
                self._resolved.clear()
            self._resolved[key] = found
        return found

    def _resolve(self, model: str) -> tuple[Route | None, list[Target]]:
        if self.config.aliases:
            model = _alias(self.config.aliases, model)
        route = self.config.routes.get(model)
        if route is not None:
            return route, route.targets
        split = split_model(model)
        target = Target(*split) if split is not None else Target(self.default_provider, model)
        self.provider_class(target.provider)
        return None, [target]

    async def admit(self, x: Exchange) -> None:
        """Take a place under the key's rpm / tpm / max_concurrent (429); the middleware releases it."""
        key = x.key
        if key is None or not key.limited:
            return
        try:
            x.slot = await self.state.admit(key.name, key.rpm, key.tpm, key.max_concurrent)
        except LimitExceeded as error:
            retry = str(max(1, math.ceil(error.retry_after)))
            raise GatewayError(
                429,
                "rate_limit_exceeded",
                f"the key {key.name!r} is over its {error.limit} limit; retry after {retry} s",
                headers={"Retry-After": retry},
            ) from None

    async def release(self, x: Exchange) -> None:
        if x.slot is not None and x.key is not None:
            slot, x.slot = x.slot, None
            await self.state.release(x.key.name, slot)

    def cache_key(self, route: Route, call: ChatCall, key: GatewayKey | None) -> str:
        """The translated call (not a door's body), so that equal questions hit through any door (9.1.1)."""
        options = {name: value for name, value in call.options.items() if name not in _NOT_CACHED}
        extra = options.get("extra_data")
        if extra:
            options["extra_data"] = {name: value for name, value in extra.items() if name not in _NOT_CACHED}
        scope = "" if route.cache_shared or key is None else key.name
        question = orjson.dumps({"m": call.messages, "o": options}, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(b"%s\0%s\0%s" % (route.name.encode(), scope.encode(), question))
        return "llmrelay:cache:" + digest.hexdigest()

    def provider_options(self, provider: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the provider's configured ``timeout`` / ``total_timeout`` under them."""
        extra = self.config.provider_options.get(provider)
        return {**extra, **options} if extra else options

    def target_call(self, route: Route | None, target: Target, call: ChatCall) -> tuple[dict[str, Any], list[str]]:
        """The keywords of ``call`` for one target, and what the target's rules changed (for x-llmrelay-ignored):
        output limits lowered to the target's cap (9.1.7), ``reasoning_effort`` dropped where the provider does
        not take it (9.1.8)."""
        options = call.options
        notes: list[str] = []
        if options:
            cls = self.provider_class(target.provider)
            cap = self._cap(route, cls)
            lowered = _lowered(options, cap) if cap is not None else None
            if lowered is not None:
                options = lowered
                notes.append(f"max_tokens>{cap}")
            if "reasoning_effort" in options and not cls.accepts_reasoning_effort:
                options = {name: value for name, value in options.items() if name != "reasoning_effort"}
                notes.append("reasoning_effort")
        return self.provider_options(target.provider, options), notes

    @staticmethod
    def _cap(route: Route | None, cls: ProviderClass) -> int | None:
        """The smaller of the route's ``max_tokens_cap`` and the provider's (configured, else known)."""
        caps = [cap for cap in (route.max_tokens_cap if route else None, cls.get_max_tokens_cap()) if cap]
        return min(caps) if caps else None

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

    async def dispatch(
        self,
        route: Route | None,
        targets: list[Target],
        attempt: Callable[[Target], Awaitable[T]],
        x: Exchange | None = None,
    ) -> T:
        """Run ``attempt`` on the single target, or on a route's targets per its strategy with cooldowns and
        retries; ``x``'s log entry keeps the provider of the last target tried (a failed request names it too, SPEC
        8.3). An upstream's ``retry_after`` counts for at most ``max_cooldown_s``: in cooldowns, in what the caller
        is told, and for retries (where a longer one is not waited for: the route moves on)."""
        cap = self.config.server.max_cooldown_s
        state, metrics = self.state, self.metrics

        async def tried(target: Target) -> T:
            if x is not None:
                x.entry.provider, x.entry.model = target.provider, target.model or None
            return await attempt(target)

        if route is None:
            try:
                return await tried(targets[0])
            except RelayError as error:
                metrics.upstream_error(targets[0].provider, error)
                cap_retry_after(error, cap)
                raise

        async def after_error(target: Target, error: BaseException) -> None:
            if isinstance(error, RelayError):
                metrics.upstream_error(target.provider, error)
            if is_retryable(error):
                retry_after = getattr(error, "retry_after", None)
                if retry_after is not None:
                    retry_after = min(retry_after, cap)
                await state.failed(target.label, route.cooldown_after, route.cooldown_s, retry_after)

        async def on_success(target: Target) -> None:
            await state.succeeded(target.label)

        try:
            return await first_success(
                self._order(route),
                tried,
                name=lambda target: target.label,
                fall_back=is_retryable,  # SPEC 8.6: only a retryable error moves on to the next target
                before_attempt=self._skip_cooling,
                after_error=after_error,
                on_success=on_success,
                max_retries=route.retries,
                max_retry_after=min(cap, MAX_RETRY_AFTER),
                on_retry=lambda target: metrics.retry(route.name),
            )
        except RelayError as error:
            cap_retry_after(error, cap)
            raise

    def _idle(self, label: str) -> None:
        """One request fewer on a target; no entry left at 0 (a caller names models: the dict must not grow)."""
        left = self.busy[label] - 1
        if left:
            self.busy[label] = left
        else:
            del self.busy[label]

    async def _skip_cooling(self, target: Target) -> None:
        """Leave out a target that is cooling down: a rate limit when an upstream's Retry-After started it."""
        left = await self.state.cooling(target.label)
        if left > 0:
            self.metrics.cooldown_skip(target.label)
            if await self.state.rate_limited(target.label):
                raise RateLimitSkip(f"{target.label} is rate limited for {math.ceil(left)} s more", retry_after=left)
            raise Skip(f"{target.label} is cooling down for {math.ceil(left)} s more after failing")

    def _own_credentials(self, error: RelayError, target: Target, cls: Any) -> None:
        """Upstream 401/402: the gateway's own upstream key is at fault, never the caller's: say which."""
        if isinstance(error, (MissingAuthError, PaymentRequiredError)) and OWN_KEY not in error.message:
            what = "has no credit left for" if isinstance(error, PaymentRequiredError) else "refused"
            error.message = (
                f"the upstream {target.provider} {what} the {OWN_KEY} ({cls.get_api_key_env()}); "
                f"the gateway's operator must fix it: {error.message}"
            )

    async def account(self, x: Exchange, provider: str, model: str, usage: Usage | None) -> None:
        """Count the tokens of an answer: the log entry, the metrics, the key's tpm."""
        if usage is None:
            return
        x.entry.tokens = usage.total_tokens
        self.metrics.add_tokens(provider, model, usage.prompt_tokens, usage.completion_tokens)
        key = x.key
        if key is not None and key.tpm is not None:
            await self.state.add_tokens(key.name, usage.total_tokens)

    async def _cache_put(self, key: str, route: Route, provider: str, notes: list[str], events: list[Any]) -> None:
        record: dict[str, Any] = {"p": provider, "e": [event_to_cache(item) for item in events]}
        if notes:
            record["g"] = notes
        await self.state.cache_put(key, orjson.dumps(record), route.cache_ttl_s)

    # ----------------------------------------------------------------------------- the chat call

    async def _complete(
        self,
        x: Exchange,
        door: ChatDoor,
        req: DoorRequest,
        plan: Plan,
        cache_key: str | None,
        finished: Finished | None,
    ) -> web.StreamResponse:
        call = req.call
        keep = cache_key is not None

        async def attempt(target: Target) -> tuple[Target, Answer, list[Any], list[str]]:
            cls = self.provider_class(target.provider)
            options, notes = self.target_call(plan.route, target, call)
            label = target.label
            self.busy[label] = self.busy.get(label, 0) + 1
            answer = Answer()
            kept: list[Any] = []
            try:
                events = await complete_events(cls, target.model, call.messages, options)
                for item in events:
                    answer.add(item)
                if keep:
                    kept = events
            except RelayError as error:
                self._own_credentials(error, target, cls)
                raise
            finally:
                self._idle(label)
            return target, answer, kept, notes

        target, answer, kept, notes = await self.dispatch(plan.route, plan.targets, attempt, x)
        x.ignored.extend(notes)
        reported = answer.info.model if answer.info is not None and answer.info.model else target.model
        x.entry.provider, x.entry.model = target.provider, reported
        await self.account(x, target.provider, reported, answer.usage)
        response = x.json(door.answer(req, answer, reported or call.model))
        if cache_key is not None and plan.route is not None:
            await self._cache_put(cache_key, plan.route, target.provider, notes, kept)
        if finished is not None:
            await finished(answer, reported or call.model)
        return response

    async def _stream(
        self,
        x: Exchange,
        door: ChatDoor,
        req: DoorRequest,
        plan: Plan,
        cache_key: str | None,
        finished: Finished | None,
    ) -> web.StreamResponse:
        call = req.call

        async def attempt(target: Target) -> tuple[Target, Opened, list[str]]:
            cls = self.provider_class(target.provider)
            options, notes = self.target_call(plan.route, target, call)
            if "tools" in options:  # the doors stream each call's arguments as they arrive
                options = {**options, "tool_call_pieces": True}
            label = target.label
            self.busy[label] = self.busy.get(label, 0) + 1
            try:
                return target, await open_events(cls, target.model, call.messages, options), notes
            except BaseException as error:
                self._idle(label)
                if isinstance(error, RelayError):
                    self._own_credentials(error, target, cls)
                raise

        target, opened, notes = await self.dispatch(plan.route, plan.targets, attempt, x)
        x.ignored.extend(notes)
        try:
            info = opened.info
            reported = info.model if info is not None and info.model else target.model
            x.entry.provider, x.entry.model = target.provider, reported
            renderer = door.renderer(req, info, reported or call.model)
            kept: list[Any] | None = None
            if cache_key is not None or finished is not None:
                kept = [info] if info is not None else []
            response, usage = await self.writer.pump(x, opened, renderer, kept)
            if x.entry.status == 200:
                await self.account(x, target.provider, reported, usage)
                if kept is not None and cache_key is not None and plan.route is not None:
                    await self._cache_put(cache_key, plan.route, target.provider, notes, kept)
                if kept is not None and finished is not None:
                    await finished(_fold(kept), reported or call.model)
            return response
        finally:
            self._idle(target.label)
            await opened.aclose()

    async def _replay(
        self, x: Exchange, door: ChatDoor, req: DoorRequest, cached: bytes, finished: Finished | None
    ) -> web.StreamResponse:
        call = req.call
        data = orjson.loads(cached)
        events = [event_from_cache(item) for item in data["e"]]
        info = next((item for item in events if isinstance(item, ProviderInfo)), None)
        x.entry.provider = data["p"]
        x.entry.model = info.model if info is not None else None
        x.ignored.extend(data.get("g", ()))
        model = x.entry.model or call.model
        response: web.StreamResponse
        if call.stream:
            rest = [item for item in events if not isinstance(item, ProviderInfo)]
            response = await self.writer.replay(x, door.renderer(req, info, model), rest)
        else:
            answer = _fold(events)
            if answer.usage is not None:
                x.entry.tokens = answer.usage.total_tokens
            response = x.json(door.answer(req, answer, model))
        if finished is not None:
            await finished(_fold(events), model)
        return response
