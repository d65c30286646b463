"""Client retries and provider fallback, counted on the scripted server (the waits are recorded, not slept)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from helpers import make_provider
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse_reply, usage

from llmrelay.client import AsyncClient, Client
from llmrelay.client.retry import MAX_RETRY_AFTER, backoff, retry_delay
from llmrelay.errors import (
    AllProvidersFailedError,
    BadRequestError,
    ConnectError,
    MissingAuthError,
    RateLimitError,
    RelayError,
    ResponseError,
    ServerError,
    StreamIncompleteError,
    StreamTimeoutError,
)

MESSAGES = [{"role": "user", "content": "Hi"}]


class Sleeps:
    """An injected sleep that records the requested delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def error_reply(status: int, message: str = "try later", headers: dict[str, str] | None = None) -> Any:
    return json_reply({"error": {"message": message, "type": "server_error"}}, status, headers)


def ok_reply(text: str = "fine") -> Any:
    return json_reply(completion(text, usage=usage(2, 3)))


def ok_stream(text: str = "fine") -> Any:
    return sse_reply(chunk(text[:2], role="assistant"), chunk(text[2:]), chunk(finish_reason="stop"), "[DONE]")


def client_for(server: ScriptedServer, sleeps: Sleeps, max_retries: int = 2, **attributes: Any) -> Client:
    return Client(make_provider(server, **attributes), max_retries=max_retries, sleep=sleeps)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def paths(server: ScriptedServer) -> list[str]:
    return [request.route_path for request in server.requests]


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_with_backoff(server: ScriptedServer, status: int) -> None:
    server.script(error_reply(status), error_reply(status), ok_reply())
    sleeps = Sleeps()
    with client_for(server, sleeps) as client:
        resp = client.chat.completions.create(model="", messages=MESSAGES)
    assert resp.choices[0].message.content == "fine"
    assert len(server.requests) == 3
    assert len(sleeps.delays) == 2
    assert 0.375 <= sleeps.delays[0] <= 0.5 and 0.75 <= sleeps.delays[1] <= 1.0


def test_retries_stop_after_max_retries_and_raise_the_error(server: ScriptedServer) -> None:
    server.script(*[error_reply(503, "overloaded")] * 6)
    sleeps = Sleeps()
    with client_for(server, sleeps, max_retries=5) as client, pytest.raises(ServerError) as caught:
        client.chat.completions.create(model="", messages=MESSAGES)
    assert caught.value.status == 503 and "overloaded" in str(caught.value)
    assert len(server.requests) == 6
    bounds = [(0.375, 0.5), (0.75, 1.0), (1.5, 2.0), (3.0, 4.0), (6.0, 8.0)]  # min(0.5 * 2**n, 8) less <= 25 %
    assert len(sleeps.delays) == 5
    assert all(low <= delay <= high for delay, (low, high) in zip(sleeps.delays, bounds, strict=True))


def test_backoff_is_capped_and_jittered() -> None:
    delays = [backoff(10) for _ in range(200)]
    assert all(6.0 <= delay <= 8.0 for delay in delays)
    assert len(set(delays)) > 100  # jitter: not a constant
    error = ServerError("x", status=500)
    assert retry_delay(error, 2, 2) is None  # attempts exhausted
    assert retry_delay(BadRequestError("x", status=400), 0, 2) is None


@pytest.mark.parametrize(
    ("status", "message", "error_class"),
    [
        (400, "bad field", BadRequestError),
        (401, "invalid api key", MissingAuthError),
        (403, "invalid api key", MissingAuthError),
        (404, "no such route", ResponseError),
        (422, "unprocessable", BadRequestError),
    ],
)
def test_client_errors_are_never_retried(server: ScriptedServer, status: int, message: str, error_class: type) -> None:
    server.script(error_reply(status, message), ok_reply())
    sleeps = Sleeps()
    with client_for(server, sleeps) as client, pytest.raises(error_class) as caught:
        client.chat.completions.create(model="", messages=MESSAGES)
    assert caught.value.status == status
    assert len(server.requests) == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    ("headers", "expected"), [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5)]
)
def test_retry_after_is_waited_for(server: ScriptedServer, headers: dict[str, str], expected: float) -> None:
    server.script(error_reply(429, "slow down", headers), ok_reply())
    sleeps = Sleeps()
    with client_for(server, sleeps) as client:
        assert client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content == "fine"
    assert sleeps.delays == [expected]
    assert len(server.requests) == 2


