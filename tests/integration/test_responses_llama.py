"""``POST /v1/responses`` in front of the real llama.cpp server (``local``), with the official ``openai`` SDK:
text, a stream through ``responses.stream()``, and a tool-call round trip through ``previous_response_id``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from gateway_support import Running

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_server")]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(gateway: Running) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0) as sdk:
        yield sdk


def test_text_and_stream(client: openai.OpenAI) -> None:
    response = client.responses.create(model="small", input="Say hello.", max_output_tokens=12, temperature=0)
    assert response.status in ("completed", "incomplete") and response.output_text.strip()
    assert response.usage is not None and response.usage.output_tokens > 0
    deltas: list[str] = []
    last: Any = None
    with client.responses.stream(
        model="local/smollm2", instructions="Answer briefly.", input="Say hello.", max_output_tokens=12, temperature=0
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            last = event
    # 12 tokens usually cut the answer: response.incomplete (the SDK's get_final_response() wants completed)
    assert last.type in ("response.completed", "response.incomplete")
    final = last.response
    assert len(deltas) > 1 and final.output_text == "".join(deltas)  # piece by piece, byte-exact
    # llama.cpp's server sends no usage in streams (it ignores stream_options): usage stays null, never invented
    assert final.usage is None or final.usage.input_tokens > 0
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="small",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=48,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict)
    second = client.responses.create(
        model="small",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24 C"}],
        tools=[WEATHER],
        max_output_tokens=24,
        temperature=0,
    )
    assert second.status in ("completed", "incomplete") and second.previous_response_id == first.id
    assert second.output
