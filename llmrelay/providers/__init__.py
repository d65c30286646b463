"""Providers: the base classes, ``OpenaiTemplate`` and the built-in catalog."""

from .base import AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin
from .catalog import PROVIDERS, default_provider, get_provider, is_configured, provider_names
from .template import OpenaiTemplate

__all__ = [
    "PROVIDERS",
    "AsyncGeneratorProvider",
    "OpenaiTemplate",
    "ProviderModelMixin",
    "RaiseErrorMixin",
    "default_provider",
    "get_provider",
    "is_configured",
    "provider_names",
]
