"""The one place the gateway meets the shared core (llmrelay.client.convert / router, llmrelay.errors).

Every OpenAI-shape rule, every error-to-HTTP rule and every retry rule the gateway uses comes through here,
so the gateway has none of its own.
"""

from __future__ import annotations

from typing import Any

from ..client.convert import ChatCall, StreamShape, chat_call_from_json, completion_dict
from ..client.router import END, Opened, Skip, aclose, first_success, is_retryable, open_events
from ..errors import AllProvidersFailedError, error_code, http_status

__all__ = [
    "END",
    "AllProvidersFailedError",
    "ChatCall",
    "Opened",
    "Shaper",
    "Skip",
    "aclose",
    "chat_call_from_json",
    "completion_json",
    "error_code",
    "first_success",
    "http_status",
    "is_retryable",
    "open_events",
]


def completion_json(answer: Any, model: str) -> dict[str, Any]:
    """The ``chat.completion`` JSON of a folded :class:`~llmrelay.responses.Answer`."""
    return completion_dict(answer, model)


Shaper = StreamShape
