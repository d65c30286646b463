"""Embeddings: the request's checks, its body, the answer's shape, and base64 encoding (SPEC 9.4).

One set of rules serves every face: ``OpenaiTemplate.create_embeddings_async``,
the client's ``embeddings.create``, the CLI's ``embed`` and the gateway's
``/v1/embeddings`` door.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from ..errors import InvalidRequestError, ResponseError
from ..http.status import data_answer

__all__ = [
    "EMBEDDING_PARAMETERS",
    "ENCODING_FORMATS",
    "MAX_INPUTS",
    "check_embedding_input",
    "check_embedding_options",
    "decode_base64_embedding",
    "embedding_body",
    "encode_base64_embedding",
    "encode_embeddings",
    "parse_embedding_answer",
]

EMBEDDING_PARAMETERS = ("encoding_format", "dimensions", "user")
ENCODING_FORMATS = ("float", "base64")
MAX_INPUTS = 2048
_FLOAT32 = struct.Struct("<f")


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code, status=400)


def _is_token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value)
    )


def check_embedding_input(value: Any) -> str | list[Any]:
    """``input`` as the OpenAI API takes it: a string, a list of strings, a list of token ids, or a list of
    token-id lists. Empty strings or lists, mixed lists, or more than :data:`MAX_INPUTS` items raise
    :class:`~llmrelay.errors.InvalidRequestError` naming ``input``."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str):
        if not value:
            raise _invalid("input is an empty string; give the text to embed", "input")
        return value
    if not isinstance(value, list):
        raise _invalid(
            f"input must be a string, a list of strings, a list of token ids or a list of token-id lists, "
            f"not {type(value).__name__}",
            "input",
            "invalid_type",
        )
    if not value:
        raise _invalid("input is an empty list; give at least one text", "input")
    if len(value) > MAX_INPUTS:
        raise _invalid(f"input has {len(value)} items; at most {MAX_INPUTS} per request", "input")
    if all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise _invalid(f"input[{index}] is an empty string", "input")
        return value
    if _is_token_list(value):
        return value
    if all(isinstance(item, (list, tuple)) for item in value):
        value = [list(item) for item in value]
        for index, item in enumerate(value):
            if not _is_token_list(item):
                raise _invalid(f"input[{index}] is not a non-empty list of token ids (integers ≥ 0)", "input")
        return value
    raise _invalid(
        "input mixes kinds: give a list of strings, a list of token ids, or a list of token-id lists",
        "input",
        "invalid_type",
    )


def check_embedding_options(options: dict[str, Any]) -> dict[str, Any]:
    """``encoding_format`` (``float`` or ``base64``), ``dimensions`` (an int ≥ 1) and ``user`` (a string),
    checked; ``None`` values are left out."""
    checked = {name: value for name, value in options.items() if value is not None}
    encoding = checked.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise _invalid(f"encoding_format must be 'float' or 'base64', not {encoding!r}", "encoding_format")
    dimensions = checked.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise _invalid(f"dimensions must be a whole number ≥ 1, not {dimensions!r}", "dimensions")
    user = checked.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid(f"user must be a string, not {type(user).__name__}", "user", "invalid_type")
    return checked


def embedding_body(
    model: str, input: str | list[Any], options: dict[str, Any], extra_data: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``/embeddings`` body. ``base64`` is asked of the upstream as ``float`` (it is encoded here, so a
    server that ignores ``encoding_format`` cannot hand back the wrong kind)."""
    body: dict[str, Any] = {"model": model, "input": input}
    body.update(options)
    if body.get("encoding_format") == "base64":
        body["encoding_format"] = "float"
    if extra_data:
        body.update(extra_data)
    return body


def decode_base64_embedding(text: str) -> list[float]:
    """The floats of a base64 embedding (little-endian float32)."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("a base64 embedding must hold whole float32 values")
    return [value for (value,) in _FLOAT32.iter_unpack(raw)]


def encode_base64_embedding(vector: list[float]) -> str:
    """A vector as the base64 of its little-endian float32 values (what the OpenAI API sends for ``base64``)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _vector(item: dict[str, Any], name: str) -> list[float]:
    value = item.get("embedding")
    if isinstance(value, str):
        try:
            return decode_base64_embedding(value)
        except ValueError:
            raise ResponseError("an embedding in the answer is not valid base64 float32", provider=name) from None
    if not isinstance(value, list) or not all(
        isinstance(number, (int, float)) and not isinstance(number, bool) for number in value
    ):
        raise ResponseError("an embedding in the answer is not a list of numbers", provider=name)
    vector = [float(number) for number in value]
    if not all(math.isfinite(number) for number in vector):
        raise ResponseError("an embedding in the answer holds NaN or infinity", provider=name)
    return vector


def parse_embedding_answer(raw: bytes, name: str, model: str, count: int) -> dict[str, Any]:
    """The server's embeddings JSON in the OpenAI shape, float vectors in input order: ``{"object": "list",
    "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``. Errors become typed errors;
    an answer with the wrong number of vectors is a ``ResponseError``."""
    data, entries = data_answer(raw, name, "embeddings")
    if len(entries) != count:
        raise ResponseError(f"the embeddings answer holds {len(entries)} vectors for {count} inputs", provider=name)
    indexes = [item.get("index", position) for position, item in enumerate(entries)]
    if sorted(indexes) != list(range(count)):
        raise ResponseError(f"the embeddings answer's indexes are not 0…{count - 1}", provider=name)
    ordered = sorted(zip(indexes, entries, strict=True), key=lambda pair: pair[0])
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    total_tokens = usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else prompt_tokens
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": _vector(item, name)} for index, item in ordered],
        "model": data.get("model") if isinstance(data.get("model"), str) and data.get("model") else model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": total_tokens},
    }


def encode_embeddings(answer: dict[str, Any], encoding_format: str | None) -> dict[str, Any]:
    """The answer with each vector as ``encoding_format`` asks: floats as they are, ``base64`` encoded here.
    Returns a new dict (the answer is not changed)."""
    if encoding_format != "base64":
        return answer
    data = [{**item, "embedding": encode_base64_embedding(item["embedding"])} for item in answer["data"]]
    return {**answer, "data": data}


def input_count(value: str | list[Any]) -> int:
    """How many vectors ``input`` asks for."""
    if isinstance(value, str):
        return 1
    if value and all(isinstance(item, int) for item in value):
        return 1  # one list of token ids
    return len(value)
