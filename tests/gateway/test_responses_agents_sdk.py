"""The OpenAI Agents SDK (a real Responses API client, SPEC 9.5) against the gateway, with the scripted server
playing the model: a function-tool agent, plain and streamed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from scripted_server import ScriptedServer, chunk, completion, json_reply, sse_reply, tool_call, tool_call_delta, usage

agents = pytest.importorskip("agents")
from openai import AsyncOpenAI  # noqa: E402

CITY_WEATHER = {"Paris": "sunny, 24 C"}


def weather_agent(client: AsyncOpenAI) -> Any:
    agents.set_tracing_disabled(True)  # no trace export to any service

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return CITY_WEATHER.get(city, "unknown")

    model = agents.OpenAIResponsesModel(model="up/test-model", openai_client=client)
    return agents.Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model=model)


def check_upstream_requests(server: ScriptedServer, stream: bool, arguments: str) -> None:
    first, second = (request.json() for request in server.requests)
    assert first["stream"] is stream and second["stream"] is stream
    assert first["messages"] == [
        {"role": "system", "content": "Answer with the weather."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    [tool] = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
    # The SDK sends the whole history again (no previous_response_id): the call and its output come back as chat.
    assert second["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"},
    ]


def test_function_tool_agent(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        json_reply(
            completion(None, tool_calls=[tool_call("get_weather", {"city": "Paris"})], finish_reason="tool_calls")
        )
    )
    server.script(json_reply(completion("It is sunny in Paris.", usage=usage(20, 6))))

    async def main() -> Any:
        async with AsyncOpenAI(base_url=gw.base, api_key="anything", max_retries=0) as client:
            return await agents.Runner.run(weather_agent(client), "Weather in Paris?")

    result = asyncio.run(main())
    assert result.final_output == "It is sunny in Paris."
    check_upstream_requests(server, False, '{"city":"Paris"}')


def test_function_tool_agent_streamed(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(role="assistant", content=None),
            chunk(tool_calls=[tool_call_delta(0, id="call_1", name="get_weather", arguments="")]),
            chunk(tool_calls=[tool_call_delta(0, arguments='{"city": ')]),
            chunk(tool_calls=[tool_call_delta(0, arguments='"Paris"}')]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    pieces = ["It is ", "sunny ", "in Paris."]
    server.script(sse_reply(*(chunk(piece) for piece in pieces), chunk(finish_reason="stop"), "[DONE]"))

    async def main() -> tuple[Any, list[str]]:
        async with AsyncOpenAI(base_url=gw.base, api_key="anything", max_retries=0) as client:
            run = agents.Runner.run_streamed(weather_agent(client), "Weather in Paris?")
            deltas = []
            async for event in run.stream_events():
                if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
            return run.final_output, deltas

    final, deltas = asyncio.run(main())
    assert final == "It is sunny in Paris." and deltas == pieces
    check_upstream_requests(server, True, '{"city": "Paris"}')
    assert json.loads(server.requests[0].body)["stream_options"] == {"include_usage": True}
