"""The gateway in front of the real llama.cpp server (``local``), used with the official ``openai`` SDK.

The gateway runs in this process (so ``local`` is the session's ``llama_server``), served the way
``llmrelay serve`` serves it. Every request sends a small ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import openai
import pytest
from gateway_support import Lines, Running

from llmrelay.providers.local import Local
from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_server")]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_streamed_chat(gateway: Running) -> None:
    client = openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model="local/smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        stream=True,
        temperature=0,
    )
    pieces, finish, model = [], None, None
    for part in stream:
        model = part.model
        for choice in part.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(pieces).strip()
    assert len(pieces) > 1  # forwarded piece by piece, not as one block
    assert finish in ("stop", "length") and model
    client.close()


def test_forced_tool_call_round_trip(gateway: Running) -> None:
    client = openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0)
    messages: list[dict] = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = client.chat.completions.create(
        model="small",
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
        temperature=0,
    )
    calls = answer.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments, dict)
    assert answer.choices[0].finish_reason == "tool_calls"
    messages.append(
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True) for call in calls]}
    )
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": '{"temperature_c": 18}'})
    final = client.chat.completions.create(model="small", messages=messages, max_tokens=16, temperature=0)
    assert final.choices[0].message.content and final.choices[0].finish_reason in ("stop", "length")
    client.close()


def test_a_streamed_tool_call_arrives_piece_by_piece_and_adds_up(gateway: Running) -> None:
    """llama.cpp streams a call's arguments in pieces: the chat door forwards one entry per piece (SPEC 8.5), and
    the SDK's accumulated call is a complete JSON object under the id of its first piece."""
    client = openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48,
        temperature=0,
        stream=True,
    )
    entries = [entry for part in stream if part.choices for entry in part.choices[0].delta.tool_calls or []]
    client.close()
    assert len(entries) > 1, "the call came in one piece"
    assert entries[0].id and entries[0].function and entries[0].function.name == "get_weather"
    assert all(entry.index == 0 and entry.id in (None, entries[0].id) for entry in entries)
    arguments = "".join(entry.function.arguments or "" for entry in entries if entry.function)
    assert isinstance(json.loads(arguments), dict)


def test_models_list(gateway: Running) -> None:
    client = openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0)
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "small"
    assert "local/smollm2" in ids and "local/smollm2-tools" in ids
    assert client.models.retrieve("local/smollm2").owned_by == "local"
    client.close()


def test_local_streams_carry_usage_that_counts_against_tpm(tmp_path: Path) -> None:
    """llama.cpp's server sends no usage in a stream: the gateway counts it (completion: one token per streamed
    piece, exact here; prompt: llama.cpp's tokenizer over the messages, without the template's own tokens), so a
    key's tpm and the token metrics see local streams."""
    path = tmp_path / "gateway.toml"
    path.write_text("".join(_key(name, tpm=10) for name in ("whole", "streamed")))
    log: list[str] = []
    running = Running(Gateway(load_config(str(path)), log_stream=Lines(log, lambda line: None)), log).start()
    whole = openai.OpenAI(base_url=running.base, api_key=_secret("whole"), max_retries=0)
    streamed = openai.OpenAI(base_url=running.base, api_key=_secret("streamed"), max_retries=0)
    try:
        call = {
            "model": "local/smollm2",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 12,
            "temperature": 0,
            "seed": 7,
        }
        exact = whole.chat.completions.create(**call).usage  # the server's own counts (not streamed)
        assert exact is not None and exact.completion_tokens > 0
        with pytest.raises(openai.RateLimitError):  # 10 tokens a minute: that answer used them up ...
            whole.chat.completions.create(**call)
        stream = streamed.chat.completions.create(**call, stream=True, stream_options={"include_usage": True})
        pieces, usage = 0, None
        for part in stream:
            pieces += sum(1 for choice in part.choices if choice.delta.content)
            usage = part.usage or usage
        assert usage is not None, "a local stream with include_usage ended without usage"
        assert usage.completion_tokens == pieces == exact.completion_tokens  # same seed, same tokens
        assert 0 < usage.prompt_tokens <= exact.prompt_tokens  # the template's tokens are not counted
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        with pytest.raises(openai.RateLimitError):  # ... and so did the stream
            streamed.chat.completions.create(**call, stream=True)
        metrics = running.run(_metrics(running)).splitlines()
        counted = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics
            if line.startswith("llmrelay_tokens_total{") and 'kind="completion"' in line and 'provider="local"' in line
        ]
        assert sum(counted) == exact.completion_tokens + pieces, metrics
    finally:
        whole.close()
        streamed.close()
        running.stop()


def _secret(name: str) -> str:
    return f"sk-llmrelay-{name}-0123456789abcdef"


def _key(name: str, **limits: int) -> str:
    digest = hashlib.sha256(_secret(name).encode()).hexdigest()
    return f'[[keys]]\nname = "{name}"\nsha256 = "{digest}"\n' + "".join(f"{k} = {v}\n" for k, v in limits.items())


async def _metrics(running: Running) -> str:
    return running.gateway.metrics.render().decode()


def test_large_max_tokens_lowered_to_the_models_context_and_effort_dropped(gateway: Running) -> None:
    """SPEC 9.1.7 / 9.1.8 with the real server: Claude Code's ``max_tokens: 32000`` and a reasoning effort."""
    client = openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="small",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=32000,
        reasoning_effort="high",
        stop=[".", "!", "\n"],  # a short answer, whatever the cap
        temperature=0,
    )
    cap = Local.get_max_tokens_cap()
    assert cap is not None and cap < 32000
    assert raw.headers["x-llmrelay-ignored"] == f"max_tokens>{cap}, reasoning_effort"
    answer = raw.parse()
    assert answer.choices[0].message.content is not None
    client.close()


def test_embeddings_through_the_gateway_with_the_sdk_default_base64(gateway: Running) -> None:
    with openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0) as client:
        answer = client.embeddings.create(model="local/smollm2-embed", input=["a red apple", "a green pear"])
        assert [len(item.embedding) for item in answer.data] == [576, 576]
        assert [item.index for item in answer.data] == [0, 1]
        assert answer.model == "smollm2-embed" and answer.usage.prompt_tokens > 0
        floats = client.embeddings.create(model="local/smollm2-embed", input="a red apple", encoding_format="float")
        assert floats.data[0].embedding == pytest.approx(answer.data[0].embedding, abs=1e-6)


def test_embeddings_the_local_server_cannot_take_are_400s(gateway: Running) -> None:
    with openai.OpenAI(base_url=gateway.base, api_key="none", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="local/smollm2-embed", input=[[1, 2, 3]])
        assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
        assert "text only" in caught.value.body["message"]  # type: ignore[index]
