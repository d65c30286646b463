"""``OpenaiTemplate``: a provider for any OpenAI-compatible API, configured by subclassing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from .._runner import run_sync
from ..errors import MissingAuthError, RelayError, ResponseError, StreamIncompleteError
from ..http.session import DEFAULT_TIMEOUT, TRANSPORT_ERRORS, Response, open_response, stream_error
from ..http.sse import SSEDecoder
from ..http.status import error_from_data, redact, redact_error
from ..media import data_uri, render_media
from ..responses import AudioResponse, FinishReason, ImageResponse, ProviderInfo, Reasoning, ToolCalls, Usage
from ..typing import AsyncResult, MediaListType, Messages
from .base import AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin

__all__ = ["OpenaiTemplate"]

log = logging.getLogger("llmrelay")

OPENAI_BASE = "https://api.openai.com/v1"
FINISH_GRACE = 0.5  # seconds to wait for a usage trailer after finish_reason when [DONE] does not come
EXCERPT = 200

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
IMAGE_PARAMETERS = ("n", "size", "quality", "style", "response_format", "background", "output_format")
IMAGE_SIZE_PARAMETERS = ("width", "height", "aspect_ratio")

# (api_base, sha256(key)) -> (time, models, image models, vision models)
_model_cache: dict[tuple[str, str], tuple[float, list[str], list[str], list[str]]] = {}


def _key_id(api_key: str | None) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


def _excerpt(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


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
    supports_stream_options: ClassVar[bool] = True
    extra_parameters: ClassVar[tuple[str, ...] | list[str]] = OPENAI_PARAMETERS
    default_max_tokens: ClassVar[int | None] = None  # sent when the caller gives no max_tokens (llama.cpp needs one)

    # ------------------------------------------------------------ configuration

    @classmethod
    async def prepare(cls) -> None:
        """Awaited before every request; a provider that must start something first overrides it."""

    @classmethod
    def get_api_base(cls, api_base: str | None = None) -> str:
        """The base URL for a request: the argument, else the class's, else (OpenaiTemplate itself) OpenAI's."""
        base = api_base or cls.api_base or getattr(cls, "base_url", None)
        if not base:
            if cls is OpenaiTemplate:
                base = os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE
            else:
                raise ValueError(f"{cls.get_name()} has no api_base: set the class attribute or pass api_base=")
        return base.rstrip("/")

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
        return api_key or cls.api_key or os.environ.get(cls.get_api_key_env()) or None

    @classmethod
    def get_headers(
        cls, stream: bool, api_key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Request headers; names merge case-insensitively (later sources win), so there is one ``Authorization``."""
        result: dict[str, str] = {
            "Accept": "text/event-stream" if stream else "application/json",
            "Content-Type": "application/json",
        }
        api_key = cls.get_api_key(api_key)
        if api_key:
            result["Authorization"] = f"Bearer {api_key}"
        for extra in (cls.headers, headers):
            if extra:
                for name, value in extra.items():
                    lowered = name.lower()
                    for existing in [key for key in result if key.lower() == lowered]:
                        del result[existing]
                    if value is not None:  # None removes the header
                        result[name] = value
        return result

    @classmethod
    def _check_auth(cls, api_key: str | None) -> None:
        if cls.needs_auth and not api_key:
            raise MissingAuthError(
                f"{cls.get_name()} needs an API key: set {cls.get_api_key_env()} or pass api_key=",
                provider=cls.get_name(),
            )
        if api_key and (not api_key.isprintable() or api_key != api_key.strip()):
            raise ValueError(
                f"{cls.get_name()}: the API key has surrounding spaces or a control character such as a line break; "
                f"check {cls.get_api_key_env()} or the api_key= argument"
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
    ) -> list[str]:
        """The model ids the server lists (cached per base URL and key); sync, also inside a running loop."""
        return run_sync(cls.get_models_async(api_key=api_key, api_base=api_base, timeout=timeout, proxy=proxy))

    @classmethod
    async def get_models_async(
        cls,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        proxy: str | None = None,
    ) -> list[str]:
        """The async twin of :meth:`get_models`."""
        await cls.prepare()
        base = cls.get_api_base(api_base)
        api_key = cls.get_api_key(api_key)
        cls._check_auth(api_key)
        key = (base, _key_id(api_key))
        cached = _model_cache.get(key)
        if cached and time.monotonic() - cached[0] < cls.models_ttl:
            return cls._listed(cached[1])
        try:
            response = await open_response(
                "GET",
                f"{base}/models",
                headers=cls.get_headers(False, api_key),
                proxy=proxy,
                ssl=cls.ssl,
                timeout=timeout or DEFAULT_TIMEOUT,
                provider=cls.get_name(),
                secrets=(api_key,),
            )
            try:
                body = await _read_body(response, timeout or DEFAULT_TIMEOUT, cls.get_name())
            finally:
                await response.release()
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ResponseError(
                    f"the model list is not JSON: {_excerpt(body)!r}", provider=cls.get_name()
                ) from None
            models, image_models, vision_models = cls._parse_models(data)
        except MissingAuthError as error:
            redact_error(error, (api_key,))
            raise
        except (RelayError, *TRANSPORT_ERRORS) as error:  # type: ignore[misc]
            if isinstance(error, RelayError):
                redact_error(error, (api_key,))
            if cls.fallback_models:
                reason = redact(str(error) or type(error).__name__, (api_key,))
                log.warning("%s: listing models failed (%s); using fallback_models", cls.get_name(), reason)
                return list(cls.fallback_models)
            raise
        _model_cache[key] = (time.monotonic(), models, image_models, vision_models)
        return cls._listed(models)

    @classmethod
    def _listed(cls, models: list[str]) -> list[str]:
        return sorted(models) if cls.sort_models else list(models)

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str], list[str]]:
        """(ids in the server's order, ids flagged as image models, ids flagged as vision models)."""
        if isinstance(data, dict):
            entries = data.get("data")
            if entries is None:
                entries = data.get("models")
        else:
            entries = data
        if not isinstance(entries, list):
            raise ResponseError(f"unexpected model list: {_excerpt(orjson.dumps(data))!r}", provider=cls.get_name())
        models: list[str] = []
        image_models: list[str] = []
        vision_models: list[str] = []
        for entry in entries:
            if isinstance(entry, str):
                models.append(entry)
                continue
            if not isinstance(entry, dict):
                continue
            model_id = entry.get("id") or entry.get("name")
            if not isinstance(model_id, str) or not model_id:
                continue
            models.append(model_id)
            if entry.get("image") or entry.get("type") == "image" or entry.get("supports_images"):
                image_models.append(model_id)
            if entry.get("vision"):
                vision_models.append(model_id)
        return models, image_models, vision_models

    @classmethod
    def is_image_model(cls, model: str, api_base: str, api_key: str | None) -> bool:
        """In the static ``image_models``, or flagged by a listing already cached for this base URL and key."""
        if model in cls.image_models:
            return True
        cached = _model_cache.get((api_base, _key_id(api_key)))
        return bool(cached and model in cached[2])

    @classmethod
    def get_image_models(cls, api_key: str | None = None, api_base: str | None = None) -> list[str]:
        """The static ``image_models`` plus the ids a cached listing flagged as image models (no request)."""
        return cls._flagged(2, cls.image_models, api_key, api_base)

    @classmethod
    def get_vision_models(cls, api_key: str | None = None, api_base: str | None = None) -> list[str]:
        """The static ``vision_models`` plus the ids a cached listing flagged as vision models (no request)."""
        return cls._flagged(3, cls.vision_models, api_key, api_base)

    @classmethod
    def _flagged(cls, slot: int, static: list[str], api_key: str | None, api_base: str | None) -> list[str]:
        cached = _model_cache.get((cls.get_api_base(api_base), _key_id(cls.get_api_key(api_key))))
        flagged: list[str] = cached[slot] if cached else []  # type: ignore[assignment]
        return list(dict.fromkeys([*static, *flagged]))

    # ------------------------------------------------------------------- chat

    @classmethod
    async def create_async_generator(
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
        **kwargs: Any,
    ) -> AsyncResult:
        """Send a chat (or image) request and yield the answer as text pieces and typed events."""
        if "base_url" in kwargs:
            base_url = kwargs.pop("base_url")
            api_base = api_base or base_url
        if "extra_body" in kwargs:
            extra_body = kwargs.pop("extra_body")
            extra_data = {**(extra_data or {}), **(extra_body or {})}
        if not isinstance(messages, (list, tuple)) or not all(isinstance(message, dict) for message in messages):
            raise TypeError(
                f"messages must be a list of dicts like {{'role': 'user', 'content': '...'}}, not {messages!r:.80}"
            )
        await cls.prepare()
        endpoint = api_endpoint or cls.api_endpoint
        try:
            base = cls.get_api_base(api_base)
        except ValueError:
            if not endpoint:
                raise
            # Only a chat URL was named: the other endpoints (images) hang off its directory.
            base = endpoint.rstrip("/").removesuffix("/chat/completions")
        api_key = cls.get_api_key(api_key)
        cls._check_auth(api_key)
        model = cls.get_model(model, has_media=bool(media), api_key=api_key, api_base=base)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        transport = {
            "proxy": proxy,
            "ssl": cls.ssl,
            "timeout": timeout,
            "total_timeout": total_timeout,
            "impersonate": impersonate,
            "provider": cls.get_name(),
            "secrets": (api_key,),
        }

        try:
            if cls.is_image_model(model, base, api_key):
                image_options = {}
                for name in (*IMAGE_PARAMETERS, *IMAGE_SIZE_PARAMETERS):
                    if name in kwargs:
                        image_options[name] = kwargs.pop(name)
                _reject_unknown(kwargs, cls.get_name())
                async for item in cls._generate_image(
                    model, messages, prompt, image_options, base, api_key, headers, extra_data, transport
                ):
                    yield item
                return

            allowed = cls.extra_parameters
            if extra_parameters:
                allowed = (*allowed, *extra_parameters)
            body: dict[str, Any] = {"messages": render_media(messages, media), "model": model}
            for name, value in (
                ("temperature", temperature),
                ("max_tokens", max_tokens),
                ("top_p", top_p),
                ("stop", stop),
            ):
                if value is not None:
                    body[name] = value
            body["stream"] = stream
            unknown = [name for name in kwargs if name not in allowed]
            if unknown:
                _reject_unknown({name: None for name in unknown}, cls.get_name())
            for name, value in kwargs.items():
                if value is not None:
                    body[name] = value
            if stream and cls.supports_stream_options and "stream_options" not in body:
                body["stream_options"] = {"include_usage": True}
            if extra_data:
                body.update(extra_data)
            body = cls.prepare_body(body)
            url = endpoint or f"{base}/chat/completions"
            response = await open_response(
                "POST", url, headers=cls.get_headers(stream, api_key, headers), body=_dumps(body), **transport
            )
            async for item in cls._read_response(response, model, timeout):
                yield item
        except RelayError as error:
            redact_error(error, (api_key,))
            raise

    @classmethod
    async def _read_response(cls, response: Response, model: str, timeout: float) -> AsyncResult:
        content_type = response.content_type
        if content_type == "text/event-stream":
            async for item in cls._read_event_stream(response, model, timeout):
                yield item
            return
        try:
            if content_type == "application/json" or content_type.endswith("+json"):
                body = await _read_body(response, timeout, cls.get_name())
                for item in cls._events_from_completion(body, model, response.url):
                    yield item
            elif content_type == "text/plain":
                text = (await _read_body(response, timeout, cls.get_name())).decode("utf-8", "replace")
                yield ProviderInfo(cls.get_name(), model, response.url)
                if text:
                    yield text
            else:
                raise ResponseError(
                    f"unexpected content type {content_type or '(none)'!r} from {response.url}",
                    status=response.status,
                    provider=cls.get_name(),
                )
        finally:
            await response.release()

    @classmethod
    def _events_from_completion(cls, body: bytes, model: str, url: str) -> list[Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ResponseError(f"the answer is not valid JSON: {_excerpt(body)!r}", provider=cls.get_name()) from None
        if not isinstance(data, dict):
            raise ResponseError(f"unexpected answer: {_excerpt(body)!r}", provider=cls.get_name())
        if data.get("error") is not None:
            raise error_from_data(data, provider=cls.get_name()) or ResponseError(_excerpt(body))
        events: list[Any] = [_provider_info(cls.get_name(), data, model, url)]
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise ResponseError(f"the answer is not a chat completion: {_excerpt(body)!r}", provider=cls.get_name())
        try:
            choice = choices[0] if choices else {}
            message = choice.get("message") or {}
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                events.append(Reasoning(reasoning))
            content = message.get("content")
            if content:
                events.append(content if type(content) is str else _parts_text(content))
            if message.get("refusal"):
                events.append(message["refusal"])
            calls = [_normalize_call(call, index) for index, call in enumerate(message.get("tool_calls") or [])]
            if calls:
                events.append(ToolCalls(calls))
            audio = message.get("audio")
            if isinstance(audio, dict) and audio.get("data"):
                events.append(AudioResponse(audio["data"], audio.get("transcript") or ""))
            usage = data.get("usage") or (data.get("x_groq") or {}).get("usage")
            if isinstance(usage, dict):
                events.append(Usage.from_dict(usage))
            reason = choice.get("finish_reason")
            if calls and reason in (None, "stop"):
                reason = "tool_calls"
            if reason:
                events.append(FinishReason(reason))
        except (AttributeError, TypeError, KeyError):
            raise ResponseError(
                f"the answer has an unexpected shape: {_excerpt(body)!r}", provider=cls.get_name()
            ) from None
        return events

    @classmethod
    async def _read_event_stream(cls, response: Response, model: str, timeout: float) -> AsyncResult:
        name = cls.get_name()
        url = response.url
        decoder = SSEDecoder()
        feed = decoder.feed
        read = response.read_chunk
        loads = orjson.loads
        text: list[str] = []
        calls = _ToolCallAccumulator()
        usage: dict[str, Any] | None = None
        finish: str | None = None
        audio_data: list[str] = []
        audio_transcript: list[str] = []
        info_pending = True
        finished_at = 0.0
        complete = False
        try:
            while not complete:
                try:
                    if finish is None:
                        chunk = await read()
                    else:
                        remaining = finished_at + FINISH_GRACE - time.monotonic()
                        if remaining <= 0:
                            break
                        chunk = await asyncio.wait_for(read(), remaining)
                except TRANSPORT_ERRORS as error:  # includes the idle-read and grace-period timeouts
                    if finish is not None:
                        break  # finish_reason came: what is missing is at most the [DONE] / usage trailer
                    raise stream_error(
                        error,
                        partial_text="".join(text),
                        url=url,
                        timeout=timeout,
                        provider=name,
                        total_timeout=response.total_timeout,
                        deadline=response.deadline,
                    ) from None
                events = feed(chunk) if chunk else decoder.flush()
                try:
                    for event, data in events:
                        if event != b"message":
                            if event == b"error":
                                raise _stream_error_event(data, name)
                            continue
                        if not data:
                            continue
                        if data == b"[DONE]":
                            complete = True
                            break
                        try:
                            obj = loads(data)
                        except orjson.JSONDecodeError:
                            raise ResponseError(
                                f"a stream event is not JSON: {_excerpt(data)!r}", provider=name
                            ) from None
                        if type(obj) is not dict:
                            raise ResponseError(
                                f"a stream event is not a JSON object: {_excerpt(data)!r}", provider=name
                            )
                        if "error" in obj and obj["error"] is not None:
                            raise error_from_data(obj, provider=name) or ResponseError(_excerpt(data), provider=name)
                        if info_pending:
                            info_pending = False
                            yield _provider_info(name, obj, model, url)
                        choices = obj.get("choices")
                        if choices:
                            choice = choices[0]
                            if choice.get("index", 0) != 0:
                                choice = next((c for c in choices if c.get("index", 0) == 0), None)
                            if choice:
                                delta = choice.get("delta")
                                if delta:
                                    content = delta.get("content")
                                    if content:
                                        if type(content) is not str:
                                            content = _parts_text(content)
                                        text.append(content)
                                        yield content
                                    if len(delta) > 1 or content is None:
                                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                                        if reasoning and type(reasoning) is str:
                                            yield Reasoning(reasoning)
                                        tool_calls = delta.get("tool_calls")
                                        if tool_calls:
                                            calls.add(tool_calls)
                                        refusal = delta.get("refusal")
                                        if refusal:
                                            text.append(refusal)
                                            yield refusal
                                        audio = delta.get("audio")
                                        if audio:
                                            audio_data.append(audio.get("data") or "")
                                            audio_transcript.append(audio.get("transcript") or "")
                                reason = choice.get("finish_reason")
                                if reason and finish is None:
                                    finish = reason
                                    finished_at = time.monotonic()
                        chunk_usage = obj.get("usage")
                        if not chunk_usage and "x_groq" in obj:
                            chunk_usage = (obj["x_groq"] or {}).get("usage")
                        if chunk_usage:
                            if type(chunk_usage) is not dict:
                                raise TypeError
                            usage = chunk_usage
                except (AttributeError, TypeError, KeyError):
                    # A chunk whose choices / delta / usage are not the objects the API defines.
                    raise ResponseError(
                        f"a stream event has an unexpected shape: {_excerpt(data)!r}", provider=name
                    ) from None
                if not chunk:
                    break
            if not complete and finish is None:
                raise _incomplete(name, "".join(text))
        finally:
            await response.release(drain=complete)
        if calls:
            yield ToolCalls(calls.result())
        if audio_data or audio_transcript:
            yield AudioResponse("".join(audio_data), "".join(audio_transcript))
        if usage:
            yield Usage.from_dict(usage)
        if calls and finish in (None, "stop"):
            finish = "tool_calls"
        if finish:
            yield FinishReason(finish)

    # ----------------------------------------------------------------- images

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
        await cls.prepare()
        base = cls.get_api_base(api_base)
        api_key = cls.get_api_key(api_key)
        cls._check_auth(api_key)
        model = model or cls.default_image_model or next(iter(cls.image_models), "")
        if not model:
            raise ValueError(f"{cls.get_name()}: no image model given and none known for this provider: pass model=")
        model = cls.get_model(model)
        unknown = {name: None for name in options if name not in (*IMAGE_PARAMETERS, *IMAGE_SIZE_PARAMETERS)}
        _reject_unknown(unknown, cls.get_name())
        transport = {
            "proxy": proxy,
            "ssl": cls.ssl,
            "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
            "total_timeout": total_timeout,
            "impersonate": impersonate,
            "provider": cls.get_name(),
            "secrets": (api_key,),
        }
        return await cls._post_images(model, prompt, options, base, api_key, headers, extra_data, transport)

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
        transport: dict[str, Any],
    ) -> dict[str, Any]:
        options = dict(options)
        body: dict[str, Any] = {"model": model, "prompt": prompt}
        width, height, ratio = (
            options.pop("width", None),
            options.pop("height", None),
            options.pop("aspect_ratio", None),
        )
        if "size" not in options:
            if width and height:
                options["size"] = f"{width}x{height}"
            elif ratio:
                options["size"] = _size_for_ratio(str(ratio))
        body.update({name: value for name, value in options.items() if value is not None})
        if extra_data:
            body.update(extra_data)
        response = await open_response(
            "POST",
            f"{base}/images/generations",
            headers=cls.get_headers(False, api_key, headers),
            body=_dumps(body),
            **transport,
        )
        try:
            raw = await _read_body(response, transport["timeout"], cls.get_name())
        finally:
            await response.release()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ResponseError(f"the image answer is not JSON: {_excerpt(raw)!r}", provider=cls.get_name()) from None
        if isinstance(data, dict) and data.get("error") is not None:
            raise error_from_data(data, provider=cls.get_name()) or ResponseError(_excerpt(raw))
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
            raise ResponseError(f"the image answer has an unexpected shape: {_excerpt(raw)!r}", provider=cls.get_name())
        if not any(item.get("url") or item.get("b64_json") for item in entries):
            raise ResponseError(f"the image answer holds no image: {_excerpt(raw)!r}", provider=cls.get_name())
        return data

    @classmethod
    async def _generate_image(
        cls,
        model: str,
        messages: Messages,
        prompt: str | None,
        options: dict[str, Any],
        base: str,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        extra_data: dict[str, Any] | None,
        transport: dict[str, Any],
    ) -> AsyncResult:
        prompt = prompt or _last_user_text(messages)
        data = await cls._post_images(model, prompt, options, base, api_key, headers, extra_data, transport)
        images = []
        for item in data["data"]:
            if item.get("url"):
                images.append(item["url"])
            elif item.get("b64_json"):
                try:
                    decoded = base64.b64decode(item["b64_json"], validate=True)
                except ValueError:
                    raise ResponseError("an image in the answer is not valid base64", provider=cls.get_name()) from None
                images.append(data_uri(decoded))
        yield ProviderInfo(cls.get_name(), model, f"{base}/images/generations")
        yield ImageResponse(images, prompt)


