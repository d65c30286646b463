"""The answers the fake server sends, shared by the server and the clients so every text can be checked byte for byte.

A scenario is named by the request's ``model``:

* ``stream-N``: N text chunks; the end of the HTTP body is written right after ``data: [DONE]``;
* ``late-N``: the same, but the end of the body comes 2 ms after ``data: [DONE]`` (a caller that
  stops reading at ``[DONE]`` must drain it, or lose the connection);
* ``drip-N-MS``: N text chunks, one every MS milliseconds (the first at once).

With ``"stream": false`` any of them answers one ``chat.completion`` JSON body holding the same text.
Every streamed event is one socket write and one HTTP chunk, shaped like OpenAI's (about 250 bytes).
"""

from __future__ import annotations

import json
from functools import lru_cache

CREATED = 1730000000
MODEL = "gpt-4o-mini-2024-07-18"
FINGERPRINT = "fp_44709d6fcb"
LATE_END_SECONDS = 0.002
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


def piece(index: int) -> str:
    """The text of chunk ``index``: mostly ASCII words, with JSON escapes and multi-byte UTF-8 mixed in."""
    if index == 0:
        return "Once"
    if index % 97 == 0:
        return '\n"quoted"'
    if index % 31 == 0:
        return " caf\u00e9 \u2014 \U0001f680"
    if index % 13 == 0:
        return " line\n"
    return f" w{index}"


@lru_cache(maxsize=64)
def expected_text(count: int) -> str:
    """The whole answer of a scenario with ``count`` chunks (never starts or ends with whitespace)."""
    text = "".join(piece(index) for index in range(count))
    assert text == text.strip(), "the bench text must not start or end with whitespace (g4f strips it)"
    return text


def parse_model(model: str) -> tuple[str, int, float]:
    """``(kind, chunks, interval in seconds)`` of a scenario name."""
    kind, _, rest = model.partition("-")
    if kind == "drip":
        count, _, interval = rest.partition("-")
        return kind, int(count), int(interval) / 1000
    if kind in ("stream", "late", "burst"):
        return kind, int(rest), 0.0
    raise ValueError(f"unknown bench scenario {model!r}")


def text_count(model: str) -> int:
    return parse_model(model)[1]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _chunk(delta: dict, finish_reason: str | None = None, choices: bool = True, usage: dict | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}] if choices else [],
        "usage": usage,
    }
    return b"data: " + _dumps(obj) + b"\n\n"


def usage(count: int) -> dict:
    return {"prompt_tokens": 12, "completion_tokens": count, "total_tokens": count + 12}


def sse_events(count: int) -> list[bytes]:
    """The SSE events of a streamed answer with ``count`` text chunks, each a separate write."""
    events = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    events.extend(_chunk({"content": piece(index)}) for index in range(count))
    events.append(_chunk({}, "stop"))
    events.append(_chunk({}, choices=False, usage=usage(count)))
    events.append(b"data: [DONE]\n\n")
    return events


def completion(count: int) -> bytes:
    """The non-streamed ``chat.completion`` body holding the same text."""
    return _dumps(
        {
            "id": "chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": expected_text(count), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(count),
        }
    )
