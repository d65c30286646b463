"""The ``/v1/embeddings`` door (SPEC 9.4) with the official ``openai`` SDK over real sockets, in front of the
scripted server: base64 (the SDK's default) encoded by the gateway, floats, input rules, failover, the cache."""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from scripted_server import ScriptedServer, embedding_vector, embeddings_handler, json_reply

ROUTES = """
[routes.emb]
targets = ["up/e1", "up2/e2"]

[routes.cached]
targets = ["up/e1"]
cache_ttl_s = 60
"""


def client_for(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0)


def embed(gw: Any, **params: Any) -> Any:
    """One SDK embeddings call; the SDK client (and its pooled socket) is closed before returning."""
    with client_for(gw) as sdk:
        return sdk.embeddings.create(**params)


def post(gw: Any, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(
        gw.base + "/embeddings", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_sdk_default_base64_is_encoded_by_the_gateway(server: ScriptedServer, make_gateway) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=3))
    gw = make_gateway(ROUTES)
    answer = embed(gw, model="up/e1", input=["one", "three"])
    assert [item.embedding for item in answer.data] == [embedding_vector("one"), embedding_vector("three")]
    assert [item.index for item in answer.data] == [0, 1]
    assert answer.model == "e1" and answer.usage.prompt_tokens == 8 and answer.usage.total_tokens == 8
    sent = server.requests[0].json()
    assert sent == {"model": "e1", "input": ["one", "three"], "encoding_format": "float"}

    status, _, raw = post(gw, {"model": "up/e1", "input": "four", "encoding_format": "base64"})
    assert status == 200
    assert base64.b64decode(raw["data"][0]["embedding"]) == struct.pack("<3f", *embedding_vector("four"))
    assert raw["object"] == "list" and raw["data"][0]["object"] == "embedding"
    lines = [line for line in gw.access_lines if "/v1/embeddings" in line]
    assert len(lines) == 2 and all(" 200 " in line for line in lines), gw.access_lines


def test_floats_token_ids_and_options_pass_through(server: ScriptedServer, make_gateway) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=2))
    gw = make_gateway(ROUTES)
    answer = embed(gw, model="up/e1", input=[[1, 2, 3]], encoding_format="float", dimensions=2, user="u-7")
    assert answer.data[0].embedding == embedding_vector([1, 2, 3], 2)
    assert server.requests[0].json() == {
        "model": "e1",
        "input": [[1, 2, 3]],
        "encoding_format": "float",
        "dimensions": 2,
        "user": "u-7",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "up/e1", "input": ""},
        {"model": "up/e1", "input": []},
        {"model": "up/e1", "input": ["x"] * 2049},
        {"model": "up/e1", "input": ["a", 3]},
        {"model": "up/e1"},
    ],
    ids=["empty-string", "empty-list", "2049-items", "mixed", "missing"],
)
def test_bad_input_is_a_400_naming_input(server: ScriptedServer, make_gateway, body: dict[str, Any]) -> None:
    gw = make_gateway(ROUTES)
    status, _, error = post(gw, body)
    assert status == 400
    assert error["error"]["param"] == "input"
    assert error["error"]["type"] == "invalid_request_error"
    assert server.requests == []


def test_bad_options_are_400s_naming_them(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(ROUTES)
    for field, value in (("encoding_format", "hex"), ("dimensions", 0)):
        status, _, error = post(gw, {"model": "up/e1", "input": "a", field: value})
        assert status == 400 and error["error"]["param"] == field
    with client_for(gw) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="up/e1", input=[])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    assert server.requests == []


def test_a_route_fails_over_to_its_next_target(server: ScriptedServer, make_gateway) -> None:
    server.route("POST", "/v1/embeddings", json_reply({"error": {"message": "down"}}, 500))
    server.route("POST", "/v1/second/embeddings", embeddings_handler(dimensions=1))
    gw = make_gateway(ROUTES)
    answer = embed(gw, model="emb", input="abc")
    assert answer.data[0].embedding == embedding_vector("abc", 1)
    assert [request.path for request in server.requests][-1] == "/v1/second/embeddings"


def test_cached_only_on_a_route_with_cache_ttl(server: ScriptedServer, make_gateway) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=2))
    gw = make_gateway(ROUTES)
    first = post(gw, {"model": "cached", "input": "same", "encoding_format": "float"})
    second = post(gw, {"model": "cached", "input": "same", "encoding_format": "base64"})
    assert first[1]["x-llmrelay-cache"] == "miss" and second[1]["x-llmrelay-cache"] == "hit"
    assert len(server.requests) == 1  # float and base64 callers share the entry
    assert base64.b64decode(second[2]["data"][0]["embedding"]) == struct.pack("<2f", *first[2]["data"][0]["embedding"])
    assert post(gw, {"model": "cached", "input": "other"})[1]["x-llmrelay-cache"] == "miss"
    for _ in range(2):
        status, headers, _ = post(gw, {"model": "up/e1", "input": "same"})
        assert status == 200 and "x-llmrelay-cache" not in headers
    assert len(server.requests) == 4
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'llmrelay_cache_total{result="hit"} 1.0' in metrics
    assert 'llmrelay_tokens_total{kind="prompt",model="e1",provider="up"}' in metrics


def test_an_upstream_error_keeps_its_status(server: ScriptedServer, make_gateway) -> None:
    server.route("POST", "/v1/embeddings", json_reply({"error": {"message": "no such model"}}, 404))
    gw = make_gateway(ROUTES)
    status, _, error = post(gw, {"model": "up/e1", "input": "a"})
    assert status == 404 and "no such model" in error["error"]["message"]