def _provider_info(name: str, data: dict[str, Any], model: str, url: str) -> ProviderInfo:
    """``ProviderInfo`` from the first chunk (or the whole answer): the model, id and time the server reports."""
    response_id, created, fingerprint = data.get("id"), data.get("created"), data.get("system_fingerprint")
    return ProviderInfo(
        name,
        data.get("model") or model,
        url,
        response_id if isinstance(response_id, str) else None,
        created if isinstance(created, int) else None,
        fingerprint if isinstance(fingerprint, str) else None,
    )


def _parts_text(content: Any) -> str:
    """The text of a ``content`` that is a list of parts (some servers send those); else TypeError."""
    if type(content) is not list:
        raise TypeError(f"content is {type(content).__name__}, not text")
    return "".join(
        part.get("text") or "" for part in content if type(part) is dict and part.get("type", "text") == "text"
    )


def _incomplete(name: str, partial: str) -> RelayError:
    return StreamIncompleteError(
        f"the stream ended before the answer was complete (no finish_reason, no [DONE]) after {len(partial)} characters",
        partial_text=partial,
        provider=name,
    )


def _stream_error_event(data: bytes, name: str) -> RelayError:
    try:
        obj = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        obj = None
    if obj is not None:
        error = error_from_data(obj, provider=name)
        if error is not None:
            return error
    return ResponseError(f"the server sent an error event: {_excerpt(data)!r}", provider=name)