def test_a_long_retry_after_raises_at_once(server: ScriptedServer) -> None:
    server.script(error_reply(429, "quota", {"retry-after": str(int(MAX_RETRY_AFTER) + 60)}), ok_reply())
    sleeps = Sleeps()
    with client_for(server, sleeps) as client, pytest.raises(RateLimitError) as caught:
        client.chat.completions.create(model="", messages=MESSAGES)
    assert caught.value.retry_after == MAX_RETRY_AFTER + 60
    assert len(server.requests) == 1 and sleeps.delays == []


def test_the_default_sleep_really_waits(server: ScriptedServer) -> None:
    server.script(error_reply(503, "busy", {"retry-after-ms": "120"}), ok_reply())
    with Client(make_provider(server)) as client:
        start = time.monotonic()
        client.chat.completions.create(model="", messages=MESSAGES)
        assert time.monotonic() - start >= 0.12
    assert len(server.requests) == 2


def test_connection_errors_are_retried(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    provider = make_provider(server, api_base=f"http://127.0.0.1:{closed_port()}/v1")
    with Client(provider, sleep=sleeps) as client, pytest.raises(ConnectError):
        client.chat.completions.create(model="", messages=MESSAGES)
    assert len(sleeps.delays) == 2


def test_a_stream_is_retried_before_any_output(server: ScriptedServer) -> None:
    # An HTTP 500, then a 200 whose first event is an in-band error (OpenRouter style), then the answer.
    server.script(
        error_reply(500),
        sse_reply({"error": {"message": "upstream overloaded", "code": 502}}),
        ok_stream("hello"),
    )
    sleeps = Sleeps()
    with client_for(server, sleeps) as client:
        chunks = list(client.chat.completions.create(model="", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert len(server.requests) == 3 and len(sleeps.delays) == 2


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        (sse_reply(chunk("Hel", role="assistant"), end="abrupt"), StreamIncompleteError),
        (sse_reply(chunk("Hel", role="assistant"), {"error": {"message": "died", "code": 500}}), ServerError),
    ],
)
def test_a_stream_is_never_retried_after_output(server: ScriptedServer, reply: Any, error_class: type) -> None:
    server.script(reply, ok_stream())
    sleeps = Sleeps()
    received: list[str] = []
    with client_for(server, sleeps) as client:
        stream = client.chat.completions.create(model="", messages=MESSAGES, stream=True)
        with pytest.raises(error_class):
            for item in stream:
                received.append(item.choices[0].delta.content)
    assert received == ["", "Hel"]
    assert len(server.requests) == 1 and sleeps.delays == []


def test_async_client_retries_and_awaits_the_injected_sleep(server: ScriptedServer) -> None:
    server.script(error_reply(502), ok_stream("async"))
    sleeps = Sleeps()

    async def run() -> str:
        client = AsyncClient(make_provider(server), sleep=sleeps)
        stream = await client.chat.completions.create(model="", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "async"
    assert len(sleeps.delays) == 1 and len(server.requests) == 2


# ---------------------------------------------------------------------------- fallback


def two_providers(server: ScriptedServer) -> list[type]:
    return [
        make_provider(server, api_base=f"{server.url}/a/v1", label="A"),
        make_provider(server, api_base=f"{server.url}/b/v1", label="B"),
    ]


def test_fallback_moves_to_the_next_provider(server: ScriptedServer) -> None:
    server.route("POST", "/a/v1/chat/completions", error_reply(401, "invalid api key"))
    server.route("POST", "/b/v1/chat/completions", json_reply(completion("from B", model="b-model")))
    sleeps = Sleeps()
    with Client(two_providers(server), sleep=sleeps) as client:
        resp = client.chat.completions.create(model="", messages=MESSAGES)
    assert (resp.provider, resp.model, resp.choices[0].message.content) == ("B", "b-model", "from B")
    assert paths(server) == ["/a/v1/chat/completions", "/b/v1/chat/completions"]
    assert sleeps.delays == []  # 401 is not retried: straight to B


def test_fallback_retries_each_provider_first(server: ScriptedServer) -> None:
    server.route("POST", "/a/v1/chat/completions", error_reply(503))
    server.route("POST", "/b/v1/chat/completions", ok_stream("from B"))
    sleeps = Sleeps()
    with Client(two_providers(server), sleep=sleeps) as client:
        chunks = list(client.chat.completions.create(model="", messages=MESSAGES, stream=True))
    assert {c.provider for c in chunks} == {"B"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from B"
    assert paths(server).count("/a/v1/chat/completions") == 3
    assert paths(server)[-1] == "/b/v1/chat/completions" and len(sleeps.delays) == 2


def test_all_providers_failing_raise_one_error_listing_each(server: ScriptedServer) -> None:
    server.route("POST", "/a/v1/chat/completions", error_reply(401, "invalid api key"))
    server.route("POST", "/b/v1/chat/completions", error_reply(500, "broken"))
    with Client(two_providers(server), max_retries=1, sleep=Sleeps()) as client:
        with pytest.raises(AllProvidersFailedError) as caught:
            client.chat.completions.create(model="", messages=MESSAGES)
    errors = caught.value.errors
    assert [(name, type(error)) for name, error in errors] == [("A", MissingAuthError), ("B", ServerError)]
    assert "A:" in str(caught.value) and "broken" in str(caught.value)
    assert isinstance(caught.value, RelayError)
    assert paths(server) == ["/a/v1/chat/completions"] + ["/b/v1/chat/completions"] * 2


def test_a_failure_after_output_is_raised_as_is_without_fallback(server: ScriptedServer) -> None:
    server.route("POST", "/a/v1/chat/completions", sse_reply(chunk("par", role="assistant"), end="abrupt"))
    server.route("POST", "/b/v1/chat/completions", ok_stream())
    with Client(two_providers(server), sleep=Sleeps()) as client:
        stream = client.chat.completions.create(model="", messages=MESSAGES, stream=True)
        with pytest.raises(StreamIncompleteError) as caught:
            list(stream)
    assert caught.value.partial_text == "par"
    assert paths(server) == ["/a/v1/chat/completions"]


def test_async_fallback_by_catalog_name_and_class(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fallback list may mix catalog names and classes; a provider that cannot even start is skipped."""
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    server.script(ok_reply("from scripted"))

    async def run() -> Any:
        async with AsyncClient(["groq", make_provider(server, label="Mine")]) as client:
            return await client.chat.completions.create(model="", messages=MESSAGES)

    resp = asyncio.run(run())
    assert (resp.provider, resp.choices[0].message.content) == ("Mine", "from scripted")
    assert len(server.requests) == 1


def test_keys_are_not_shared_across_a_fallback_list(server: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="fallback list"):
        Client(two_providers(server), api_key="sk-secret")


def test_models_list_falls_back_too(server: ScriptedServer) -> None:
    server.route("GET", "/a/v1/models", error_reply(500))
    server.route("GET", "/b/v1/models", json_reply({"data": [{"id": "b1"}]}))
    with Client(two_providers(server), max_retries=0) as client:
        models = client.models.list()
    assert [m.id for m in models] == ["b1"] and models.provider == "B" and models[0].owned_by == "B"


def test_a_connection_broken_before_the_first_event_is_retried(server: ScriptedServer) -> None:
    cut_json = Reply(
        headers=[("Content-Type", "application/json"), ("Content-Length", "500")],
        writes=[b'{"id": "chatcmpl-1", "choi'],
        body_mode="length",
        end="abrupt",
    )
    server.script(cut_json, ok_reply("whole"), sse_reply(end="abrupt"), ok_stream("streamed"))
    sleeps = Sleeps()
    with client_for(server, sleeps) as client:
        assert client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content == "whole"
        stream = client.chat.completions.create(model="", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed"
    assert len(server.requests) == 4 and len(sleeps.delays) == 2
    assert retry_delay(StreamTimeoutError("stalled"), 0, 2) is None  # a stall is not retried: it would stall again
