"""llmrelay: one fast, correct async interface to every OpenAI-compatible LLM API.

Names are imported lazily, so ``import llmrelay`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "llmrelay.client",
    "AsyncClient": "llmrelay.client",
    "OpenaiTemplate": "llmrelay.providers.template",
    "AsyncGeneratorProvider": "llmrelay.providers.base",
    "ProviderModelMixin": "llmrelay.providers.base",
    "RaiseErrorMixin": "llmrelay.providers.base",
    "ProviderInfo": "llmrelay.responses",
    "Reasoning": "llmrelay.responses",
    "ToolCalls": "llmrelay.responses",
    "Usage": "llmrelay.responses",
    "FinishReason": "llmrelay.responses",
    "ImageResponse": "llmrelay.responses",
    "AudioResponse": "llmrelay.responses",
    "RelayError": "llmrelay.errors",
    "MissingAuthError": "llmrelay.errors",
    "MissingRequirementsError": "llmrelay.errors",
    "ResponseError": "llmrelay.errors",
    "BadRequestError": "llmrelay.errors",
    "ContextLengthError": "llmrelay.errors",
    "PaymentRequiredError": "llmrelay.errors",
    "CloudflareError": "llmrelay.errors",
    "ModelNotFoundError": "llmrelay.errors",
    "RateLimitError": "llmrelay.errors",
    "ServerError": "llmrelay.errors",
    "ConnectError": "llmrelay.errors",
    "TimeoutError": "llmrelay.errors",
    "StreamIncompleteError": "llmrelay.errors",
    "AllProvidersFailedError": "llmrelay.errors",
    "UnsupportedParameterError": "llmrelay.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrelay' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .errors import (
        AllProvidersFailedError,
        BadRequestError,
        CloudflareError,
        ConnectError,
        ContextLengthError,
        MissingAuthError,
        MissingRequirementsError,
        ModelNotFoundError,
        PaymentRequiredError,
        RateLimitError,
        RelayError,
        ResponseError,
        ServerError,
        StreamIncompleteError,
        TimeoutError,
        UnsupportedParameterError,
    )
    from .providers.base import AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin
    from .providers.template import OpenaiTemplate
    from .responses import AudioResponse, FinishReason, ImageResponse, ProviderInfo, Reasoning, ToolCalls, Usage
