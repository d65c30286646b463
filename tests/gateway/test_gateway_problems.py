"""Whose fault an error is (SPEC 8.4): a caller's mistake is a typed 400 naming its field; the gateway's own failure
(a ``ValueError`` / ``TypeError`` from a bug) is a 500 that shows the caller nothing of it and logs the traceback —
before the response started and in-band after."""

from __future__ import annotations

from typing import Any

import pytest
from raw import fetch
from scripted_server import ScriptedServer, chunk, sse_reply

from llmrelay.responses import FinishReason
from llmrelay.server.app import Endpoint, Gateway
from llmrelay.server.doors import DoorRequest
from llmrelay.server.doors import chat as chat_door


class _BuggyRenderer:
    """The chat renderer, with a bug on the finish reason."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.keepalive = inner.keepalive

    def start(self, first: Any) -> bytes:
        return bytes(self.inner.start(first))

    def event(self, item: Any) -> bytes:
        if isinstance(item, FinishReason):
            return {}["missing"]  # type: ignore[no-any-return]  # a KeyError: a bug of the gateway's
        return bytes(self.inner.event(item))

    def end(self) -> bytes:
        return bytes(self.inner.end())

    def error(self, problem: Any) -> bytes:
        return bytes(self.inner.error(problem))


class _BuggyDoor:
    """The chat door with a bug: in ``parse`` when the body asks for it, and in its renderer at the finish."""

    error_body = staticmethod(chat_door.error_body)
    answer = staticmethod(chat_door.answer)

    @staticmethod
    def parse(body: dict[str, Any]) -> DoorRequest:
        if body.pop("bug", None) == "parse":
            int("the secret 0123")  # a ValueError that is the gateway's own
        return chat_door.parse(body)

    @staticmethod
    def renderer(req: Any, info: Any, model: str) -> _BuggyRenderer:
        return _BuggyRenderer(chat_door.renderer(req, info, model))


class _Gateway(Gateway):
    def route_table(self) -> list[Endpoint]:
        return [*super().route_table(), Endpoint("POST", "/v1/buggy", _BuggyDoor())]


HI = [{"role": "user", "content": "Hi"}]


def _internal(caplog: pytest.LogCaptureFixture, error: dict[str, Any], kind: type[Exception]) -> None:
    assert error["code"] == "internal_error" and error["message"] == "the gateway failed; see its log"
    assert error["param"] is None
    [record] = [r for r in caplog.records if r.getMessage() == "internal error while serving a request"]
    assert record.levelname == "ERROR" and record.exc_info and record.exc_info[0] is kind  # logged with its traceback


def test_a_value_error_of_the_gateway_is_a_500_that_shows_nothing(
    server: ScriptedServer, make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(gateway_class=_Gateway)
    reply = fetch("POST", gw.url + "/v1/buggy", {"model": "up/m", "messages": HI, "bug": "parse"})
    assert reply.status == 500, reply.body
    assert b"secret" not in reply.body and b"int()" not in reply.body
    _internal(caplog, reply.error, ValueError)
    assert server.requests == []


def test_a_bug_after_the_stream_started_is_an_in_band_500(
    server: ScriptedServer, make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(gateway_class=_Gateway)
    server.script(sse_reply(chunk("Hel"), chunk("lo"), chunk(finish_reason="stop"), "[DONE]"))
    reply = fetch("POST", gw.url + "/v1/buggy", {"model": "up/m", "messages": HI, "stream": True})
    assert reply.status == 200
    chunks = reply.chunks()
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert set(chunks[-1]) == {"error"} and b"[DONE]" not in reply.body
    assert b"missing" not in reply.body
    _internal(caplog, chunks[-1]["error"], KeyError)
    # The access line is written once the response is finished, which the caller may see first.
    assert server.wait_for(lambda: any("POST /v1/buggy 500" in line for line in gw.access_lines)), gw.access_lines


def test_a_value_the_caller_chose_is_still_a_400_naming_it(
    server: ScriptedServer, make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway()
    body = {"model": "up/img-1", "prompt": "a cat", "aspect_ratio": "7:1"}
    reply = fetch("POST", gw.url + "/v1/images/generations", body)
    assert reply.status == 400, reply.body
    error = reply.error
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_request",
        "aspect_ratio",
        "invalid_request_error",
    )
    assert "'7:1' is not one of 1:1, 16:9" in error["message"]
    assert server.requests == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
