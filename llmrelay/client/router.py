"""Which provider answers, and trying providers in turn: the rules the client, the CLI and the gateway share.

* :func:`resolve_provider` / :func:`resolve_providers` turn what a caller named
  (a provider class, a catalog name, a list, or nothing) into provider classes.
  An ad-hoc base URL with no provider named means ``Custom``: a key set for a
  catalog provider (``GROQ_API_KEY`` …) never goes to a host that provider did
  not name (SPEC 2.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from ..providers.template import OpenaiTemplate

    ProviderClass = type[OpenaiTemplate]
else:
    ProviderClass = type  # the providers (and aiohttp) are imported only when a request is made

ProviderSpec = Union[ProviderClass, str, Sequence[Union[ProviderClass, str]], None]

__all__ = ["ProviderClass", "ProviderSpec", "provider_name", "resolve_provider", "resolve_providers"]


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
    return [resolve_provider(provider, api_base)], False


def provider_name(provider: Any) -> str:
    """The display name of a provider class (``get_name()``, else the class name)."""
    get_name = getattr(provider, "get_name", None)
    return get_name() if callable(get_name) else provider.__name__
