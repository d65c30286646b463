"""Providers: the base classes, ``OpenaiTemplate`` and the built-in catalog."""

from .base import AsyncGeneratorProvider, ProviderModelMixin, RaiseErrorMixin
from .template import OpenaiTemplate

__all__ = ["AsyncGeneratorProvider", "OpenaiTemplate", "ProviderModelMixin", "RaiseErrorMixin"]
