"""The exception family of llmrelay.

Every error the library raises on purpose is a :class:`RelayError`. Errors that
come from a server carry what the server said (``status``, ``code``, ``type``,
``message``, ``request_id``, ``retry_after`` and a bounded ``body`` excerpt)::

    RelayError
    ├── MissingAuthError                 no key, 401, 403 about auth
    ├── UnsupportedParameterError        (also ValueError) rejected before sending
    ├── MissingRequirementsError         an optional dependency is missing
    ├── ResponseError                    anything else the server answered
    │   ├── BadRequestError              400, 422
    │   │   ├── ContextLengthError
    │   │   └── InvalidRequestError      the caller's request is malformed (gateway, conversions)
    │   ├── PaymentRequiredError         402
    │   ├── CloudflareError              bot-challenge pages
    │   ├── ModelNotFoundError           404 about a model
    │   ├── RateLimitError               429
    │   └── ServerError                  5xx, in-band server_error
    ├── ConnectError                     could not connect
    │   └── ConnectTimeoutError          (also TimeoutError)
    ├── TimeoutError                     (also the builtin TimeoutError) idle read / total timeout
    ├── StreamIncompleteError            the answer broke off; partial_text
    │   └── StreamTimeoutError           (also TimeoutError) a started stream stalled
    └── AllProvidersFailedError          every provider of a fallback list failed

How a response becomes one of these classes is decided in one place,
:mod:`llmrelay.http.status`; the API key is redacted where it is known: that module
redacts what it quotes with the secrets the provider passes in, and the provider
runs :func:`~llmrelay.http.status.redact_error` on every error it raises. :func:`http_status` and
:func:`error_code` are the one table from an error to the HTTP answer a gateway
gives for it (SPEC 8.4).
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
    "InvalidArgumentError",
    "InvalidRequestError",
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
    "ERROR_CODES",
    "error_code",
    "http_status",
    "table_code",
]


class RelayError(Exception):
    """Base class of every error llmrelay raises on purpose."""

    informative = True  # False for "this target was skipped": a fallback list reports a real failure first

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
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.type = type
        self.provider = provider
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        parts = []
        if self.provider and not self.message.startswith(self.provider):
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

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body for this error: ``{"error": {"message", "type", "param", "code"}}``."""
        message = self.message or type(self).__name__
        if self.provider and not message.startswith(self.provider):
            message = f"{self.provider}: {message}"
        return {
            "error": {
                "message": message,
                "type": self.type if isinstance(self.type, str) and self.type else _error_type(self),
                "param": self.param,
                "code": error_code(self),
            }
        }


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


class InvalidRequestError(BadRequestError):
    """The caller's request is malformed (a missing or wrong-typed field); ``param`` names the field."""


class InvalidArgumentError(InvalidRequestError, TypeError, ValueError):
    """An argument the caller chose that a provider cannot send (an unknown keyword, a value outside its set, no
    model to ask); ``param`` names it. Also a ``TypeError`` / ``ValueError``, what such mistakes raise in Python —
    so the gateway answers it with 400 naming the field, while any other ``TypeError`` / ``ValueError`` there is
    its own bug (500)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param=param, code="invalid_request")


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

    def most_informative(self) -> BaseException:
        """The error to report for the whole list: a rate limit when every provider was limited (its
        ``retry_after`` the shortest), else the first error that is not a transient connection failure."""
        failures = [error for _, error in self.errors if getattr(error, "informative", True)]
        failures = failures or [error for _, error in self.errors]
        if not failures:
            return self
        limits = [error for error in failures if isinstance(error, RateLimitError)]
        if len(limits) == len(failures):
            return min(limits, key=lambda error: error.retry_after if error.retry_after is not None else float("inf"))
        for error in failures:
            if not isinstance(error, (ConnectError, TimeoutError, StreamIncompleteError)):
                return error
        return failures[-1]


# ------------------------------------------------------------- error -> HTTP answer (SPEC 8.4)

# (class, HTTP status, code when the error carries none); the first matching row wins.
_HTTP_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (UnsupportedParameterError, 400, "unsupported_parameter"),
    (InvalidRequestError, 400, "invalid_request"),
    (ContextLengthError, 400, "context_length_exceeded"),
    (BadRequestError, 400, "invalid_request"),
    (ModelNotFoundError, 404, "model_not_found"),
    (RateLimitError, 429, "rate_limit_exceeded"),
    (MissingAuthError, 502, "upstream_auth_error"),
    (PaymentRequiredError, 502, "upstream_auth_error"),
    (StreamTimeoutError, 504, "upstream_timeout"),
    (TimeoutError, 504, "upstream_timeout"),
    (builtins.TimeoutError, 504, "upstream_timeout"),
    (RelayError, 502, "upstream_error"),
)
_KEEP_CODE = (BadRequestError, ModelNotFoundError)  # the upstream's own code is passed on for these
ERROR_CODES = frozenset((*(code for _, _, code in _HTTP_TABLE), "internal_error"))
"""Every code :func:`table_code` gives: a fixed set (for metric labels, which an upstream must not choose)."""


def _row(error: BaseException) -> tuple[int, str]:
    if isinstance(error, AllProvidersFailedError):
        error = error.most_informative()
    for cls, status, code in _HTTP_TABLE:
        if isinstance(error, cls):
            return status, code
    return 500, "internal_error"


def http_status(error: BaseException) -> int:
    """The HTTP status a gateway answers with for an error raised while serving a request (SPEC 8.4)."""
    return _row(error)[0]


def table_code(error: BaseException) -> str:
    """The code of the error's row in the gateway's table (one of :data:`ERROR_CODES`), never the upstream's own."""
    return _row(error)[1]


def error_code(error: BaseException) -> str:
    """The OpenAI ``error.code`` for an error: the upstream's own for bad requests and unknown models, else the table's."""
    if isinstance(error, AllProvidersFailedError):
        error = error.most_informative()
    code = getattr(error, "code", None)
    if isinstance(error, _KEEP_CODE) and isinstance(code, str) and code:
        return code
    return _row(error)[1]


def _error_type(error: BaseException) -> str:
    status = http_status(error)
    if status == 429:
        return "rate_limit_error"
    if status == 400 or status == 404:
        return "invalid_request_error"
    if status == 504:
        return "timeout_error"
    return "upstream_error"
