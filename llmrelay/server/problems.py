"""What went wrong, in no door's shape: :class:`Problem` (status, code, message, param, type, headers).

Every error raised while serving — the gateway's own (:class:`GatewayError`, 8.4's rows), an upstream's typed
:class:`~llmrelay.errors.RelayError`, a provider refusing a value — becomes one :class:`Problem` through
:func:`problem_of`; each door turns it into its own error body (``door.error_body``) or in-band stream error
(``renderer.error``). No aiohttp here: doors import this module.
"""

from __future__ import annotations

import logging
import math

from ..client.router import failures_text
from ..errors import AllProvidersFailedError, RelayError, http_status

__all__ = ["ERROR_TYPES", "GatewayError", "Problem", "problem_of"]

log = logging.getLogger("llmrelay.server")

# OpenAI's error ``type`` per status, for the gateway's own errors.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
}


# Messages and params quote what callers and upstreams sent (a field name, a value, an upstream's message):
# an error body stays small whatever they sent.
MESSAGE_MAX = 4000
PARAM_MAX = 256


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Problem:
    """An error to answer with: HTTP ``status``, machine ``code``, ``message`` (says what to fix; never a key),
    ``param`` (the request field at fault, if any), OpenAI ``type`` and extra response ``headers``."""

    __slots__ = ("code", "headers", "message", "param", "request_id", "status", "type")

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.code = status, code
        self.message, self.param = cut(message, MESSAGE_MAX), None if param is None else cut(param, PARAM_MAX)
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}
        self.request_id: str | None = None  # set when answered: a door whose error body names it (Anthropic's)

    def __repr__(self) -> str:
        return f"Problem({self.status}, {self.code!r}, {self.message!r}, param={self.param!r})"


class GatewayError(Exception):
    """An error the gateway itself answers with (8.4's own rows): status, code, message, param, headers."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.problem = Problem(status, code, message, param, None, headers)

    @property
    def status(self) -> int:
        return self.problem.status


def problem_of(error: BaseException) -> Problem:
    """The :class:`Problem` for an error raised while serving a request (SPEC 8.4)."""
    if isinstance(error, GatewayError):
        return error.problem
    if isinstance(error, AllProvidersFailedError):
        # The status, code and Retry-After of the most informative failure; the message names every target's own.
        problem = problem_of(error.most_informative())
        problem.message = cut(f"every target failed: {failures_text(error)}", MESSAGE_MAX)
        return problem
    if isinstance(error, RelayError):
        status = http_status(error)
        headers = {}
        if status == 429 and error.retry_after is not None and math.isfinite(error.retry_after):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        body = error.to_dict()["error"]
        return Problem(status, body["code"], body["message"], body["param"], body["type"], headers)
    # A caller's mistake is a RelayError with its param (InvalidRequestError, InvalidArgumentError): any other
    # exception, a ValueError / TypeError included, is the gateway's own failure — logged, never shown.
    log.error("internal error while serving a request", exc_info=error)
    return Problem(500, "internal_error", "the gateway failed; see its log")
