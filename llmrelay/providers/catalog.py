"""The built-in provider catalog: one small declarative class per known OpenAI-compatible API.

Look providers up by name (case-insensitive; spaces, ``-``, ``_`` and ``.`` are ignored, so
``"LM Studio"`` and ``"llama.cpp"`` work)::

    from llmrelay.providers.catalog import get_provider, default_provider

    Groq = get_provider("groq")
    cls = default_provider()   # LLMRELAY_PROVIDER, else the first provider whose key is set, else Local

Each class sets its base URL, the environment variable holding its key, a default model
and the quirks that need code: parameters the API renames (adapted in ``prepare_body``),
parameters it rejects (an :class:`UnsupportedParameterError` before any request, never a
silent drop), no ``stream_options``, no model listing.

``Local`` (the embedded llama.cpp model) lives in :mod:`llmrelay.providers.local` and is
imported only when asked for, so importing the catalog stays cheap.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from .._env import getenv
from ..errors import InvalidArgumentError, UnsupportedParameterError
from .template import OpenaiTemplate

__all__ = [
    "DEFAULT_ORDER",
    "PROVIDERS",
    "CatalogProvider",
    "Cerebras",
    "Custom",
    "DeepInfra",
    "DeepSeek",
    "Fireworks",
    "Gemini",
    "Groq",
    "LMStudio",
    "LlamaCpp",
    "SelfHosted",
    "Mistral",
    "Nvidia",
    "Ollama",
    "OpenAI",
    "OpenRouter",
    "Perplexity",
    "Together",
    "UnsupportedParameterError",
    "VLLM",
    "XAI",
    "default_provider",
    "get_provider",
    "is_configured",
    "provider_names",
]


class CatalogProvider(OpenaiTemplate):
    """Base of the catalog classes: declarative parameter quirks and an optional base-URL variable.

    * ``api_base_env`` - an environment variable that, when set, replaces ``api_base``
      (an ``api_base=`` argument still wins);
    * ``renamed_parameters`` - ``{"openai_name": "provider_name"}``, applied to the body;
    * ``unsupported_parameters`` - body keys the API rejects: :class:`UnsupportedParameterError`
      names them instead of a server-side 400 (they are never dropped silently);
    """

    api_base_env: ClassVar[str | None] = None
    renamed_parameters: ClassVar[dict[str, str]] = {}
    unsupported_parameters: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def get_api_base(cls, api_base: str | None = None) -> str:
        if not api_base and cls.api_base_env:
            api_base = getenv(cls.api_base_env) or None
        return super().get_api_base(api_base)

    @classmethod
    def prepare_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        rejected = [name for name in cls.unsupported_parameters if name in body]
        if rejected:
            raise cls.unsupported(rejected)
        for name, target in cls.renamed_parameters.items():
            if name in body:
                if target in body:
                    raise UnsupportedParameterError(
                        f"{cls.get_name()} calls {name!r} {target!r}: pass only one of them",
                        provider=cls.get_name(),
                    )
                body[target] = body.pop(name)
        return body

    @classmethod
    def unsupported(cls, names: list[str], detail: str = "") -> UnsupportedParameterError:
        listed = ", ".join(names)
        return UnsupportedParameterError(
            f"{cls.get_name()} does not support {listed}{detail}: its API rejects the request; "
            "leave it out or choose another provider",
            provider=cls.get_name(),
        )


# ------------------------------------------------------------------ cloud APIs (a key is required)


class OpenAI(CatalogProvider):
    """OpenAI. ``OPENAI_BASE_URL`` replaces the base URL, as in the ``openai`` package."""

    label = "OpenAI"
    api_base = "https://api.openai.com/v1"
    api_base_env = "OPENAI_BASE_URL"
    api_key_env = "OPENAI_API_KEY"
    needs_auth = True
    default_model = "gpt-4.1-mini"
    default_vision_model = "gpt-4.1-mini"
    image_models: ClassVar[list[str]] = ["gpt-image-1", "dall-e-3", "dall-e-2"]
    default_image_model = "gpt-image-1"
    default_embedding_model = "text-embedding-3-small"


class Groq(CatalogProvider):
    """Groq. Rejects ``logprobs``, ``logit_bias``, ``top_logprobs``, ``messages[].name`` and ``n`` other than 1."""

    label = "Groq"
    api_base = "https://api.groq.com/openai/v1"
    api_key_env = "GROQ_API_KEY"
    needs_auth = True
    default_model = "llama-3.3-70b-versatile"
    unsupported_parameters = ("logprobs", "logit_bias", "top_logprobs")

    @classmethod
    def prepare_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        body = super().prepare_body(body)
        n = body.get("n")
        if n is not None and n != 1:
            raise cls.unsupported(["n"], f" other than 1 (got n={n!r})")
        messages = body.get("messages") or []
        if any(isinstance(message, dict) and "name" in message for message in messages):
            raise cls.unsupported(["messages[].name"])
        return body


class OpenRouter(CatalogProvider):
    label = "OpenRouter"
    api_base = "https://openrouter.ai/api/v1"
    api_key_env = "OPENROUTER_API_KEY"
    needs_auth = True
    default_model = "meta-llama/llama-3.3-70b-instruct"
    headers: ClassVar[dict[str, str]] = {"X-Title": "llmrelay"}


class Together(CatalogProvider):
    label = "Together"
    accepts_reasoning_effort = False
    api_base = "https://api.together.xyz/v1"
    api_key_env = "TOGETHER_API_KEY"
    needs_auth = True
    default_model = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    image_models: ClassVar[list[str]] = ["black-forest-labs/FLUX.1-schnell"]
    default_image_model = "black-forest-labs/FLUX.1-schnell"


class DeepInfra(CatalogProvider):
    label = "DeepInfra"
    accepts_reasoning_effort = False
    api_base = "https://api.deepinfra.com/v1/openai"
    api_key_env = "DEEPINFRA_API_KEY"
    needs_auth = True
    default_model = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


class Mistral(CatalogProvider):
    """Mistral. Calls ``seed`` ``random_seed``; knows no ``max_completion_tokens``; rejects ``stream_options``
    (usage comes in the last chunk anyway)."""

    label = "Mistral"
    accepts_reasoning_effort = False
    api_base = "https://api.mistral.ai/v1"
    api_key_env = "MISTRAL_API_KEY"
    needs_auth = True
    default_model = "mistral-small-latest"
    default_embedding_model = "mistral-embed"
    supports_stream_options = False
    renamed_parameters: ClassVar[dict[str, str]] = {"seed": "random_seed", "max_completion_tokens": "max_tokens"}


class DeepSeek(CatalogProvider):
    label = "DeepSeek"
    accepts_reasoning_effort = False
    api_base = "https://api.deepseek.com"
    api_key_env = "DEEPSEEK_API_KEY"
    needs_auth = True
    default_model = "deepseek-chat"


class XAI(CatalogProvider):
    label = "xAI"
    api_base = "https://api.x.ai/v1"
    api_key_env = "XAI_API_KEY"
    needs_auth = True
    default_model = "grok-4"


class Gemini(CatalogProvider):
    """Google Gemini through its OpenAI-compatible endpoint (the model list names models ``models/...``)."""

    label = "Gemini"
    api_base = "https://generativelanguage.googleapis.com/v1beta/openai"
    api_key_env = "GEMINI_API_KEY"
    needs_auth = True
    default_model = "gemini-2.5-flash"


class Nvidia(CatalogProvider):
    label = "Nvidia"
    accepts_reasoning_effort = False
    api_base = "https://integrate.api.nvidia.com/v1"
    api_key_env = "NVIDIA_API_KEY"
    needs_auth = True
    default_model = "meta/llama-3.3-70b-instruct"


class Fireworks(CatalogProvider):
    label = "Fireworks"
    api_base = "https://api.fireworks.ai/inference/v1"
    api_key_env = "FIREWORKS_API_KEY"
    needs_auth = True
    default_model = "accounts/fireworks/models/llama-v3p3-70b-instruct"


class Cerebras(CatalogProvider):
    """Cerebras. Rejects ``frequency_penalty``, ``presence_penalty``, ``logit_bias``, ``parallel_tool_calls``
    and ``service_tier`` with a 400."""

    label = "Cerebras"
    api_base = "https://api.cerebras.ai/v1"
    api_key_env = "CEREBRAS_API_KEY"
    needs_auth = True
    default_model = "gpt-oss-120b"
    unsupported_parameters = (
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "parallel_tool_calls",
        "service_tier",
    )


class Perplexity(CatalogProvider):
    """Perplexity (Sonar). No ``/v1`` in the base URL and no model listing: ``fallback_models`` answer it."""

    label = "Perplexity"
    api_base = "https://api.perplexity.ai"
    api_key_env = "PERPLEXITY_API_KEY"
    needs_auth = True
    default_model = "sonar"
    fallback_models: ClassVar[list[str]] = [
        "sonar",
        "sonar-pro",
        "sonar-reasoning",
        "sonar-reasoning-pro",
        "sonar-deep-research",
    ]


# --------------------------------------------------------------- servers on this machine (no key)


class SelfHosted(CatalogProvider):
    """A server running on this machine: no key needed (one is sent if its variable is set).

    Without a model and without ``default_model``, the first model the server lists is used
    (LM Studio, vLLM and llama.cpp serve whatever was loaded).
    """

    needs_auth = False

    @classmethod
    async def choose_model(
        cls, model: str, *, has_media: bool, api_key: str | None, api_base: str | None, timeout: Any, proxy: Any
    ) -> str:
        if not model and not cls.default_model and not (has_media and cls.default_vision_model):
            model = await cls.first_model(api_key=api_key, api_base=api_base, timeout=timeout, proxy=proxy)
        return model

    @classmethod
    async def first_model(
        cls,
        api_key: str | None = None,
        api_base: str | None = None,
        timeout: float | None = None,
        proxy: str | None = None,
    ) -> str:
        """The first model the server lists (the default when none is given)."""
        models = await cls.get_models_async(api_key=api_key, api_base=api_base, timeout=timeout, proxy=proxy)
        if not models:
            raise InvalidArgumentError(
                f"{cls.get_name()} at {cls.get_api_base(api_base)} lists no model: load one or pass a model name",
                "model",
            )
        return models[0]


class Ollama(SelfHosted):
    label = "Ollama"
    api_base = "http://localhost:11434/v1"
    api_base_env = "OLLAMA_API_BASE"
    api_key_env = "OLLAMA_API_KEY"
    default_model = "llama3.2"


class LMStudio(SelfHosted):
    label = "LM Studio"
    api_base = "http://localhost:1234/v1"
    api_base_env = "LMSTUDIO_API_BASE"
    api_key_env = "LMSTUDIO_API_KEY"


class VLLM(SelfHosted):
    label = "vLLM"
    api_base = "http://localhost:8000/v1"
    api_base_env = "VLLM_API_BASE"
    api_key_env = "VLLM_API_KEY"


class LlamaCpp(SelfHosted):
    """A llama.cpp server that is already running (``llama-server`` or ``python -m llama_cpp.server``)."""

    label = "llama.cpp"
    api_base = "http://localhost:8080/v1"
    default_max_tokens = 2048  # llama-server never stops without a limit
    api_base_env = "LLAMACPP_API_BASE"
    api_key_env = "LLAMACPP_API_KEY"


class Custom(SelfHosted):
    """Any OpenAI-compatible server: base URL from ``LLMRELAY_API_BASE`` (or ``api_base=``), key from
    ``LLMRELAY_API_KEY`` (optional), model: the argument, else the first one the server lists."""

    label = "Custom"
    api_base = ""
    api_base_env = "LLMRELAY_API_BASE"
    api_key_env = "LLMRELAY_API_KEY"

    @classmethod
    def get_api_base(cls, api_base: str | None = None) -> str:
        base = api_base or getenv("LLMRELAY_API_BASE")
        if not base:
            raise ValueError(
                "Custom needs a base URL: set LLMRELAY_API_BASE (e.g. http://localhost:8000/v1) "
                "or pass api_base= (--api-base on the command line)"
            )
        return super().get_api_base(base)


# --------------------------------------------------------------------------------- lookup

PROVIDERS: dict[str, type[OpenaiTemplate]] = {
    "openai": OpenAI,
    "groq": Groq,
    "openrouter": OpenRouter,
    "together": Together,
    "deepinfra": DeepInfra,
    "mistral": Mistral,
    "deepseek": DeepSeek,
    "xai": XAI,
    "gemini": Gemini,
    "nvidia": Nvidia,
    "fireworks": Fireworks,
    "cerebras": Cerebras,
    "perplexity": Perplexity,
    "ollama": Ollama,
    "lmstudio": LMStudio,
    "vllm": VLLM,
    "llamacpp": LlamaCpp,
    "custom": Custom,
}
"""Lower-case name -> class. ``"local"`` is not in it (imported lazily by :func:`get_provider`)."""

DEFAULT_ORDER: tuple[str, ...] = (
    "openai",
    "groq",
    "openrouter",
    "together",
    "deepinfra",
    "mistral",
    "deepseek",
    "xai",
    "gemini",
    "nvidia",
    "fireworks",
    "cerebras",
    "perplexity",
)
"""The order :func:`default_provider` checks for a key when ``LLMRELAY_PROVIDER`` is not set."""

_ALIASES = {
    "google": "gemini",
    "grok": "xai",
    "togetherai": "together",
    "fireworksai": "fireworks",
    "mistralai": "mistral",
    "llamaserver": "llamacpp",
}


def _normalize(name: str) -> str:
    key = name.strip().lower()
    for char in " -_.":
        key = key.replace(char, "")
    return _ALIASES.get(key, key)


def provider_names() -> list[str]:
    """Every name :func:`get_provider` knows, in catalog order (``"local"`` last)."""
    return [*PROVIDERS, "local"]


def get_provider(name: str) -> type[OpenaiTemplate]:
    """The provider class for a catalog name, case-insensitively; ``ValueError`` lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"a provider name must be a string, not {type(name).__name__}")
    key = _normalize(name)
    cls = PROVIDERS.get(key)
    if cls is not None:
        return cls
    if key == "local":
        from .local import Local

        return Local
    raise ValueError(f"unknown provider {name!r}; known providers: {', '.join(provider_names())}")


def is_configured(cls: type[OpenaiTemplate]) -> bool:
    """True when the provider can be called as is: its key is set or it needs none (and it has a base URL)."""
    if cls.needs_auth and not cls.get_api_key():
        return False
    base_env = getattr(cls, "api_base_env", None)
    return not (base_env and not cls.api_base and not os.environ.get(base_env))


def default_provider() -> type[OpenaiTemplate]:
    """``LLMRELAY_PROVIDER`` if set; else ``Custom`` if ``LLMRELAY_API_BASE`` is set; else the first
    provider of :data:`DEFAULT_ORDER` whose key is set; else ``Local``."""
    name = os.environ.get("LLMRELAY_PROVIDER", "").strip()
    if name:
        try:
            return get_provider(name)
        except ValueError as error:
            raise ValueError(f"LLMRELAY_PROVIDER: {error}") from None
    if os.environ.get("LLMRELAY_API_BASE"):
        return Custom
    for key in DEFAULT_ORDER:
        cls = PROVIDERS[key]
        if cls.get_api_key():
            return cls
    return get_provider("local")
