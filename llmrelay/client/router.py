"""Which provider answers, and trying providers in turn: the rules the client, the CLI and the gateway share.

* :func:`resolve_provider` / :func:`resolve_providers` turn what a caller named
  (a provider class, a catalog name, a list, or nothing) into provider classes.
  An ad-hoc base URL with no provider named means ``Custom``: a key set for a
  catalog provider (``GROQ_API_KEY`` …) never goes to a host that provider did
  not name (SPEC 2.1).
* :func:`first_success` tries targets in turn (retries, fallback, hooks where a
  gateway plugs in cooldowns), and :func:`open_events` opens a stream up to its
  first event, so that failover happens only before any output.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Union

from .._text import display_name
from ..errors import AllProvidersFailedError, RateLimitError, RelayError
from ..responses import ProviderInfo
from .retry import MAX_RETRY_AFTER, is_retryable, retry_delay

if TYPE_CHECKING:
    from ..providers.template import OpenaiTemplate

    ProviderClass = type[OpenaiTemplate]
else:
    ProviderClass = type  # the providers (and aiohttp) are imported only when a request is made

ProviderSpec = Union[ProviderClass, str, Sequence[Union[ProviderClass, str]], None]
T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "END",
    "Opened",
    "ProviderClass",
    "ProviderSpec",
    "RateLimitSkip",
    "Skip",
    "aclose",
    "complete_events",
    "failures_text",
    "first_success",
    "is_retryable",
    "open_events",
    "provider_name",
    "resolve_provider",
    "resolve_providers",
]

log = logging.getLogger("llmrelay")


def resolve_provider(provider: ProviderClass | str | None = None, api_base: str | None = None) -> ProviderClass:
    """One provider class: the class or catalog name given; with none, ``Custom`` when ``api_base`` is given,
    else the catalog's default (``LLMRELAY_PROVIDER``, ``LLMRELAY_API_BASE``, the first keyed provider, ``Local``).

    Unknown names raise ``ValueError``; anything that is not a provider raises ``TypeError``.
    """
    if provider is None:
        from ..providers.catalog import Custom, default_provider

        return Custom if api_base else default_provider()
    if isinstance(provider, str):
        from ..providers.catalog import get_provider

        return get_provider(provider)
    if isinstance(provider, type) and callable(getattr(provider, "create_async_generator", None)):
        return provider
    raise TypeError(
        f"a provider must be a provider class (an OpenaiTemplate subclass), a catalog name or a list of them, "
        f"not {provider!r}"
    )


def resolve_providers(provider: ProviderSpec, api_base: str | None = None) -> tuple[list[ProviderClass], bool]:
    """(provider classes, whether they form a fallback list) for a client's ``provider=`` argument."""
    if isinstance(provider, (list, tuple)):
        if not provider:
            raise ValueError("the provider list is empty")
        return [resolve_provider(item) for item in provider], True
    return [resolve_provider(provider, api_base)], False  # type: ignore[arg-type]


def provider_name(provider: Any) -> str:
    """The display name of a provider class (``get_name()``, else its label or class name)."""
    get_name = getattr(provider, "get_name", None)
    return get_name() if callable(get_name) else display_name(provider)


# ------------------------------------------------------------------ trying targets in turn

END: Any = object()
"""``Opened.first`` when the provider's stream ended before any real event."""


class Skip(RelayError):  # noqa: N818 (a signal more than an error)
    """Raised by a ``before_attempt`` hook: leave this target out (for example, it is cooling down)."""

    informative = False


class RateLimitSkip(Skip, RateLimitError):  # noqa: N818 (a Skip, as above)
    """A target left out because an upstream rate limit (its ``Retry-After``) still holds; ``retry_after``: the
    seconds left. When every target is left out this way, the request is itself rate limited (429)."""


class Opened:
    """An answer stream advanced to its first real event: what failover needs before any output is sent."""

    __slots__ = ("events", "first", "info", "provider")

    def __init__(self, provider: ProviderClass, info: Any, first: Any, events: AsyncIterator[Any]) -> None:
        self.provider = provider
        self.info = info  # the ProviderInfo event, if the provider sent one before `first`
        self.first = first
        self.events = events  # the rest of the stream, positioned after `first`

    async def aclose(self) -> None:
        """Stop reading and give the connection back."""
        await aclose(self.events)


