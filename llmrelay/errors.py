"""The exception family of llmrelay.

Every error the library raises on purpose is a :class:`RelayError`. Errors that
come from a server carry what the server said (``status``, ``code``, ``type``,
``message``, ``request_id``, ``retry_after`` and a bounded ``body`` excerpt).
The API key is never part of any of them: the code that builds them
(:mod:`llmrelay.http.status`) redacts it.

How a response becomes one of these classes is decided in one place,
:mod:`llmrelay.http.status`.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "AllProvidersFailedError",
    "BadRequestError",
    "CloudflareError",
    "ConnectError",
    "ConnectTimeoutError",
    "ContextLengthError",
    "MissingAuthError",
    "MissingRequirementsError",
    "ModelNotFoundError",
    "PaymentRequiredError",
    "RateLimitError",
    "RelayError",
    "ResponseError",
    "ServerError",
    "StreamIncompleteError",
    "StreamTimeoutError",
    "TimeoutError",
    "UnsupportedParameterError",
]


class RelayError(Exception):
    """Base class of every error llmrelay raises on purpose."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str | int | None = None,
        type: str | None = None,
        provider: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        parts = []
        if self.provider:
            parts.append(f"{self.provider}:")
        if self.status is not None:
            parts.append(f"HTTP {self.status}:")
        parts.append(self.message or type(self).__name__)
        text = " ".join(parts)
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}"
            for name, value in (
                ("status", self.status),
                ("code", self.code),
                ("type", self.type),
                ("provider", self.provider),
                ("request_id", self.request_id),
                ("retry_after", self.retry_after),
            )
            if value is not None
        )
        return f"{type(self).__name__}({self.message!r}{', ' if fields else ''}{fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[RelayError], message: str, state: dict[str, Any]) -> RelayError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class MissingAuthError(RelayError):
    """No API key where the provider needs one, or the server refused the key (401, 403 about auth)."""


class UnsupportedParameterError(RelayError, ValueError):
    """A parameter the chosen provider is documented to reject; raised before any request is sent."""


class MissingRequirementsError(RelayError):
    """An optional dependency is not installed; the message says what to install."""


class ResponseError(RelayError):
    """The server answered with something that is not a usable response and fits no narrower class."""


class BadRequestError(ResponseError):
    """The server rejected the request as malformed or invalid (400, 422)."""


class ContextLengthError(BadRequestError):
    """The request does not fit the model's context window."""


class PaymentRequiredError(ResponseError):
    """The account has no credit or quota left (402)."""


class CloudflareError(ResponseError):
    """A Cloudflare or other bot-challenge page answered instead of the API (403, 503)."""


class ModelNotFoundError(ResponseError):
    """The server does not know the requested model (404 about a model)."""


class RateLimitError(ResponseError):
    """Too many requests (429); ``retry_after`` says when to try again if the server told."""


class ServerError(ResponseError):
    """The server failed (5xx, or an in-band ``server_error``)."""


class ConnectError(RelayError):
    """The connection to the server could not be made (refused, DNS, TLS, proxy)."""


class TimeoutError(RelayError, builtins.TimeoutError):
    """No byte arrived for ``timeout`` seconds, or ``total_timeout`` ran out."""


class ConnectTimeoutError(ConnectError, TimeoutError):
    """Connecting took longer than ``timeout`` seconds."""


class StreamIncompleteError(RelayError):
    """The response ended or broke before it was complete; ``partial_text`` holds what arrived."""

    def __init__(self, message: str = "", *, partial_text: str = "", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.partial_text = partial_text


class StreamTimeoutError(StreamIncompleteError, TimeoutError):
    """A stream stalled for longer than ``timeout`` seconds after it had started."""


class AllProvidersFailedError(RelayError):
    """Every provider of a fallback list failed; ``errors`` pairs each provider name with its error."""

    def __init__(self, errors: list[tuple[str, BaseException]]) -> None:
        lines = "; ".join(f"{name}: {error}" for name, error in errors)
        super().__init__(f"all {len(errors)} providers failed: {lines}")
        self.errors = errors
