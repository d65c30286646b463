"""Bad arguments get a clear, typed error naming them, before any request; nothing is silently rewritten."""

from __future__ import annotations

import math
import warnings

import pytest
from helpers import MESSAGES, collect, make_provider
from scripted_server import ScriptedServer, chunk, completion, json_reply, sse_reply

from llmrelay import Client


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf])
def test_non_finite_numbers_are_refused_not_sent_as_null(server: ScriptedServer, value: float) -> None:
    provider = make_provider(server)
    with pytest.raises(ValueError, match="temperature"):
        collect(provider, temperature=value)
    with pytest.raises(ValueError, match="penalty"):
        collect(provider, extra_data={"penalty": {"deep": value}})
    assert server.requests == []


@pytest.mark.parametrize("extra", [["ab"], "abc", 5])
def test_extra_data_must_be_a_mapping(server: ScriptedServer, extra: object) -> None:
    with pytest.raises(TypeError, match="extra_data"):
        collect(make_provider(server), extra_data=extra)
    assert server.requests == []


@pytest.mark.parametrize("extra", [["ab"], "abc"])
def test_extra_body_must_be_a_mapping(server: ScriptedServer, extra: object) -> None:
    with pytest.raises(TypeError, match="extra_body"):
        collect(make_provider(server), extra_body=extra)
    assert server.requests == []


def test_reading_a_stream_after_its_client_was_closed_says_so(server: ScriptedServer) -> None:
    server.script(sse_reply(chunk("a"), 0.2, chunk("b"), chunk(finish_reason="stop"), "[DONE]"))
    client = Client(make_provider(server))
    stream = client.chat.completions.create(model="", messages=MESSAGES, stream=True)
    next(stream)
    client.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="this Client is closed"):
            next(stream)
        stream.close()


def test_a_closed_client_refuses_new_calls(server: ScriptedServer) -> None:
    server.script(json_reply(completion("x")))
    client = Client(make_provider(server))
    client.close()
    with pytest.raises(RuntimeError, match="this Client is closed"):
        client.chat.completions.create(model="", messages=MESSAGES)
    assert server.requests == []


# ------------------------------------------------------------------ api_base and api_key as the provider sees them


def test_api_base_query_stays_at_the_end_of_every_url(server: ScriptedServer) -> None:
    server.script(json_reply(completion("x")))
    server.route("GET", "/v1/models", lambda request: json_reply({"data": [{"id": "m1"}]}))
    provider = make_provider(server, api_base=server.base + "/?api-version=1")
    collect(provider)
    assert provider.get_models() == ["m1"]
    assert [request.path for request in server.requests] == [
        "/v1/chat/completions?api-version=1",
        "/v1/models?api-version=1",
    ]


@pytest.mark.parametrize(
    "base", ["localhost:8000/v1", "ftp://host/v1", " http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1\r\n", "not a url"]
)
def test_bad_api_base_is_a_value_error_naming_it_and_never_retried(server: ScriptedServer, base: str) -> None:
    with pytest.raises(ValueError, match="api_base"):
        collect(make_provider(server), api_base=base)
    with Client(make_provider(server), api_base=base) as client, pytest.raises(ValueError, match="api_base"):
        client.chat.completions.create(model="", messages=MESSAGES)
    assert server.requests == []


@pytest.mark.parametrize(("name", "value"), [("api_key", 12345), ("api_key", b"sk-bytes"), ("api_base", 12345)])
def test_wrong_types_are_type_errors_naming_the_argument(server: ScriptedServer, name: str, value: object) -> None:
    with pytest.raises(TypeError, match=name):
        collect(make_provider(server), **{name: value})
    assert server.requests == []
