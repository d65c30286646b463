"""Embeddings (SPEC 9.4): the input rules, base64, the provider operation and the client, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import pytest
from helpers import SECRET, assert_no_secret, make_provider
from scripted_server import embedding_vector, embeddings, embeddings_handler, json_reply

from llmrelay.client import AsyncClient, Client, CreateEmbeddingResponse
from llmrelay.errors import (
    AllProvidersFailedError,
    BadRequestError,
    InvalidRequestError,
    ResponseError,
    ServerError,
)
from llmrelay.providers.embeddings import (
    MAX_INPUTS,
    check_embedding_input,
    check_embedding_options,
    decode_base64_embedding,
    encode_base64_embedding,
)

# --------------------------------------------------------------------------- 9.4.1: input


@pytest.mark.parametrize(
    "value",
    ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ["x"] * MAX_INPUTS],
    ids=["string", "strings", "token-ids", "token-id-lists", "2048-items"],
)
def test_accepted_inputs(value: Any) -> None:
    assert check_embedding_input(value) == value


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "empty string"),
        ([], "empty list"),
        (["x"] * (MAX_INPUTS + 1), "2049 items"),
        (["a", ""], "input[1] is an empty string"),
        (["a", 1], "mixes"),
        ([[1], []], "input[1]"),
        ([-1], "mixes"),
        ({"text": "a"}, "not dict"),
        (None, "not NoneType"),
        ([True], "mixes"),
    ],
    ids=[
        "empty-string",
        "empty-list",
        "too-many",
        "empty-item",
        "mixed",
        "empty-token-list",
        "negative",
        "dict",
        "none",
        "bool",
    ],
)
def test_refused_inputs_name_input(value: Any, says: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_embedding_input(value)
    assert caught.value.param == "input"
    assert caught.value.status == 400
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"encoding_format": "hex"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": "8"}, "dimensions"),
        ({"user": 5}, "user"),
    ],
)
def test_refused_options_name_their_parameter(options: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_embedding_options(options)
    assert caught.value.param == param


def test_base64_is_little_endian_float32() -> None:
    vector = [1.0, -2.5, 0.15625]
    text = encode_base64_embedding(vector)
    assert base64.b64decode(text) == struct.pack("<fff", 1.0, -2.5, 0.15625)
    assert base64.b64decode(text)[:4] == b"\x00\x00\x80\x3f"  # 1.0, least significant byte first
    assert decode_base64_embedding(text) == vector


# ------------------------------------------------------------------ the provider operation


def test_request_body_and_answer_shape(server) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=4))
    provider = make_provider(server, api_key=SECRET)
    answer = provider.create_embeddings(["one", "three"], "test-embed", dimensions=4, user="u-1")
    body = server.requests[0].json()
    assert server.requests[0].path == "/v1/embeddings"
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert body == {"model": "test-embed", "input": ["one", "three"], "dimensions": 4, "user": "u-1"}
    assert answer == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": embedding_vector("one", 4)},
            {"object": "embedding", "index": 1, "embedding": embedding_vector("three", 4)},
        ],
        "model": "test-embed",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


def test_base64_is_encoded_here_when_the_upstream_answers_floats(server) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=3))
    provider = make_provider(server)
    answer = asyncio.run(provider.create_embeddings_async("four", "m", encoding_format="base64"))
    assert server.requests[0].json()["encoding_format"] == "float"  # asked as floats, encoded by us
    encoded = answer["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert base64.b64decode(encoded) == struct.pack("<3f", *embedding_vector("four", 3))


def test_an_upstream_base64_answer_is_read(server) -> None:
    vector = [0.5, -1.0]
    server.script(json_reply(embeddings([encode_base64_embedding(vector)])))
    answer = make_provider(server).create_embeddings("x", "m")
    assert answer["data"][0]["embedding"] == vector


def test_vectors_come_back_in_input_order(server) -> None:
    shuffled = embeddings([[2.0], [1.0]])
    shuffled["data"][0]["index"], shuffled["data"][1]["index"] = 1, 0
    server.script(json_reply(shuffled))
    answer = make_provider(server).create_embeddings(["a", "b"], "m")
    assert [item["embedding"] for item in answer["data"]] == [[1.0], [2.0]]
    assert [item["index"] for item in answer["data"]] == [0, 1]


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (embeddings([[1.0]]), "1 vectors for 2 inputs"),
        (embeddings([[1.0], [[1.0], [2.0]]]), "not a list of numbers"),
        ({"data": "nope"}, "unexpected shape"),
    ],
    ids=["count", "per-token", "shape"],
)
def test_a_wrong_answer_is_a_response_error(server, reply: dict[str, Any], says: str) -> None:
    server.script(json_reply(reply))
    with pytest.raises(ResponseError) as caught:
        make_provider(server).create_embeddings(["a", "b"], "m")
    assert says in str(caught.value)


def test_an_error_answer_is_typed_and_never_holds_the_key(server) -> None:
    server.script(json_reply({"error": {"message": f"bad key {SECRET}", "type": "invalid_request_error"}}, 400))
    with pytest.raises(BadRequestError) as caught:
        make_provider(server, api_key=SECRET).create_embeddings("a", "m")
    assert_no_secret(caught.value)


def test_bad_input_is_refused_before_sending(server) -> None:
    with pytest.raises(InvalidRequestError):
        make_provider(server).create_embeddings([], "m")
    with pytest.raises(TypeError, match="encoding"):
        make_provider(server).create_embeddings("a", "m", encodingformat="float")
    with pytest.raises(ValueError, match="no embedding model"):
        make_provider(server).create_embeddings("a")
    assert server.requests == []


# --------------------------------------------------------------------------- the client


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_client_shape_and_attribute_access(server) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=2))
    with Client(make_provider(server)) as client:
        answer = client.embeddings.create(input=["ab", "abc"], model="m")
    assert isinstance(answer, CreateEmbeddingResponse)
    assert answer.object == "list" and answer.model == "m"
    assert [item.index for item in answer.data] == [0, 1]
    assert answer.data[1].embedding == embedding_vector("abc", 2)
    assert answer.usage.prompt_tokens == 5 and answer.usage.total_tokens == 5
    assert answer.to_dict()["data"][0] == {"object": "embedding", "index": 0, "embedding": embedding_vector("ab", 2)}


def test_async_client_retries_a_5xx_then_answers_base64(server) -> None:
    server.script(json_reply({"error": {"message": "busy"}}, 503), embeddings_handler(dimensions=2))
    sleeps = Sleeps()

    async def run() -> CreateEmbeddingResponse:
        client = AsyncClient(make_provider(server), sleep=sleeps)
        return await client.embeddings.create(input="abc", model="m", encoding_format="base64")

    answer = asyncio.run(run())
    assert len(server.requests) == 2 and len(sleeps.delays) == 1
    assert decode_base64_embedding(answer.data[0].embedding) == embedding_vector("abc", 2)


def test_client_falls_back_to_the_next_provider(server) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=1))
    broken = make_provider(server, api_base=server.url + "/broken")
    server.route("POST", "/broken/embeddings", json_reply({"error": {"message": "down"}}, 500))
    with Client([broken, make_provider(server)], max_retries=0) as client:
        answer = client.embeddings.create(input="x", model="m")
    assert answer.data[0].embedding == embedding_vector("x", 1)
    assert [request.path for request in server.requests] == ["/broken/embeddings", "/v1/embeddings"]


def test_client_never_retries_a_bad_input_or_a_400(server) -> None:
    server.script(json_reply({"error": {"message": "no"}}, 400))
    sleeps = Sleeps()
    with Client(make_provider(server), sleep=sleeps) as client:
        with pytest.raises(InvalidRequestError):
            client.embeddings.create(input=[], model="m")
        with pytest.raises(BadRequestError):
            client.embeddings.create(input="x", model="m")
    assert len(server.requests) == 1 and sleeps.delays == []


def test_client_all_failed_lists_each_provider(server) -> None:
    server.route("POST", "/v1/embeddings", json_reply({"error": {"message": "down"}}, 500))
    with Client([make_provider(server), make_provider(server)], max_retries=0) as client:
        with pytest.raises(AllProvidersFailedError) as caught:
            client.embeddings.create(input="x", model="m")
    assert all(isinstance(error, ServerError) for _, error in caught.value.errors)
