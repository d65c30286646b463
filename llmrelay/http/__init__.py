"""The transport layer: pooled sessions, the SSE decoder, status → error mapping."""

from .session import DEFAULT_TIMEOUT, Response, close_sessions, open_response
from .sse import SSEDecoder
from .status import error_from_data, error_from_response, parse_retry_after

__all__ = [
    "DEFAULT_TIMEOUT",
    "Response",
    "SSEDecoder",
    "close_sessions",
    "error_from_data",
    "error_from_response",
    "open_response",
    "parse_retry_after",
]
