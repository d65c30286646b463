"""``Client`` and ``AsyncClient``: the ``openai`` SDK's shape on any provider, with retries and fallback.

Both are thin shells around one async implementation (:class:`_Dispatch`):

* ``AsyncClient`` runs it on the caller's event loop;
* ``Client`` runs it on its own :class:`~llmrelay._runner.BackgroundLoop` (one
  daemon thread per client, started on first use and stopped by ``close()`` or a
  ``with`` block), so it works from scripts, from many threads at once and from
  inside a running event loop (Jupyter).

Retries and fallback happen only before any output reached the caller: a
stream is "opened" (the provider's generator is advanced to its first real
event) inside the retry loop, and after that errors propagate as they are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from .._runner import BackgroundLoop
from ..responses import Answer
from .convert import StreamShape, answer_identity, message_dict, provider_options
from .router import (
    END,
    Opened,
    ProviderClass,
    ProviderSpec,
    aclose,
    complete_events,
    first_success,
    open_events,
    provider_name,
    resolve_providers,
)
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    CompletionUsage,
    CreateEmbeddingResponse,
    ImagesResponse,
    Model,
    ModelList,
    OpenAIObject,
)

__all__ = ["AsyncClient", "AsyncStream", "Client", "Stream"]

log = logging.getLogger("llmrelay")

T = TypeVar("T")
SleepFunction = Callable[[float], Any]

_client_numbers = itertools.count(1)


# --------------------------------------------------------------------- helpers


def _prepare_messages(messages: Any) -> list[dict[str, Any]]:
    """The messages as a list of dicts, without touching the caller's list or dicts.

    Dicts are passed through unchanged (the very same objects); message objects
    (this client's, or the ``openai`` SDK's) become dicts of their non-null fields.
    """
    if type(messages) is list and all(type(message) is dict for message in messages):
        return messages
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of message dicts, not {type(messages).__name__}")
    prepared: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, dict):
            prepared.append(message)
        elif isinstance(message, ChatCompletionMessage):
            prepared.append(message.to_param())
        elif isinstance(message, OpenAIObject):
            prepared.append(message.to_dict())
        elif callable(getattr(message, "model_dump", None)):  # an openai SDK object
            prepared.append(message.model_dump(exclude_none=True))
        elif isinstance(message, Mapping):
            prepared.append(dict(message))
        else:
            raise TypeError(f"a message must be a dict, not {type(message).__name__}")
    return prepared


async def _chunk_stream(opened: Opened, model: str, include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI-shaped chunks from an opened event stream: a role chunk, one chunk per text / reasoning /
    tool-calls / audio event, the ``finish_reason`` chunk and, when asked for and known, a usage chunk."""
    shape = StreamShape(opened.info, model, provider_name(opened.provider), include_usage)
    chunk_id, created, model, name = shape.id, shape.created, shape.model, shape.provider
    chunk_class, choice_class, delta_class = ChatCompletionChunk, ChunkChoice, ChoiceDelta
    first = opened.first
    try:
        role = delta_class(shape.role_delta(first))
        yield chunk_class(chunk_id, created, model, [choice_class(0, role)], None, name, include_usage)
        if first is not END:
            delta = shape.delta(first)
            if delta is not None:
                yield chunk_class(
                    chunk_id, created, model, [choice_class(0, delta_class(delta))], None, name, include_usage
                )
        async for item in opened.events:
            if type(item) is str:  # the hot path: one text piece
                delta = {"content": item}
            else:
                delta = shape.delta(item)
                if delta is None:
                    continue
            yield chunk_class(
                chunk_id, created, model, [choice_class(0, delta_class(delta))], None, name, include_usage
            )
        finish = choice_class(0, delta_class({}), shape.finish_reason)
        yield chunk_class(chunk_id, created, model, [finish], None, name, include_usage)
        if include_usage and shape.usage is not None:
            yield chunk_class(chunk_id, created, model, [], CompletionUsage(shape.usage.to_dict()), name)
    finally:
        await opened.aclose()


# ------------------------------------------------------------------------ dispatch


