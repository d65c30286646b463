"""End to end: the installed `llmrelay serve` as a subprocess, used with the official `openai` SDK (sync, async,
streaming, tools) in front of the scripted server; drain on SIGTERM / SIGINT; the access log on stderr."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import subprocess

import aiohttp
import openai
import pytest
from gateway_support import STARTUP
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse, sse_reply, tool_call, usage

KEY = "sk-llmrelay-e2e-0123456789"
KEYS = f'[[keys]]\nname = "ci"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_sdk_sync_json_stream_and_tools(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway(KEYS + '[routes.fast]\ntargets = ["up/a"]\n')
    client = openai.OpenAI(base_url=gw.base, api_key=KEY, max_retries=0)
    server.script(json_reply(completion("Hello there", model="a-1", usage=usage(4, 2))))
    answer = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content == "Hello there" and answer.usage.total_tokens == 6
    assert answer.model == "a-1"

    server.script(
        sse_reply(
            chunk("One"), chunk(" two"), chunk(finish_reason="stop"), chunk(choices=[], usage=usage(1, 2)), "[DONE]"
        )
    )
    stream = client.chat.completions.create(
        model="up/a", messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
    )
    pieces, usages = [], []
    for part in stream:
        if part.choices and part.choices[0].delta.content:
            pieces.append(part.choices[0].delta.content)
        if part.usage:
            usages.append(part.usage.total_tokens)
    assert pieces == ["One", " two"] and usages == [3]

    server.script(
        json_reply(
            completion(None, tool_calls=[tool_call("get_weather", {"city": "Paris"})], finish_reason="tool_calls")
        )
    )
    answer = client.chat.completions.create(
        model="up/a", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice="required"
    )
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert answer.choices[0].finish_reason == "tool_calls"
    assert server.requests[-1].json()["tools"] == TOOLS

    ids = [model.id for model in client.models.list()]
    assert "fast" in ids

    wrong = openai.OpenAI(base_url=gw.base, api_key="sk-llmrelay-nope", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nowhere/x", messages=[{"role": "user", "content": "Hi"}])
    server.script(sse_reply(chunk("cut"), end="abrupt"))
    with pytest.raises(openai.APIError):  # an in-band error, never a silently short answer
        for _ in client.chat.completions.create(
            model="up/a", messages=[{"role": "user", "content": "Hi"}], stream=True
        ):
            pass
    client.close()
    assert gw.terminate() == 0
    access = [line for line in gw.lines if "/v1/" in line]
    assert len(access) == 7 and all("key=ci" in line or " 401 " in line for line in access)
    assert KEY not in "\n".join(gw.lines) and "Hello there" not in "\n".join(gw.lines)


def test_sdk_async_streaming_and_tool_call_deltas(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway("", "--log-format", "json")
    server.script(
        sse_reply(
            chunk(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":'},
                    }
                ]
            ),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": ' "Oslo"}'}}]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )

    async def run() -> tuple[list[str], str | None, str]:
        async with openai.AsyncOpenAI(base_url=gw.base, api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="up/a", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True
            )
            names, arguments, finish = [], "", None
            async for part in stream:
                for choice in part.choices:
                    for delta in choice.delta.tool_calls or []:
                        if delta.function and delta.function.name:
                            names.append(delta.function.name)
                        if delta.function and delta.function.arguments:
                            arguments += delta.function.arguments
                    finish = choice.finish_reason or finish
            return names, finish, arguments

    names, finish, arguments = asyncio.run(run())
    assert names == ["get_weather"] and finish == "tool_calls" and json.loads(arguments) == {"city": "Oslo"}
    assert gw.terminate() == 0
    records = [json.loads(line) for line in gw.lines if line.startswith("{")]
    assert records and records[-1]["path"] == "/v1/chat/completions" and records[-1]["status"] == 200
    assert records[-1]["provider"] == "up"


async def _drain(gw, signum: int) -> tuple[bytes, int, int]:
    async with aiohttp.ClientSession() as probe, aiohttp.ClientSession() as session:
        async with probe.get(gw.url + "/health") as health:  # leaves an idle keep-alive connection in `probe`
            assert health.status == 200
        body = {"model": "up/a", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        async with session.post(gw.url + "/v1/chat/completions", json=body) as response:
            first = await response.content.readuntil(b'"content":"one"')
            gw.process.send_signal(signum)
            for _ in range(50):  # the idle keep-alive connection of `probe` is still served while draining
                async with probe.get(gw.url + "/health") as health:
                    draining = health.status
                if draining == 503:
                    break
                await asyncio.sleep(0.05)
            rest = await response.read()
        return first + rest, draining, response.status


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_a_stream_in_flight(server: ScriptedServer, spawn_gateway, signum: int) -> None:
    gw = spawn_gateway()
    writes: list[bytes | float] = [
        sse(chunk("one")),
        1.5,
        sse(chunk("two")),
        1.5,
        sse(chunk("three"), chunk(finish_reason="stop"), "[DONE]"),
    ]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes))
    body, health, status = asyncio.run(_drain(gw, signum))
    assert status == 200
    assert health == 503
    assert body.endswith(b"data: [DONE]\n\n")
    for word in (b"one", b"two", b"three"):
        assert b'"content":"%s"' % word in body
    assert gw.process.wait(15) == 0
    assert not [line for line in gw.lines if "Traceback" in line]


def test_insecure_no_auth_allows_all_interfaces(spawn_gateway) -> None:
    gw = spawn_gateway("", "--host", "0.0.0.0", "--insecure-no-auth")
    assert "llmrelay gateway on http://0.0.0.0:" in gw.lines[0] and "routes: none" in gw.lines[0]
    assert gw.terminate() == 0


def test_workers_share_one_port_and_stop_together(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway(KEYS.replace('"\n', '"\nrpm = 100\n', 1), "--workers", "2")
    assert any("each worker keeps its own" in line for line in gw.lines)
    assert STARTUP.fullmatch(gw.lines[-1]) and gw.lines[-1].endswith("; routes: none; 2 workers)"), gw.lines[-1]
    client = openai.OpenAI(base_url=gw.base, api_key=KEY, max_retries=0)
    for number in range(4):
        server.script(json_reply(completion(f"answer {number}")))
    answers = [
        client.chat.completions.create(model="up/a", messages=[{"role": "user", "content": "Hi"}]).choices[0]
        for _ in range(4)
    ]
    assert sorted(choice.message.content for choice in answers) == [f"answer {n}" for n in range(4)]
    client.close()
    assert gw.terminate() == 0


def test_curl_streams_and_errors(server: ScriptedServer, spawn_gateway) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    gw = spawn_gateway()
    server.script(sse_reply(chunk("Hi"), chunk(" there"), chunk(finish_reason="stop"), "[DONE]"))
    body = json.dumps({"model": "up/a", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    done = subprocess.run(
        [curl, "-sN", "-D", "-", gw.base + "/chat/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True,
        text=True,
        timeout=30,
    )
    head, _, events = done.stdout.partition("\n\n")  # (text mode turned CRLF into LF)
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head.lower()
    assert '"content":"Hi"' in events and '"content":" there"' in events and events.endswith("data: [DONE]\n\n")
    done = subprocess.run(
        [curl, "-s", "-o", "-", "-w", "\n%{http_code}", gw.base + "/chat/completions", "-d", "{oops"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    answer, status = done.stdout.rsplit("\n", 1)
    assert status == "400" and json.loads(answer)["error"]["code"] == "invalid_json"
    assert gw.terminate() == 0