async def aclose(generator: Any) -> None:
    """Close an async generator, swallowing what closing raises (it must not hide the error being handled)."""
    close = getattr(generator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass


async def complete_events(
    provider: ProviderClass, model: str, messages: list[dict[str, Any]], options: dict[str, Any]
) -> list[Any]:
    """Every event of a non-streamed answer, at once: the provider's ``complete_async`` when it has one (no async
    generator per call), else its ``create_async_generator(stream=False)`` read to the end."""
    complete = getattr(provider, "complete_async", None)
    if complete is not None:
        events: list[Any] = await complete(model, messages, **options)
        return events
    return [item async for item in provider.create_async_generator(model, messages, stream=False, **options)]


async def open_events(
    provider: ProviderClass, model: str, messages: list[dict[str, Any]], options: dict[str, Any], stream: bool = True
) -> Opened:
    """Start an answer (streamed unless ``stream=False``) and advance it to its first real event (so that a failure
    before output can move on to another attempt); the caller owns the returned stream and must read it to the end
    or ``aclose()`` it."""
    start = getattr(provider, "stream_async", None)
    if start is not None:  # sends at once (errors before output are raised here), no wrapping generator per event
        generator = await start(model, messages, stream=stream, **options)
    else:
        generator = provider.create_async_generator(model, messages, stream=stream, **options)
    info: Any = None
    try:
        async for item in generator:
            if isinstance(item, ProviderInfo):
                info = item
                continue
            return Opened(provider, info, item, generator)
    except BaseException:
        await aclose(generator)
        raise
    return Opened(provider, info, END, generator)


def failures_text(error: AllProvidersFailedError) -> str:
    """Each target's error, in the order they were tried: ``"a: HTTP 500: down; b: rate limited …"``."""
    return "; ".join(f"{name}: {failure}" for name, failure in error.errors)


Hook = Callable[..., Awaitable[Any]]


async def first_success(
    targets: Iterable[T],
    attempt: Callable[[T], Awaitable[R]],
    *,
    max_retries: int = 0,
    sleep: Callable[[float], Any] = asyncio.sleep,
    retryable: Callable[[BaseException], bool] = is_retryable,
    fall_back: Callable[[BaseException], bool] | None = None,
    name: Callable[[T], str] = provider_name,
    before_attempt: Hook | None = None,
    after_error: Hook | None = None,
    on_success: Hook | None = None,
    on_retry: Callable[[T], Any] | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
    single: bool = False,
) -> R:
    """``await attempt(target)`` for each target in turn until one succeeds.

    A target is retried up to ``max_retries`` times for an error that ``retryable`` accepts (waiting per
    :func:`~llmrelay.client.retry.retry_delay`); then the request moves on to the next target — for any error, or
    with ``fall_back`` only for the errors it accepts (any other is raised at once).
    ``before_attempt(target)`` may raise :class:`Skip` to leave a target out; ``after_error(target, error)`` sees
    every failure, ``on_retry(target)`` each retry and ``on_success(target)`` the success; a server's
    ``retry_after`` over ``max_retry_after`` is not waited for. When every target failed, or was skipped, raises
    :class:`~llmrelay.errors.AllProvidersFailedError` listing each — except with ``single=True`` (one target, no
    fallback list), where the target's own error is raised as it is.
    """
    errors: list[tuple[str, BaseException]] = []
    for target in targets:
        if before_attempt is not None:
            try:
                await before_attempt(target)
            except Skip as skipped:
                errors.append((name(target), skipped))
                continue
        number = 0
        while True:
            try:
                result = await attempt(target)
            except Exception as error:
                if after_error is not None:
                    await after_error(target, error)
                delay = retry_delay(error, number, max_retries, max_retry_after) if retryable(error) else None
                if delay is None:
                    if single or (fall_back is not None and not fall_back(error)):
                        raise
                    log.info("%s failed (%s); trying the next one", name(target), error)
                    errors.append((name(target), error))
                    break
                number += 1
                if on_retry is not None:
                    on_retry(target)
                log.info("%s failed (%s); retry %d of %d in %.2f s", name(target), error, number, max_retries, delay)
                waited = sleep(delay)
                if inspect.isawaitable(waited):
                    await waited
                continue
            if on_success is not None:
                await on_success(target)
            return result
    failures = [error for _, error in errors if not isinstance(error, Skip)]
    raise AllProvidersFailedError(errors) from (failures[-1] if failures else None)
