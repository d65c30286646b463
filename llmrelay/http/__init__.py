"""The transport layer: pooled sessions, requests, the SSE decoder, status → error mapping, argument checks."""

from .checks import DEFAULT_TIMEOUT, check_api_key, check_headers, check_timeout
from .session import Response, close_sessions, open_response
from .sse import MAX_EVENT_SIZE, SSEDecoder
from .status import error_from_data, error_from_response, parse_retry_after
from .url import check_api_base, check_url, join_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_EVENT_SIZE",
    "Response",
    "SSEDecoder",
    "check_api_base",
    "check_api_key",
    "check_headers",
    "check_timeout",
    "check_url",
    "close_sessions",
    "error_from_data",
    "error_from_response",
    "join_url",
    "open_response",
    "parse_retry_after",
]
