"""The gateway's Prometheus metrics (SPEC 8.9), one registry per gateway.

Label children are cached in plain dicts: ``labels(...)`` takes a lock and builds a tuple each call, which
shows in the per-request CPU profile; a dict lookup does not.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_SERIES = 5000
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"))


class Metrics:
    def __init__(self) -> None:
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
        self._children: dict[tuple[Any, ...], Any] = {}
        self.observe_duration = self.duration.observe
        self.observe_ttft = self.ttft.observe

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, route: str, provider: str, model: str, status: int) -> None:
        if (
            len(self._children) > MAX_SERIES
            and (id(self.requests), route, provider, model, str(status)) not in self._children
        ):
            model = "_other"  # callers choose model names: bound the number of series they can create
        self._child(self.requests, (route, provider, model, str(status))).inc()

    def add_tokens(self, provider: str, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self.tokens, (provider, model, "prompt")).inc(prompt)
        if completion:
            self._child(self.tokens, (provider, model, "completion")).inc(completion)

    def upstream_error(self, provider: str, code: str) -> None:
        self._child(self.upstream_errors, (provider, code)).inc()

    def cache_result(self, result: str) -> None:
        self._child(self.cache, (result,)).inc()

    def cooldown_skip(self, target: str) -> None:
        self._child(self.cooldowns, (target,)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