async def _read_body(response: Response, timeout: float, name: str) -> bytes:
    try:
        return await response.read()
    except TRANSPORT_ERRORS as error:
        raise stream_error(
            error,
            partial_text="",
            url=response.url,
            timeout=timeout,
            provider=name,
            total_timeout=response.total_timeout,
            deadline=response.deadline,
        ) from None


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError as error:
        raise TypeError(f"the request body cannot be sent as JSON: {error}") from None


def _reject_unknown(kwargs: dict[str, Any], name: str) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(
            f"{name}: unexpected keyword argument(s) {names}; pass extra_parameters=[...] to forward them "
            "or extra_data={...} to merge them into the body"
        )


def _last_user_text(messages: Messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


def _size_for_ratio(ratio: str) -> str:
    sizes = {"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792", "3:2": "1536x1024", "2:3": "1024x1536"}
    if ratio not in sizes:
        raise ValueError(f"aspect_ratio {ratio!r} is not one of {', '.join(sizes)}; pass size='WxH' instead")
    return sizes[ratio]


def _normalize_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    return {
        "id": call.get("id") or f"call_{index}",
        "type": call.get("type") or "function",
        "function": {"name": function.get("name") or "", "arguments": arguments},
    }


class _ToolCallAccumulator:
    """Joins streamed tool-call deltas into complete calls.

    With ``index``, deltas of one index belong to one call. Without it, a delta
    with a new ``id`` starts a call, and a delta without ``id`` continues the call
    last started at the same position of the delta list.
    """

    __slots__ = ("_by_key", "_by_position", "_calls")

    def __init__(self) -> None:
        self._calls: list[dict[str, Any]] = []
        self._by_key: dict[Any, dict[str, Any]] = {}
        self._by_position: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                continue
            call_id = delta.get("id")
            index = delta.get("index")
            if index is not None:
                key: Any = ("index", index)
            elif call_id:
                key = ("id", call_id)
            else:
                current = self._by_position.get(position)
                key = None if current is None else current["_key"]
            call = self._by_key.get(key) if key is not None else None
            if call is not None and call_id and call["id"] and call_id != call["id"]:
                call = None  # a new id at a used index: a new call (servers that send every call as index 0)
            if call is None:
                key = key if key is not None else ("position", position, len(self._calls))
                call = {"_key": key, "id": "", "type": "function", "name": "", "arguments": []}
                self._by_key[key] = call
                self._calls.append(call)
            self._by_position[position] = call
            if call_id:
                call["id"] = call_id
            if delta.get("type"):
                call["type"] = delta["type"]
            function = delta.get("function")
            if function:
                name = function.get("name")
                if name and name != call["name"]:
                    call["name"] = call["name"] + name if call["name"] else name
                arguments = function.get("arguments")
                if arguments is not None:
                    call["arguments"].append(
                        arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
                    )

    def result(self) -> list[dict[str, Any]]:
        return [
            {
                "id": call["id"] or f"call_{number}",
                "type": call["type"],
                "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
            }
            for number, call in enumerate(self._calls)
        ]
