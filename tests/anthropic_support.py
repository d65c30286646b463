"""Anthropic Messages SSE for tests: split a body into events and check the invariants of SPEC 9.3.3."""

from __future__ import annotations

import json
from typing import Any

DELTA_OF_BLOCK = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}


def events_of(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` per SSE event; an event without an ``event:`` line fails the test."""
    events = []
    for raw in body.decode("utf-8").split("\n\n"):
        if not raw:
            continue
        lines = raw.split("\n")
        assert lines[0].startswith("event: "), f"an event without an event: line: {raw!r}"
        assert len(lines) == 2 and lines[1].startswith("data: "), raw
        name = lines[0][len("event: ") :]
        data = json.loads(lines[1][len("data: ") :])
        assert data["type"] == name, raw
        events.append((name, data))
    return events


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Assert 9.3.3's order and block rules on a whole stream (ending in message_stop or error); return the
    blocks as they were built (``content_block_start`` plus the deltas' text / JSON)."""
    names = [name for name, _ in events]
    assert names[0] == "message_start", names
    assert events[0][1]["message"]["content"] == [] and events[0][1]["message"]["stop_reason"] is None
    assert isinstance(events[0][1]["message"]["usage"]["input_tokens"], int)
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for name, data in events[1:]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None, "a block opened before the previous one closed"
            assert data["index"] == len(blocks), "block indexes count from 0 and are never reused"
            open_index = data["index"]
            blocks.append({**data["content_block"], "deltas": []})
        elif name == "content_block_delta":
            assert data["index"] == open_index, "a delta for a block that is not open"
            block = blocks[open_index]
            assert data["delta"]["type"] == DELTA_OF_BLOCK[block["type"]], (block["type"], data)
            block["deltas"].append(data["delta"])
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name == "message_delta":
            assert open_index is None, "message_delta with a block still open"
            assert set(data["delta"]) == {"stop_reason", "stop_sequence"}
            assert {"input_tokens", "output_tokens", "cache_read_input_tokens"} <= set(data["usage"])
        elif name == "message_stop":
            assert names[-2] == "message_delta" and name == names[-1]
        elif name == "error":
            assert name == names[-1], "the stream goes on after its error event"
            assert data["error"]["type"] and data["error"]["message"]
        else:
            raise AssertionError(f"unexpected event {name}")
    assert names[-1] in ("message_stop", "error"), names
    return blocks


def block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """The text of each block: text/thinking deltas joined, or the tool's partial JSON joined."""
    out = []
    for block in blocks:
        field = {"text": "text", "thinking": "thinking", "tool_use": "partial_json"}[block["type"]]
        out.append("".join(delta[field] for delta in block["deltas"]))
    return out
