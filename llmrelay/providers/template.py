"""``OpenaiTemplate``: a provider for any OpenAI-compatible API, configured by subclassing."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import orjson

from .._env import getenv
from .._runner import run_sync
from .._text import shorten
from ..errors import InvalidArgumentError, MissingAuthError, RelayError, ResponseError
from ..http.checks import check_api_key, check_headers
from ..http.session import DEFAULT_TIMEOUT, TRANSPORT_ERRORS, Response, check_request, open_response, send_checked
from ..http.status import redact, redact_error
from ..http.url import check_api_base, check_url, join_url
from ..media import render_media
from ..responses import ImageResponse, ProviderInfo
from ..typing import AsyncResult, MediaListType, Messages
from .base import AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin
from .embeddings import (
    EMBEDDING_PARAMETERS,
    check_embedding_input,
    check_embedding_options,
    embedding_body,
    encode_embeddings,
    input_count,
    parse_embedding_answer,
)
from .images import IMAGE_PARAMETERS, IMAGE_SIZE_PARAMETERS, image_body, image_urls, last_user_text, parse_image_answer
from .listing import Listing, cached_listing, parse_models, store_listing
from .reading import read_answer, read_body, read_event_stream, read_response

__all__ = ["OpenaiTemplate", "OpenedChat"]

log = logging.getLogger("llmrelay")

_checked_base = functools.lru_cache(maxsize=256)(check_api_base)  # a pure check, run on every request
# (provider class, URL, stream, key, proxy, timeouts) -> (the class's headers and redacted when kept, URL, headers,
# check_request's result): what a chat call without extra headers sends besides its body (see _send_chat).
_sends: dict[tuple[Any, ...], tuple[Any, ...]] = {}
SENDS_KEPT = 256


@functools.lru_cache(maxsize=256)
def _checked_endpoint(url: str) -> str:
    return check_url(url, "api_endpoint")


def _endpoint(url: object) -> str | None:
    """A full chat URL given as ``api_endpoint``, checked (a ValueError naming ``api_endpoint``); None: none."""
    if not url:
        return None
    return _checked_endpoint(url) if isinstance(url, str) else check_url(url, "api_endpoint")


def _with_headers(base: dict[str, str], names: frozenset[str], headers: Mapping[str, str]) -> dict[str, str] | None:
    """``base`` plus a call's ``headers`` (as ``get_headers`` merges them) when no name of theirs is in ``base`` or
    twice among them and they pass ``check_headers``; None for anything else (the caller builds all again)."""
    if type(headers) is not dict:
        return None
    seen = set()
    for name in headers:
        if type(name) is not str:
            return None
        lowered = name.lower()
        if lowered in names or lowered in seen:
            return None
        seen.add(lowered)
    try:
        check_headers(headers)
    except (TypeError, ValueError):
        return None
    merged = dict(base)
    for name, value in headers.items():
        if value is not None:  # None removes a header: none of these names is in base
            merged[name] = value
    return merged


OPENAI_BASE = "https://api.openai.com/v1"
OPENAI_PARAMETERS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "reasoning_effort",
    "modalities",
    "audio",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "web_search_options",
    "stream_options",
)


class OpenedChat:
    """A chat call sent by :meth:`OpenaiTemplate.open_chat`: the open ``response`` to read, or (an image model)
    the answer's ``events`` already complete; the provider's ``name``, the ``model`` sent, the idle ``timeout``
    and the ``secrets`` no error may quote."""

    __slots__ = ("events", "model", "name", "pieces", "response", "secrets", "timeout")

    def __init__(
        self,
        response: Response | None,
        name: str,
        model: str,
        timeout: float,
        secrets: tuple[str | None, ...],
        events: list[Any] | None = None,
        pieces: bool = False,
    ) -> None:
        self.response = response
        self.name = name
        self.model = model
        self.timeout = timeout
        self.secrets = secrets
        self.events = events
        self.pieces = pieces  # a streamed answer also yields a ToolCallPiece per tool-call arguments piece


class OpenaiTemplate(AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin):
    """A provider for an OpenAI-compatible API. Subclass it and set ``api_base`` (and a few more attributes).

    Used directly, it talks to OpenAI (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``).
    """

    api_base: ClassVar[str] = ""
    api_key: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = None
    api_endpoint: ClassVar[str | None] = None
    needs_auth: ClassVar[bool] = False
    fallback_models: ClassVar[list[str]] = []
    image_models: ClassVar[list[str]] = []
    default_image_model: ClassVar[str] = ""
    vision_models: ClassVar[list[str]] = []
    sort_models: ClassVar[bool] = True
    models_ttl: ClassVar[float] = 3600.0
    ssl: ClassVar[Any] = None
    headers: ClassVar[dict[str, str]] = {}
    redacted: ClassVar[tuple[str, ...]] = ()  # more secrets no error may quote (e.g. a key sent in ``headers``)
    supports_stream_options: ClassVar[bool] = True
    extra_parameters: ClassVar[tuple[str, ...] | list[str]] = OPENAI_PARAMETERS
    can_generate_images: ClassVar[bool] = True  # False: a server with no images endpoint (refused before sending)
    default_max_tokens: ClassVar[int | None] = None  # sent when the caller gives no max_tokens (llama.cpp needs one)
    # What the gateway may send (SPEC 9.1.7, 9.1.8): the largest max_tokens (None: no known cap; see
    # get_max_tokens_cap) and whether the API takes reasoning_effort (else the gateway drops and names it).
    max_tokens_cap: ClassVar[int | None] = None
    accepts_reasoning_effort: ClassVar[bool] = True
    default_embedding_model: ClassVar[str] = ""  # used when an embeddings call names no model

    # ------------------------------------------------------------ configuration

    @classmethod
    async def prepare(cls) -> None:
        """Awaited before every request; a provider that must start something first overrides it."""

    @classmethod
    def get_max_tokens_cap(cls) -> int | None:
        """The largest ``max_tokens`` this provider takes: ``max_tokens_cap``, else what the class knows."""
        return cls.max_tokens_cap

    @classmethod
    def get_api_base(cls, api_base: str | None = None) -> str:
        """The base URL for a request: the argument, else the class's, else (OpenaiTemplate itself) OpenAI's."""
        base = api_base or cls.api_base or getattr(cls, "base_url", None)
        if not base:
            if cls is OpenaiTemplate:
                base = os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE
            else:
                raise ValueError(f"{cls.get_name()} has no api_base: set the class attribute or pass api_base=")
        return _checked_base(base) if isinstance(base, str) else check_api_base(base)

    @classmethod
    def _base_and_key(cls, api_base: str | None, api_key: str | None) -> tuple[str, str | None]:
        """The base URL and key of one call, checked; a key that sits in a bad URL is not quoted back."""
        api_key = cls.get_api_key(api_key)
        failure: ValueError | TypeError | None = None
        try:
            base = cls.get_api_base(api_base)
        except (ValueError, TypeError) as error:
            failure = error
        if failure is not None:  # raised out here, so no exception quoting the URL hangs on as __context__
            raise type(failure)(redact(str(failure), (api_key,) if isinstance(api_key, str) else ()))
        cls.check_auth(api_key)
        return base, api_key

    @classmethod
    def get_api_key_env(cls) -> str:
        """The environment variable holding this provider's key."""
        if cls.api_key_env:
            return cls.api_key_env
        if cls is OpenaiTemplate:
            return "OPENAI_API_KEY"
        return f"{cls.__name__.upper()}_API_KEY"

    @classmethod
    def get_api_key(cls, api_key: str | None = None) -> str | None:
        """The key for a request: the argument, else the class's, else the environment's."""
        return api_key or cls.api_key or getenv(cls.get_api_key_env()) or None

    @classmethod
    def get_headers(
        cls, stream: bool, api_key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Request headers; names merge case-insensitively (later sources win), so there is one ``Authorization``."""
        if headers is not None and not isinstance(headers, Mapping):
            check_headers(headers)  # a TypeError naming headers (names and values are checked when sending)
        result: dict[str, str] = {
            "Accept": "text/event-stream" if stream else "application/json",
            "Content-Type": "application/json",
        }
        api_key = cls.get_api_key(api_key)
        if api_key:
            result["Authorization"] = f"Bearer {api_key}"
        if cls.headers or headers:
            names = {name.lower(): name for name in result}  # lower-cased name -> the name as it is in result
            for extra in (cls.headers, headers):
                if extra:
                    for name, value in extra.items():
                        lowered = name.lower()
                        existing = names.pop(lowered, None)
                        if existing is not None:
                            del result[existing]
                        if value is not None:  # None removes the header
                            result[name] = value
                            names[lowered] = name
        return result

    @classmethod
    def check_auth(cls, api_key: str | None) -> None:
        """Raise ``MissingAuthError`` when a key is needed and missing, ``ValueError`` for a malformed key."""
        if api_key is not None and not (type(api_key) is str and api_key.isprintable() and api_key == api_key.strip()):
            try:
                check_api_key(api_key, f"{cls.get_api_key_env()} or api_key=")
            except (TypeError, ValueError) as error:
                raise type(error)(f"{cls.get_name()}: {error}") from None
        if cls.needs_auth and not api_key:
            raise MissingAuthError(
                f"{cls.get_name()} needs an API key: set {cls.get_api_key_env()} or pass api_key=",
                provider=cls.get_name(),
            )

    @classmethod
    def prepare_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Last look at the chat body before it is sent (a private copy); providers with quirks override it."""
        return body

    # ------------------------------------------------------------------ models

    @classmethod
    def get_models(
        cls,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The model ids the server lists (cached per base URL and key); sync, also inside a running loop."""
        return run_sync(
            cls.get_models_async(api_key=api_key, api_base=api_base, timeout=timeout, proxy=proxy, headers=headers)
        )

    @classmethod
    async def get_models_async(
        cls,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The async twin of :meth:`get_models` (``headers``: extra request headers, as for a chat call)."""
        await cls.prepare()
        base, api_key = cls._base_and_key(api_base, api_key)
        cached = cached_listing(base, api_key)
        if cached is not None:
            return cls._listed(cached.models)
        name = cls.get_name()
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        try:
            response = await open_response(
                "GET",
                join_url(base, "models"),
                headers=cls.get_headers(False, api_key, headers),
                proxy=proxy,
                ssl=cls.ssl,
                timeout=timeout,
                provider=name,
                secrets=(api_key, *cls.redacted),
            )
            body = await read_body(response, name, timeout)
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ResponseError(f"the model list is not JSON: {shorten(body)!r}", provider=name) from None
            listing = parse_models(data, name)
        except MissingAuthError as error:
            redact_error(error, (api_key, *cls.redacted))
            raise
        except (RelayError, *TRANSPORT_ERRORS) as error:  # type: ignore[misc]
            if isinstance(error, RelayError):
                redact_error(error, (api_key, *cls.redacted))
            if cls.fallback_models:
                reason = redact(str(error) or type(error).__name__, (api_key, *cls.redacted))
                log.warning("%s: listing models failed (%s); using fallback_models", name, reason)
                return list(cls.fallback_models)
            raise
        store_listing(base, api_key, listing, cls.models_ttl)
        return cls._listed(listing.models)

    @classmethod
    def _listed(cls, models: list[str]) -> list[str]:
        return sorted(models) if cls.sort_models else list(models)

    @classmethod
    def _cached_listing(cls, api_key: str | None, api_base: str | None) -> Listing | None:
        return cached_listing(cls.get_api_base(api_base), cls.get_api_key(api_key))

    @classmethod
    def is_image_model(cls, model: str, api_base: str, api_key: str | None) -> bool:
        """In the static ``image_models``, or flagged by a listing already cached for this base URL and key."""
        if model in cls.image_models:
            return True
        cached = cached_listing(api_base, api_key)
        return cached is not None and model in cached.image_models

    @classmethod
    def get_image_models(cls, api_key: str | None = None, api_base: str | None = None) -> list[str]:
        """The static ``image_models`` plus the ids a cached listing flagged as image models (no request)."""
        cached = cls._cached_listing(api_key, api_base)
        return list(dict.fromkeys([*cls.image_models, *(cached.image_models if cached else [])]))

    @classmethod
    def get_vision_models(cls, api_key: str | None = None, api_base: str | None = None) -> list[str]:
        """The static ``vision_models`` plus the ids a cached listing flagged as vision models (no request)."""
        cached = cls._cached_listing(api_key, api_base)
        return list(dict.fromkeys([*cls.vision_models, *(cached.vision_models if cached else [])]))

    # ------------------------------------------------------------------- chat

    @classmethod
    async def create_async_generator(cls, model: str, messages: Messages, **kwargs: Any) -> AsyncResult:
        """Send a chat (or image) request and yield the answer as text pieces and typed events (SPEC 2.6).

        The keywords are those of :meth:`open_chat` (``stream``, ``temperature``, ``max_tokens``, ``api_key`` …);
        ``tool_call_pieces=True`` adds a ``ToolCallPiece`` per streamed tool-call arguments piece (the gateway's
        doors stream calls with them).
        """
        opened = await cls.open_chat(model, messages, **kwargs)
        if opened.events is not None:
            for item in opened.events:
                yield item
            return
        assert opened.response is not None
        try:
            async for item in read_response(opened.response, opened.name, opened.model, opened.timeout, opened.pieces):
                yield item
        except RelayError as error:
            redact_error(error, opened.secrets)
            raise

    @classmethod
    async def stream_async(cls, model: str, messages: Messages, **kwargs: Any) -> AsyncIterator[Any]:
        """Send the request and return the answer's events (what ``create_async_generator`` yields) as one async
        generator: a streamed answer is read with no generator wrapped around the reading one (the path of the
        client and the gateway). Errors before the answer starts are raised here. A subclass that overrides
        ``create_async_generator`` is read through it."""
        if getattr(cls.create_async_generator, "__func__", None) is not _TEMPLATE_GENERATOR:
            return cls.create_async_generator(model, messages, **kwargs)
        opened = await cls.open_chat(model, messages, **kwargs)
        response = opened.response
        if opened.events is None and response is not None and response.content_type == "text/event-stream":
            return read_event_stream(response, opened.name, opened.model, opened.timeout, opened.pieces, opened.secrets)
        return _opened_events(opened)

    @classmethod
    async def complete_async(cls, model: str, messages: Messages, **kwargs: Any) -> list[Any]:
        """Every event of a non-streamed chat answer at once: what ``create_async_generator(stream=False)`` yields,
        without an async generator per call (the path of the client, the gateway and the batch runner). A subclass
        that overrides ``create_async_generator`` is read through it."""
        kwargs["stream"] = False
        if getattr(cls.create_async_generator, "__func__", None) is not _TEMPLATE_GENERATOR:
            return [item async for item in cls.create_async_generator(model, messages, **kwargs)]
        opened = await cls.open_chat(model, messages, **kwargs)
        if opened.events is not None:
            return opened.events
        assert opened.response is not None
        try:
            return await read_answer(opened.response, opened.name, opened.model, opened.timeout, opened.pieces)
        except RelayError as error:
            redact_error(error, opened.secrets)
            raise

    @classmethod
    async def choose_model(
        cls, model: str, *, has_media: bool, api_key: str | None, api_base: str | None, timeout: Any, proxy: Any
    ) -> str:
        """The model of a chat call that names none, before aliases apply: ``""`` here (``get_model`` then takes
        ``default_model``); a server on this machine may ask which one it serves."""
        return model

    @classmethod
    async def open_chat(
        cls,
        model: str,
        messages: Messages,
        *,
        proxy: str | None = None,
        timeout: float | None = None,
        media: MediaListType | None = None,
        api_key: str | None = None,
        api_endpoint: str | None = None,
        api_base: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        stream: bool = False,
        prompt: str | None = None,
        headers: Mapping[str, str] | None = None,
        impersonate: str | None = None,
        extra_parameters: list[str] | tuple[str, ...] | None = None,
        extra_data: dict[str, Any] | None = None,
        total_timeout: float | None = None,
        tool_call_pieces: bool = False,
        **kwargs: Any,
    ) -> OpenedChat:
        """Check the call, send the request and return the open answer (an image model's events at once)."""
        if "base_url" in kwargs:
            base_url = kwargs.pop("base_url")
            api_base = api_base or base_url
        if extra_data is not None and type(extra_data) is not dict:
            extra_data = _mapping("extra_data", extra_data)
        if "extra_body" in kwargs:
            extra_body = _mapping("extra_body", kwargs.pop("extra_body"))
            extra_data = {**(extra_data or {}), **(extra_body or {})}
        if type(messages) is not list or any(type(message) is not dict for message in messages):
            _check_messages(messages)
        await cls.prepare()
        if not model:
            model = await cls.choose_model(
                model, has_media=bool(media), api_key=api_key, api_base=api_base, timeout=timeout, proxy=proxy
            )
        endpoint = _endpoint(api_endpoint or cls.api_endpoint)
        if endpoint and not (api_base or cls.api_base or getattr(cls, "base_url", None)):
            # Only a chat URL was named: the other endpoints (images) hang off its directory.
            api_base = endpoint.rstrip("/").removesuffix("/chat/completions")
        base, api_key = cls._base_and_key(api_base, api_key)
        model = cls.get_model(model, has_media=bool(media), api_key=api_key, api_base=base)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        request = cls._request_options(api_key, proxy, timeout, total_timeout, impersonate)
        name = request["provider"]
        secrets = request["secrets"]
        try:
            if cls.is_image_model(model, base, api_key):
                options = {key: kwargs.pop(key) for key in (*IMAGE_PARAMETERS, *IMAGE_SIZE_PARAMETERS) if key in kwargs}
                _reject_unknown(kwargs, name)
                prompt = prompt or last_user_text(messages)
                data = await cls._post_images(model, prompt, options, base, api_key, headers, extra_data, request)
                info = ProviderInfo(name, model, join_url(base, "images/generations"))
                return OpenedChat(
                    None, name, model, timeout, secrets, [info, ImageResponse(image_urls(data, name), prompt)]
                )

            allowed = cls.extra_parameters
            if extra_parameters:
                allowed = (*allowed, *extra_parameters)
            if max_tokens is None and cls.default_max_tokens is not None and "max_completion_tokens" not in kwargs:
                max_tokens = cls.default_max_tokens
            body: dict[str, Any] = {"messages": render_media(messages, media), "model": model}
            for key, value in (
                ("temperature", temperature),
                ("max_tokens", max_tokens),
                ("top_p", top_p),
                ("stop", stop),
            ):
                if value is not None:
                    body[key] = value
            body["stream"] = stream
            unknown = [key for key in kwargs if key not in allowed]
            if unknown:
                _reject_unknown({key: None for key in unknown}, name)
            for key, value in kwargs.items():
                if value is not None:
                    body[key] = value
            if stream and cls.supports_stream_options and "stream_options" not in body:
                body["stream_options"] = {"include_usage": True}
            if extra_data:
                body.update(extra_data)
            body = cls.prepare_body(body)
            response = await cls._send_chat(endpoint or base, bool(endpoint), stream, api_key, headers, body, request)
        except RelayError as error:
            redact_error(error, secrets)
            raise
        return OpenedChat(response, name, model, timeout, secrets, pieces=tool_call_pieces)

    @classmethod
    async def _send_chat(
        cls,
        where: str,
        is_endpoint: bool,
        stream: bool,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        body: dict[str, Any],
        request: dict[str, Any],
    ) -> Response:
        """``open_response`` of a chat body (``where``: the chat URL, else the base URL it hangs off). With the
        template's ``get_headers``, what it builds and checks besides the body and the call's own ``headers`` is kept
        for the next call with the same values; the call's headers are added to a copy when none of their names is
        already there (else, and for anything unusual, everything is built and checked again)."""
        key = (cls, where, is_endpoint, stream, api_key, request["proxy"], request["timeout"], request["total_timeout"])
        keep = getattr(cls.get_headers, "__func__", None) is _TEMPLATE_HEADERS
        kept = None
        if keep:
            try:
                kept = _sends.get(key)
            except TypeError:  # an unhashable timeout or proxy: the checks below refuse it
                keep = False
            if kept is not None and (kept[0] != cls.headers or kept[1] != cls.redacted):
                kept = None
        payload = _dumps(body)
        sent_headers = None
        if kept is not None:
            url, sent_headers, checked = kept[2], kept[3], kept[4]
            if headers is not None:
                sent_headers = _with_headers(sent_headers, kept[5], headers)
        if sent_headers is None:
            url = where if is_endpoint else join_url(where, "chat/completions")
            sent_headers = cls.get_headers(stream, api_key, headers)
            checked = check_request(url, sent_headers, request["secrets"], request["timeout"], request["total_timeout"])
            if keep and kept is None:
                cls._keep_send(key, url, stream, api_key, headers, sent_headers, request)
        secrets, idle, total = checked
        return await send_checked(
            "POST",
            url,
            sent_headers,
            payload,
            request["proxy"],
            request["ssl"],
            idle,
            total,
            request["impersonate"],
            request["provider"],
            secrets,
        )

    @classmethod
    def _keep_send(
        cls,
        key: tuple[Any, ...],
        url: str,
        stream: bool,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        sent_headers: dict[str, str],
        request: dict[str, Any],
    ) -> None:
        """Keep, under ``key``, what a call without extra headers sends besides its body (see ``_send_chat``)."""
        base = sent_headers if headers is None else cls.get_headers(stream, api_key, None)
        try:
            checked = check_request(url, base, request["secrets"], request["timeout"], request["total_timeout"])
        except (TypeError, ValueError):
            return
        if len(_sends) >= SENDS_KEPT:
            _sends.clear()
        names = frozenset(name.lower() for name in base)
        _sends[key] = (dict(cls.headers), cls.redacted, url, base, checked, names)

    @classmethod
    def _request_options(
        cls,
        api_key: str | None,
        proxy: str | None,
        timeout: float,
        total_timeout: float | None,
        impersonate: str | None,
    ) -> dict[str, Any]:
        """The keywords of ``open_response`` that every request of one call shares."""
        return {
            "proxy": proxy,
            "ssl": cls.ssl,
            "timeout": timeout,
            "total_timeout": total_timeout,
            "impersonate": impersonate,
            "provider": cls.get_name(),
            "secrets": (api_key, *cls.redacted),
        }

    # ----------------------------------------------------------------- images

    @classmethod
    async def count_tokens_async(
        cls, model: str, messages: list[dict[str, Any]], tools: list[Any] | None = None, **options: Any
    ) -> int | None:
        """The exact prompt tokens of a chat request where this provider can count them without a chat request;
        ``None`` (the default: OpenAI-compatible APIs have no such endpoint) means the caller estimates."""
        return None

    @classmethod
    async def generate_images_async(
        cls,
        prompt: str,
        model: str = "",
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        impersonate: str | None = None,
        extra_data: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """POST ``{api_base}/images/generations`` and return the server's JSON (``{"data": [{"url" | "b64_json"}]}``).

        ``options`` are the image keywords (``n``, ``size``, ``quality``, ``style``,
        ``response_format``, ``background``, ``output_format``; ``width`` + ``height`` or
        ``aspect_ratio`` become ``size``). ``model`` defaults to ``default_image_model``,
        else the first of ``image_models``.
        """
        extra_data = _mapping("extra_data", extra_data)
        await cls.prepare()
        base, api_key = cls._base_and_key(api_base, api_key)
        model = model or cls.default_image_model or next(iter(cls.image_models), "")
        if not model:
            raise ValueError(f"{cls.get_name()}: no image model given and none known for this provider: pass model=")
        model = cls.get_model(model)
        _reject_unknown(
            {key: None for key in options if key not in (*IMAGE_PARAMETERS, *IMAGE_SIZE_PARAMETERS)}, cls.get_name()
        )
        request = cls._request_options(
            api_key, proxy, DEFAULT_TIMEOUT if timeout is None else timeout, total_timeout, impersonate
        )
        try:
            return await cls._post_images(model, prompt, options, base, api_key, headers, extra_data, request)
        except RelayError as error:
            redact_error(error, (api_key, *cls.redacted))
            raise

    @classmethod
    async def _post_images(
        cls,
        model: str,
        prompt: str,
        options: dict[str, Any],
        base: str,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        extra_data: dict[str, Any] | None,
        request: dict[str, Any],
    ) -> dict[str, Any]:
        response = await open_response(
            "POST",
            join_url(base, "images/generations"),
            headers=cls.get_headers(False, api_key, headers),
            body=_dumps(image_body(model, prompt, options, extra_data)),
            **request,
        )
        raw = await read_body(response, cls.get_name(), request["timeout"])
        return parse_image_answer(raw, cls.get_name())

    # ------------------------------------------------------------- embeddings

    @classmethod
    def create_embeddings(cls, input: str | list[Any], model: str = "", **kwargs: Any) -> dict[str, Any]:
        """Sync twin of :meth:`create_embeddings_async` (works in scripts and inside a running loop)."""
        return run_sync(cls.create_embeddings_async(input, model, **kwargs))

    @classmethod
    async def create_embeddings_async(
        cls,
        input: str | list[Any],
        model: str = "",
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        total_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        impersonate: str | None = None,
        extra_data: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """POST ``{api_base}/embeddings``; returns the OpenAI shape (``{"object": "list", "data": [{"object":
        "embedding", "index", "embedding"}], "model", "usage"}``), vectors in input order (SPEC 9.4).

        ``input``: a string, a list of strings, a list of token ids or of token-id lists (at most 2,048 items).
        ``options``: ``encoding_format`` (``"float"``, or ``"base64"``: little-endian float32, encoded here
        when the server answered floats), ``dimensions``, ``user``. ``model`` defaults to
        ``default_embedding_model``.
        """
        input = check_embedding_input(input)
        _reject_unknown({key: None for key in options if key not in EMBEDDING_PARAMETERS}, cls.get_name())
        options = check_embedding_options(options)
        extra_data = _mapping("extra_data", extra_data)
        await cls.prepare()
        base, api_key = cls._base_and_key(api_base, api_key)
        model = model or cls.default_embedding_model
        if not model:
            raise ValueError(
                f"{cls.get_name()}: no embedding model given and none known for this provider: pass model="
            )
        model = cls.get_model(model)
        request = cls._request_options(
            api_key, proxy, DEFAULT_TIMEOUT if timeout is None else timeout, total_timeout, impersonate
        )
        name = cls.get_name()
        try:
            body = cls.prepare_embedding_body(embedding_body(model, input, options, extra_data))
            response = await open_response(
                "POST",
                join_url(base, "embeddings"),
                headers=cls.get_headers(False, api_key, headers),
                body=_dumps(body),
                **request,
            )
            raw = await read_body(response, name, request["timeout"])
            answer = parse_embedding_answer(raw, name, model, input_count(input))
        except RelayError as error:
            redact_error(error, (api_key,))
            raise
        return encode_embeddings(answer, options.get("encoding_format"))

    @classmethod
    def prepare_embedding_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Last look at the embeddings body before it is sent; providers with quirks override it."""
        return body


_TEMPLATE_GENERATOR = OpenaiTemplate.create_async_generator.__func__  # type: ignore[attr-defined]
_TEMPLATE_HEADERS = OpenaiTemplate.get_headers.__func__  # type: ignore[attr-defined]


async def _opened_events(opened: OpenedChat) -> AsyncIterator[Any]:
    """The events of an opened call, as ``create_async_generator`` yields them (any answer but an event stream)."""
    if opened.events is not None:
        for item in opened.events:
            yield item
        return
    assert opened.response is not None
    try:
        async for item in read_response(opened.response, opened.name, opened.model, opened.timeout, opened.pieces):
            yield item
    except RelayError as error:
        redact_error(error, opened.secrets)
        raise


def _dumps(body: dict[str, Any]) -> bytes:
    for name, value in body.items():
        if name != "messages":  # message contents are text; everything else may hold numbers
            _check_finite(value, name)
    try:
        return orjson.dumps(body)
    except TypeError as error:
        raise TypeError(f"the request body cannot be sent as JSON: {error}") from None


def _check_finite(value: Any, path: str) -> None:
    """JSON has no NaN or infinity (orjson would silently send ``null``): refuse them, naming where they are."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value}: JSON has no NaN or infinity; pass a finite number")
    elif kind is dict:
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(message, dict) for message in messages):
        raise TypeError(
            f"messages must be a list of dicts like {{'role': 'user', 'content': '...'}}, not {messages!r:.80}"
        )


def _mapping(name: str, value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{name} must be a dict of extra body fields, not {type(value).__name__}")


def _reject_unknown(kwargs: dict[str, Any], name: str) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise InvalidArgumentError(
            f"{name}: unexpected keyword argument(s) {names}; pass extra_parameters=[...] to forward them "
            "or extra_data={...} to merge them into the body",
            min(kwargs),
        )
