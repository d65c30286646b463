"""``/v1/messages`` and ``/v1/messages/count_tokens`` in front of the real llama.cpp server (``local``), with the
official ``anthropic`` SDK (SPEC 9.3, 9.5). Every request sends a small ``max_tokens``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from gateway_support import Running

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_server")]

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def sdk(gateway: Running) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gateway.url, api_key="none", max_retries=0, timeout=120)
    _OPEN.append(made)
    return made


def test_create_and_stream_text(gateway: Running) -> None:
    client = sdk(gateway)
    params: dict[str, Any] = {
        "model": "local/smollm2",
        "max_tokens": 12,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello."}],
        "extra_body": {"temperature": 0},
    }
    message = client.messages.create(**params)
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(**params) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1  # forwarded piece by piece
    assert final.content[0].type == "text" and final.content[0].text == "".join(pieces)
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_count_tokens_is_exact_for_local(gateway: Running) -> None:
    """The count equals the prompt tokens llama.cpp reports when it answers the same request."""
    client = sdk(gateway)
    conversations: list[dict[str, Any]] = [
        {"system": "Be brief.", "messages": [{"role": "user", "content": "Héllo there, how are you? 🙂"}]},
        {
            "messages": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny, 21 C"},
                        {"type": "text", "text": "Answer in one word."},
                    ],
                },
            ],
            "tools": [WEATHER],
        },
    ]
    for conversation in conversations:
        raw = client.messages.with_raw_response.count_tokens(model="local/smollm2", **conversation)
        assert "x-llmrelay-token-count" not in raw.headers  # exact, not the estimate
        counted = raw.parse().input_tokens
        answered = client.messages.create(
            model="local/smollm2", max_tokens=4, extra_body={"temperature": 0}, **conversation
        )
        assert counted == answered.usage.input_tokens


def test_stream_message_start_carries_the_exact_count(gateway: Running) -> None:
    client = sdk(gateway)
    messages = [{"role": "user", "content": "Count to three."}]
    counted = client.messages.count_tokens(model="small", messages=messages).input_tokens
    with client.messages.stream(model="small", max_tokens=6, messages=messages) as stream:
        starts = [event for event in stream if event.type == "message_start"]
    assert starts[0].message.usage.input_tokens == counted


def test_forced_tool_use_round_trip(gateway: Running) -> None:
    client = sdk(gateway)
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model="small",
        max_tokens=48,
        messages=history,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body={"temperature": 0},
    )
    uses = [block for block in first.content if block.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict)
    assert first.stop_reason == "tool_use"
    history.append({"role": "assistant", "content": [block.model_dump() for block in first.content]})
    history.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}]}
    )
    second = client.messages.create(
        model="small", max_tokens=16, messages=history, tools=[WEATHER], extra_body={"temperature": 0}
    )
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")
