"""The gateway's Prometheus metrics (SPEC 8.9), one registry per gateway.

Every label value is bounded, in number and in length: callers and upstreams choose model names and error codes,
and a label value is a series kept for the life of the process. Label values come from the configuration (route
and provider names, the models routes and providers name), from fixed sets (statuses, the gateway's error codes,
cache results), or — for models — from the first :data:`MAX_LEARNED_MODELS` names of at most
:data:`MAX_LABEL_LENGTH` characters that an upstream reported in a successful answer. Anything else is counted as
``_other``; past :data:`MAX_SERIES` series in all, every new combination is ``_other`` too.

Label children are cached in plain dicts: ``labels(...)`` takes a lock and builds a tuple each call, which
shows in the per-request CPU profile; a dict lookup does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import ERROR_CODES, table_code

if TYPE_CHECKING:
    from .config import Config

__all__ = ["CONTENT_TYPE", "MAX_LABEL_LENGTH", "MAX_LEARNED_MODELS", "MAX_SERIES", "OTHER", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_SERIES = 2000  # children over every labelled metric
MAX_LEARNED_MODELS = 50  # model names learned from successful answers, beyond the configured ones
MAX_LABEL_LENGTH = 80
OTHER = "_other"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"))


class Metrics:
    def __init__(self, config: Config | None = None) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llmrelay_requests", "Requests answered", ["route", "provider", "model", "status"], registry=registry
        )
        self.duration = Histogram(
            "llmrelay_request_duration_seconds",
            "Time from request to the end of the answer",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "llmrelay_time_to_first_token_seconds",
            "Time from request to the first streamed answer event",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "llmrelay_tokens", "Tokens from upstream usage", ["provider", "model", "kind"], registry=registry
        )
        self.upstream_errors = Counter(
            "llmrelay_upstream_errors", "Upstream failures", ["provider", "code"], registry=registry
        )
        self.inflight = Gauge("llmrelay_inflight_requests", "Requests being answered now", registry=registry)
        self.cache = Counter("llmrelay_cache", "Response cache lookups", ["result"], registry=registry)
        self.redis_errors = Counter("llmrelay_redis_errors", "Failed calls to Redis", registry=registry)
        self.cooldowns = Counter(
            "llmrelay_cooldown_skips",
            "Route targets skipped because they are cooling down",
            ["target"],
            registry=registry,
        )
        self.retries = Counter(
            "llmrelay_retries", "Route targets tried again after a retryable failure", ["route"], registry=registry
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._given: dict[tuple[Any, ...], Any] = {}  # label values as given -> their children (see _remember)
        self.observe_duration = self.duration.observe
        self.observe_ttft = self.ttft.observe
        self._routes: frozenset[str] = frozenset()
        self._providers: frozenset[str] = frozenset()
        self._targets: frozenset[str] = frozenset()
        self._models: set[str] = set()
        self._configured_models: frozenset[str] = frozenset()
        self.configure(config)

    def configure(self, config: Config | None) -> None:
        """Take the label values the configuration names (again after a reload; learned models are kept)."""
        from ..providers.catalog import provider_names

        self._given = {}
        routes = config.routes if config is not None else {}
        providers = config.providers if config is not None else {}
        self._routes = frozenset(("", *routes))
        self._providers = frozenset(("", *providers, *provider_names()))
        self._targets = frozenset(target.label for route in routes.values() for target in route.targets)
        configured = {target.model for route in routes.values() for target in route.targets}
        configured.update(getattr(cls, "default_model", "") or "" for cls in providers.values())
        configured.add("")
        self._configured_models = frozenset(configured)

    def _route(self, route: str) -> str:
        return route if route in self._routes else OTHER

    def _provider(self, provider: str) -> str:
        return provider if provider in self._providers else OTHER

    def _model(self, model: str, learn: bool) -> str:
        if model in self._configured_models or model in self._models:
            return model
        if learn and len(self._models) < MAX_LEARNED_MODELS and len(model) <= MAX_LABEL_LENGTH:
            self._models.add(model)
            return model
        return OTHER

    def _bounded(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is not None:
            return child
        if len(self._children) >= MAX_SERIES:
            labels = (OTHER,) * len(labels)  # the last resort: one more series at most per metric
            key = (id(metric), *labels)
            child = self._children.get(key)
            if child is not None:
                return child
        child = self._children[key] = metric.labels(*labels)
        return child

    def _remember(self, key: tuple[Any, ...], labels: tuple[str, ...], given: tuple[str, ...], value: Any) -> None:
        """Keep ``value`` (children) for the label values as given, when they were taken as they are: such values
        map to the same children until the next :meth:`configure` (which forgets them)."""
        if labels == given and len(self._given) < MAX_SERIES:
            self._given[key] = value

    def request(self, route: str, provider: str, model: str, status: int) -> None:
        key = (route, provider, model, status)
        child = self._given.get(key)
        if child is None:
            ok = 200 <= status < 300
            code = str(status) if 100 <= status <= 599 else OTHER
            labels = (self._route(route), self._provider(provider), self._model(model, ok), code)
            child = self._bounded(self.requests, labels)
            self._remember(key, labels, (route, provider, model, str(status)), child)
        child.inc()

    def add_tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._tokens(provider, model, "prompt").inc(prompt)
        if completion:
            self._tokens(provider, model, "completion").inc(completion)
        if not prompt and not completion:
            self._model(model, True)

    def _tokens(self, provider: str, model: str, kind: str) -> Any:
        key = (provider, model, kind)
        child = self._given.get(key)
        if child is None:
            labels = (self._provider(provider), self._model(model, True), kind)
            child = self._bounded(self.tokens, labels)
            self._remember(key, labels, key, child)
        return child

    def upstream_error(self, provider: str, error: BaseException | str) -> None:
        """One upstream failure; the code label is the gateway's table code (a fixed set), never the upstream's."""
        code = error if isinstance(error, str) else table_code(error)
        self._bounded(self.upstream_errors, (self._provider(provider), code if code in ERROR_CODES else OTHER)).inc()

    def cache_result(self, result: str) -> None:
        self._bounded(self.cache, (result if result in ("hit", "miss") else OTHER,)).inc()

    def cooldown_skip(self, target: str) -> None:
        self._bounded(self.cooldowns, (target if target in self._targets else OTHER,)).inc()

    def retry(self, route: str) -> None:
        self._bounded(self.retries, (self._route(route),)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
