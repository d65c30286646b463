"""The small base classes every provider is built from."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from .._runner import iterate_sync
from .._text import display_name
from ..errors import InvalidArgumentError
from ..http.status import error_from_data
from ..typing import AsyncResult, CreateResult, Messages

__all__ = ["AsyncGeneratorProvider", "ProviderModelMixin", "RaiseErrorMixin"]


class AsyncGeneratorProvider:
    """A provider whose answer is an async generator of text and events."""

    label: ClassVar[str | None] = None
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True

    @classmethod
    def get_name(cls) -> str:
        return display_name(cls)

    @classmethod
    def create_async_generator(cls, model: str, messages: Messages, **kwargs: Any) -> AsyncResult:
        raise NotImplementedError

    @classmethod
    def create_completion(cls, model: str, messages: Messages, **kwargs: Any) -> CreateResult:
        """The same answer as a sync generator; works in a script, in threads and inside a running loop."""
        return iterate_sync(cls.create_async_generator(model, messages, **kwargs))


class ProviderModelMixin:
    """Model names: the default, aliases and the choice between them."""

    default_model: ClassVar[str] = ""
    default_vision_model: ClassVar[str] = ""
    models: ClassVar[list[str]] = []
    model_aliases: ClassVar[dict[str, str | list[str]]] = {}

    @classmethod
    def get_model(cls, model: str, *, has_media: bool = False, **_: Any) -> str:
        """The model id to send: empty → the default (vision default with media), alias → its target."""
        if not model:
            model = (cls.default_vision_model if has_media else "") or cls.default_model
            if not model:
                raise InvalidArgumentError(f"{display_name(cls)}: no model given and no default_model set", "model")
        target = cls.model_aliases.get(model)
        if target is None:
            return model
        if isinstance(target, list):
            return random.choice(target)
        return target


class RaiseErrorMixin:
    """Raising the typed error for an error body."""

    @classmethod
    def raise_error(cls, data: Any, status: int | None = None) -> None:
        """Raise the typed error for ``data`` (a parsed error body); do nothing if it holds no error."""
        name = display_name(cls)
        error = error_from_data(data, status, provider=name)  # always an error when status >= 400
        if error is not None:
            raise error