class _Dispatch:
    """What a client is configured with, and the calls it makes: providers in fallback order, retries, the
    per-call options every provider call gets; answers shaped by :mod:`llmrelay.client.convert`."""

    def __init__(
        self,
        provider: ProviderSpec,
        api_key: str | None,
        api_base: str | None,
        max_retries: int,
        timeout: float | None,
        proxy: str | None,
        headers: Mapping[str, str] | None,
        sleep: SleepFunction | None,
    ) -> None:
        self.providers, self.fallback = resolve_providers(provider, api_base)
        if len(self.providers) > 1 and (api_key or api_base):
            raise ValueError(
                "api_key and api_base belong to one provider; with a fallback list configure each provider "
                "(its environment variable, or a subclass with api_key / api_base)"
            )
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, not {max_retries!r}")
        self.api_key = api_key
        self.api_base = api_base
        self.max_retries = max_retries
        self.timeout = timeout
        self.proxy = proxy
        self.headers = dict(headers) if headers else None
        self.sleep: SleepFunction = sleep or asyncio.sleep

    def call_options(
        self, timeout: float | None = None, extra_headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The keywords every provider call gets (only those that are set, so class defaults apply)."""
        options: dict[str, Any] = {}
        if self.api_key is not None:
            options["api_key"] = self.api_key
        if self.api_base is not None:
            options["api_base"] = self.api_base
        if self.proxy is not None:
            options["proxy"] = self.proxy
        timeout = self.timeout if timeout is None else timeout
        if timeout is not None:
            options["timeout"] = timeout
        if self.headers or extra_headers:
            options["headers"] = {**(self.headers or {}), **(extra_headers or {})}
        return options

    def dispatch(self, attempt: Callable[[ProviderClass], Awaitable[T]]) -> Awaitable[T]:
        """``attempt(provider)`` with retries per provider, then the next provider of a fallback list."""
        return first_success(
            self.providers, attempt, max_retries=self.max_retries, sleep=self.sleep, single=not self.fallback
        )

    def chat_options(self, params: dict[str, Any]) -> dict[str, Any]:
        params.pop("stream", None)
        options = self.call_options(params.pop("timeout", None), params.pop("extra_headers", None))
        options.update(provider_options(params))
        return options

    # ---- chat

    async def create_completion(self, model: str, messages: Any, params: dict[str, Any]) -> ChatCompletion:
        messages = _prepare_messages(messages)
        options = self.chat_options(params)

        async def attempt(provider: ProviderClass) -> tuple[ProviderClass, Answer]:
            answer = Answer()
            for item in await complete_events(provider, model, messages, options):
                answer.add(item)
            return provider, answer

        provider, answer = await self.dispatch(attempt)
        response_id, created, served_model = answer_identity(answer.info, model)
        choice = Choice(0, ChatCompletionMessage(message_dict(answer)), answer.finish_reason)
        usage = CompletionUsage(answer.usage.to_dict()) if answer.usage is not None else None
        name = answer.info.name if answer.info is not None else provider_name(provider)
        return ChatCompletion(response_id, created, served_model, [choice], usage, name)

    async def open_stream(
        self, model: str, messages: Any, params: dict[str, Any]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Open the stream (retrying / falling back until a provider produced its first real event)."""
        messages = _prepare_messages(messages)
        options = self.chat_options(params)

        def attempt(provider: ProviderClass) -> Awaitable[Opened]:
            return open_events(provider, model, messages, options)

        opened = await self.dispatch(attempt)
        stream_options = options.get("stream_options")
        if isinstance(stream_options, dict):
            include_usage = bool(stream_options.get("include_usage"))
        else:
            include_usage = bool(getattr(opened.provider, "supports_stream_options", False))
        return _chunk_stream(opened, model, include_usage)

    # ---- models

    async def list_models(self) -> ModelList:
        options = self.call_options()

        async def attempt(provider: ProviderClass) -> tuple[ProviderClass, list[str]]:
            get_models = getattr(provider, "get_models_async", None)
            if get_models is None:
                raise TypeError(f"{provider_name(provider)} cannot list models (it has no get_models_async)")
            return provider, await get_models(**options)

        provider, ids = await self.dispatch(attempt)
        owner = provider_name(provider)
        return ModelList([Model({"id": i, "object": "model", "created": 0, "owned_by": owner}) for i in ids], owner)

    # ---- images

    async def generate_images(
        self,
        prompt: str,
        model: str | None,
        n: int | None,
        size: str | None,
        response_format: str | None,
        params: dict[str, Any],
    ) -> ImagesResponse:
        options = self.call_options(params.pop("timeout", None), params.pop("extra_headers", None))
        extra_body = params.pop("extra_body", None)
        if extra_body:
            options["extra_data"] = dict(extra_body)
        for key, value in (("n", n), ("size", size), ("response_format", response_format), *params.items()):
            if value is not None:
                options[key] = value

        async def attempt(provider: ProviderClass) -> ImagesResponse:
            name = provider_name(provider)
            generate = getattr(provider, "generate_images_async", None)
            if generate is None:
                raise TypeError(f"{name} cannot generate images: it is not an OpenaiTemplate provider")
            data = await generate(prompt, model or "", **options)
            data.setdefault("created", int(time.time()))
            served = model or getattr(provider, "default_image_model", "") or ""
            return ImagesResponse(data, provider=name, model=served)

        return await self.dispatch(attempt)

    # ---- embeddings

    async def create_embeddings(self, input: Any, model: str | None, params: dict[str, Any]) -> CreateEmbeddingResponse:
        from ..providers.embeddings import check_embedding_input

        input = check_embedding_input(input)  # before any provider is tried: a bad input is never retried
        options = self.call_options(params.pop("timeout", None), params.pop("extra_headers", None))
        extra_body = params.pop("extra_body", None)
        if extra_body:
            options["extra_data"] = dict(extra_body)
        options.update({key: value for key, value in params.items() if value is not None})

        async def attempt(provider: ProviderClass) -> CreateEmbeddingResponse:
            name = provider_name(provider)
            create = getattr(provider, "create_embeddings_async", None)
            if create is None:
                raise TypeError(f"{name} cannot create embeddings: it is not an OpenaiTemplate provider")
            return CreateEmbeddingResponse(await create(input, model or "", **options), provider=name)

        return await self.dispatch(attempt)


# ---------------------------------------------------------------- async client


class AsyncStream:
    """The chunks of a streamed answer: ``async for chunk in stream``; ``await stream.close()`` stops early."""

    __slots__ = ("_iterator",)

    def __init__(self, iterator: AsyncIterator[ChatCompletionChunk]) -> None:
        self._iterator = iterator

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._iterator

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._iterator.__anext__()

    async def close(self) -> None:
        """Stop reading and give the connection back."""
        await aclose(self._iterator)

    aclose = close

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _AsyncCompletions:
    __slots__ = ("_core",)

    def __init__(self, core: _Dispatch) -> None:
        self._core = core

    async def create(
        self, model: str, messages: Any, stream: bool = False, **params: Any
    ) -> ChatCompletion | AsyncStream:
        """A :class:`ChatCompletion`, or with ``stream=True`` an :class:`AsyncStream` of chunks.

        ``params`` are the OpenAI chat parameters (``temperature``, ``tools``,
        ``max_tokens``, ``extra_body`` …), plus ``timeout`` and ``extra_headers``.
        An empty ``model`` means the provider's default model.
        """
        if stream:
            return AsyncStream(await self._core.open_stream(model, messages, params))
        return await self._core.create_completion(model, messages, params)


class _AsyncChat:
    __slots__ = ("completions",)

    def __init__(self, core: _Dispatch) -> None:
        self.completions = _AsyncCompletions(core)


class _AsyncModels:
    __slots__ = ("_core",)

    def __init__(self, core: _Dispatch) -> None:
        self._core = core

    async def list(self) -> ModelList:
        """The models the provider lists (the first provider of a fallback list that answers)."""
        return await self._core.list_models()


class _AsyncImages:
    __slots__ = ("_core",)

    def __init__(self, core: _Dispatch) -> None:
        self._core = core

    async def generate(
        self,
        prompt: str,
        model: str | None = None,
        n: int | None = None,
        size: str | None = None,
        response_format: str | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """Generate images; ``response_format`` is ``"url"`` or ``"b64_json"`` (unset: the server's default).

        Only the arguments given are sent; ``params`` may add ``quality``, ``style``,
        ``background``, ``output_format``, ``extra_body``, ``timeout``, ``extra_headers``.
        """
        return await self._core.generate_images(prompt, model, n, size, response_format, params)


class _AsyncEmbeddings:
    __slots__ = ("_core",)

    def __init__(self, core: _Dispatch) -> None:
        self._core = core

    async def create(
        self,
        input: Any,
        model: str | None = None,
        encoding_format: str | None = None,
        dimensions: int | None = None,
        user: str | None = None,
        **params: Any,
    ) -> CreateEmbeddingResponse:
        """Embed ``input`` (a string, a list of strings, token ids or token-id lists; at most 2,048 items).

        ``encoding_format``: ``"float"`` (the default) or ``"base64"`` (little-endian float32).
        ``params`` may add ``extra_body``, ``timeout``, ``extra_headers``. An empty ``model`` means the
        provider's embedding model (``local``: ``smollm2-embed``).
        """
        params.update(encoding_format=encoding_format, dimensions=dimensions, user=user)
        return await self._core.create_embeddings(input, model, params)


class _ClientBase:
    """What both clients share: construction and the retry settings."""

    _core: _Dispatch

    def __init__(
        self,
        provider: ProviderSpec = None,
        api_key: str | None = None,
        api_base: str | None = None,
        max_retries: int = 2,
        timeout: float | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        sleep: SleepFunction | None = None,
    ) -> None:
        self._core = _Dispatch(provider, api_key, api_base or base_url, max_retries, timeout, proxy, headers, sleep)
        self._attach()

    def _attach(self) -> None:
        raise NotImplementedError

    @property
    def providers(self) -> list[ProviderClass]:
        """The provider classes, in fallback order."""
        return list(self._core.providers)

    @property
    def max_retries(self) -> int:
        return self._core.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"max_retries must be a non-negative int, not {value!r}")
        self._core.max_retries = value

    @property
    def sleep(self) -> SleepFunction:
        """The function awaited (or called) to wait between retries; replace it to record or skip the waits."""
        return self._core.sleep

    @sleep.setter
    def sleep(self, value: SleepFunction) -> None:
        self._core.sleep = value


class AsyncClient(_ClientBase):
    """The ``openai.AsyncOpenAI`` shape on any provider.

    ``provider``: a provider class, a catalog name (``"groq"``), a list of them
    (tried in order: a failure before any output moves to the next one) or None
    (the catalog's default provider). ``api_key`` / ``api_base`` (alias
    ``base_url``) / ``proxy`` / ``timeout`` / ``headers`` are passed to every call;
    ``max_retries`` retries connection errors, 408, 409, 429 and 5xx before any
    output; ``sleep`` replaces ``asyncio.sleep`` for the waits between retries.
    """

    def _attach(self) -> None:
        self.chat = _AsyncChat(self._core)
        self.models = _AsyncModels(self._core)
        self.images = _AsyncImages(self._core)
        self.embeddings = _AsyncEmbeddings(self._core)

    async def close(self) -> None:
        """Nothing to release: connections live in the event loop's shared pool and close with the loop."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(providers={[provider_name(p) for p in self._core.providers]})"


# ----------------------------------------------------------------- sync client


def _close_loop(loop: BackgroundLoop, thread_name: str) -> None:
    """Stop a client's loop; from inside that loop's own thread, hand the stopping to a helper thread."""
    if threading.current_thread().name == thread_name:
        threading.Thread(target=loop.close, name=f"{thread_name}-closer", daemon=True).start()
    else:
        loop.close()


class _SyncRuntime:
    """A client's background loop; everything that must keep the loop alive references this object."""

    __slots__ = ("__weakref__", "closed", "core", "finalizer", "loop")

    def __init__(self, core: _Dispatch) -> None:
        self.core = core
        name = f"llmrelay-client-{next(_client_numbers)}"
        self.loop = BackgroundLoop(name=name)
        self.closed = False
        # Closes the loop when the client is closed, garbage-collected, or at interpreter exit.
        self.finalizer = weakref.finalize(self, _close_loop, self.loop, name)

    def run(self, coroutine: Any) -> Any:
        if self.closed:
            coroutine.close()
            raise RuntimeError("this Client is closed")
        return self.loop.run(coroutine)

    def iterate(self, generator: AsyncIterator[T]) -> Iterator[T]:
        # A generator of our own, so that a running iteration keeps this runtime (and its loop) alive.
        steps = cast(Generator[T, None, None], self.loop.iterate(generator))
        try:
            while True:
                if self.closed:  # checked before each step: a closed loop cannot run one
                    raise RuntimeError("this Client is closed")
                try:
                    item = next(steps)
                except StopIteration:
                    return
                yield item
        finally:
            if not self.closed:
                steps.close()

    def close(self) -> None:
        self.closed = True
        self.finalizer()


class Stream:
    """The chunks of a streamed answer: ``for chunk in stream``; ``stream.close()`` stops early."""

    __slots__ = ("_iterator", "_runtime")

    def __init__(self, iterator: Iterator[ChatCompletionChunk], runtime: _SyncRuntime) -> None:
        self._iterator = iterator
        self._runtime = runtime

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self._iterator

    def __next__(self) -> ChatCompletionChunk:
        return next(self._iterator)

    def close(self) -> None:
        """Stop reading and give the connection back."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SyncCompletions:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: _SyncRuntime) -> None:
        self._runtime = runtime

    def create(self, model: str, messages: Any, stream: bool = False, **params: Any) -> ChatCompletion | Stream:
        """A :class:`ChatCompletion`, or with ``stream=True`` a :class:`Stream` of chunks (see ``AsyncClient``)."""
        runtime = self._runtime
        if stream:
            chunks = runtime.run(runtime.core.open_stream(model, messages, params))
            return Stream(runtime.iterate(chunks), runtime)
        return runtime.run(runtime.core.create_completion(model, messages, params))


class _SyncChat:
    __slots__ = ("completions",)

    def __init__(self, runtime: _SyncRuntime) -> None:
        self.completions = _SyncCompletions(runtime)


class _SyncModels:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: _SyncRuntime) -> None:
        self._runtime = runtime

    def list(self) -> ModelList:
        """The models the provider lists (the first provider of a fallback list that answers)."""
        return self._runtime.run(self._runtime.core.list_models())


class _SyncImages:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: _SyncRuntime) -> None:
        self._runtime = runtime

    def generate(
        self,
        prompt: str,
        model: str | None = None,
        n: int | None = None,
        size: str | None = None,
        response_format: str | None = None,
        **params: Any,
    ) -> ImagesResponse:
        """Generate images (see ``AsyncClient.images.generate``)."""
        return self._runtime.run(self._runtime.core.generate_images(prompt, model, n, size, response_format, params))


class _SyncEmbeddings:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: _SyncRuntime) -> None:
        self._runtime = runtime

    def create(
        self,
        input: Any,
        model: str | None = None,
        encoding_format: str | None = None,
        dimensions: int | None = None,
        user: str | None = None,
        **params: Any,
    ) -> CreateEmbeddingResponse:
        """Embed ``input`` (see ``AsyncClient.embeddings.create``)."""
        params.update(encoding_format=encoding_format, dimensions=dimensions, user=user)
        return self._runtime.run(self._runtime.core.create_embeddings(input, model, params))


class Client(_ClientBase):
    """The ``openai.OpenAI`` shape on any provider, for sync code (see :class:`AsyncClient` for the arguments).

    Each client runs its requests on its own background event loop thread, started
    on first use; ``close()`` (or leaving a ``with`` block) stops it and closes its
    connections. It works from plain scripts, from several threads at once and
    inside a running event loop (Jupyter).
    """

    def _attach(self) -> None:
        self._runtime = _SyncRuntime(self._core)
        self.chat = _SyncChat(self._runtime)
        self.models = _SyncModels(self._runtime)
        self.images = _SyncImages(self._runtime)
        self.embeddings = _SyncEmbeddings(self._runtime)

    @property
    def closed(self) -> bool:
        return self._runtime.closed

    def close(self) -> None:
        """Stop the client's loop thread and close its connections (idempotent)."""
        self._runtime.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(providers={[provider_name(p) for p in self._core.providers]})"
