"""One line of a batch: its attempts (section 5's retry set and backoff, through the shared limits) and its
output record (SPEC 10.3). Shared by the local backend and the Ray actors."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from ..client.retry import retry_delay
from ..errors import BadRequestError, RelayError, error_code, http_status
from .inputs import Line
from .limits import THROTTLE_STATUSES, Outcome, Stopped
from .operations import OPERATIONS, Router

__all__ = ["Done", "GateLike", "failure_record", "run_line", "success_record"]


class GateLike(Protocol):
    """The limits as a line sees them: the local :class:`~llmrelay.batch.limits.Gate` or the Ray coordinator."""

    async def acquire(self) -> int: ...

    def release(self, ticket: int, outcome: Outcome) -> Any: ...

    def abandon(self) -> Any: ...


class Done:
    """A finished line: the bytes to append and what the summary counts."""

    __slots__ = ("completion_tokens", "data", "prompt_tokens", "retries", "succeeded")

    def __init__(self, data: bytes, succeeded: bool, retries: int, usage: dict[str, Any] | None) -> None:
        self.data = data
        self.succeeded = succeeded
        self.retries = retries
        usage = usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self.prompt_tokens = prompt if type(prompt) is int else 0
        self.completion_tokens = completion if type(completion) is int else 0

    def to_tuple(self) -> tuple[bytes, bool, int, int, int]:
        return self.data, self.succeeded, self.retries, self.prompt_tokens, self.completion_tokens

    @classmethod
    def from_tuple(cls, values: tuple[bytes, bool, int, int, int]) -> Done:
        done = cls(values[0], values[1], values[2], None)
        done.prompt_tokens, done.completion_tokens = values[3], values[4]
        return done


# Ids: a random prefix per process and a counter (unique across runs and Ray actors, one syscall per process). A
# line's record id is its request id with "batch_" in front: one counter step per line.
_PREFIX = os.urandom(8).hex()
_NUMBERS = itertools.count(1)


def new_id(kind: str) -> str:
    return f"{kind}{_PREFIX}{next(_NUMBERS):08x}"


def _record(custom_id: str, request_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    record = {"id": "batch_" + request_id, "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def success_record(custom_id: str, request_id: str, body: dict[str, Any], status: int = 200) -> bytes:
    """The record of an answer; ``request_id``: the line's own (``req_…``), whose record id is ``batch_req_…``."""
    return _record(custom_id, request_id, {"status_code": status, "request_id": request_id, "body": body}, None)


def failure_record(custom_id: str, request_id: str, error: BaseException) -> bytes:
    """An HTTP failure: 8.4's error body with its status; a refusal before sending (a parameter the provider
    rejects): 400; no HTTP answer at all (connection, timeout): ``response: null`` and ``error``."""
    if isinstance(error, RelayError) and (error.status is not None or isinstance(error, BadRequestError)):
        response = {"status_code": http_status(error), "request_id": error.request_id or request_id}
        response["body"] = error.to_dict()
        return _record(custom_id, request_id, response, None)
    if isinstance(error, (ValueError, TypeError)) and not isinstance(error, RelayError):
        body = {"error": {"message": str(error), "type": "invalid_request_error", "param": None}}
        body["error"]["code"] = "invalid_request"
        return _record(custom_id, request_id, {"status_code": 400, "request_id": request_id, "body": body}, None)
    message = str(error) or type(error).__name__
    return _record(custom_id, request_id, None, {"code": error_code(error), "message": message})


def _outcome(error: BaseException) -> Outcome:
    status = getattr(error, "status", None)
    retry_after = getattr(error, "retry_after", None)
    return Outcome(throttled=status in THROTTLE_STATUSES, retry_after=retry_after if status is not None else None)


Sleep = Callable[[float], Awaitable[bool]]


async def run_line(line: Line, router: Router, gate: GateLike, max_attempts: int, sleep: Sleep) -> Done | None:
    """Send one line until it succeeds, fails for good, or runs out of attempts; None when the run stopped first
    (``sleep`` returns False then) — nothing is written for it and a rerun sends it again."""
    operation = OPERATIONS[line.url]
    assert operation.call is not None  # the check refused urls without a call
    request_id = new_id("req_")
    headers = {"x-request-id": request_id}
    attempt = 0
    while True:
        try:
            ticket = await gate.acquire()
        except Stopped:
            return None
        try:
            body, usage = await operation.call(router, line.body, headers)
        except asyncio.CancelledError:
            gate.abandon()
            raise
        except Exception as error:
            outcome = _outcome(error)
            gate.release(ticket, outcome)
            delay = retry_delay(error, attempt, max_attempts - 1)
            if delay is None:
                return Done(failure_record(line.custom_id, request_id, error), False, attempt, None)
            attempt += 1
            # A Retry-After became the shared pause (every start waits for it in acquire): no sleep of our own.
            if outcome.retry_after is None and not await sleep(delay):
                return None
            continue
        tokens = usage.get("total_tokens") if usage else None
        gate.release(ticket, Outcome(success=True, tokens=tokens if type(tokens) is int else 0))
        return Done(success_record(line.custom_id, request_id, body), True, attempt, usage)
