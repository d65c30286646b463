"""The embeddings door's translator (SPEC 9.4.1), without a socket."""

from __future__ import annotations

from typing import Any

import pytest

from llmrelay.errors import InvalidRequestError
from llmrelay.server.doors import embeddings


def test_parse_keeps_input_options_and_extra_fields() -> None:
    req = embeddings.parse(
        {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8, "user": "u", "x_top": 1}
    )
    assert (req.model, req.input, req.encoding_format) == ("m", ["a", "b"], "base64")
    assert req.options == {"dimensions": 8, "user": "u", "encoding_format": "float"}
    assert req.extra == {"x_top": 1}
    assert embeddings.parse({"model": "m", "input": "a"}).encoding_format == "float"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "a"}, "model"),
        ({"model": 3, "input": "a"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": [[]]}, "input"),
        ({"model": "m", "input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "m", "input": "a", "dimensions": -1}, "dimensions"),
        ({"model": "m", "input": "a", "user": {}}, "user"),
    ],
)
def test_parse_refuses_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        embeddings.parse(body)
    assert caught.value.param == param and caught.value.status == 400


def test_the_cache_key_ignores_the_encoding() -> None:
    float_req = embeddings.parse({"model": "m", "input": "a", "encoding_format": "float"})
    base64_req = embeddings.parse({"model": "m", "input": "a", "encoding_format": "base64"})
    other = embeddings.parse({"model": "m", "input": "b"})
    key = embeddings.cache_key("r", "", float_req)
    assert key == embeddings.cache_key("r", "", base64_req)
    assert key != embeddings.cache_key("r", "", other) != embeddings.cache_key("r", "alice", float_req)
