"""The OpenAI-shaped client: shapes compared with the official ``openai`` SDK, request bodies, tool loops.

Every test talks to the scripted server over real sockets. Shape tests send the
same scripted answer to the ``openai`` SDK and to llmrelay's client and compare
``to_dict()`` field by field, except:

* ``system_fingerprint``, ``service_tier`` and the message's ``annotations``
  (OpenAI-only fields the provider layer does not carry; see the client docs);
* keys OpenAI always sends but other servers omit (``logprobs: null`` on a choice,
  ``refusal: null`` on a message) are added to the SDK side, since llmrelay always
  emits OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from typing import Any

import openai
import pytest
from helpers import make_provider
from scripted_server import CREATED, Reply, ScriptedServer, json_reply, sse_reply

from llmrelay.client import AsyncClient, ChatCompletion, ChatCompletionChunk, Client
from llmrelay.errors import ModelNotFoundError

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
LOST_TOP = ("system_fingerprint", "service_tier")

# ------------------------------------------------------------ OpenAI-realistic payloads

USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def oai_completion(message: dict[str, Any], finish_reason: str = "stop", usage: dict | None = USAGE) -> dict:
    """A non-streamed answer as api.openai.com sends it."""
    body: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "service_tier": "default",
        "system_fingerprint": "fp_f9f4fb6dbf",
    }
    if usage is not None:
        body["usage"] = usage
    return body


def oai_chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, usage: Any = None) -> dict:
    """A stream chunk as api.openai.com sends it with ``stream_options.include_usage`` (``usage: null`` on each)."""
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_f9f4fb6dbf",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def oai_text_stream() -> Reply:
    return sse_reply(
        oai_chunk({"role": "assistant", "content": "", "refusal": None}),
        oai_chunk({"content": "It is"}),
        oai_chunk({"content": " sunny"}),
        oai_chunk({"content": " in Paris."}),
        oai_chunk({}, "stop"),
        oai_chunk(None, usage=USAGE),
        "[DONE]",
    )


def oai_tool_stream() -> Reply:
    first = {"index": 0, "id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    return sse_reply(
        oai_chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}),
        oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        oai_chunk({}, "tool_calls"),
        oai_chunk(None, usage=USAGE),
        "[DONE]",
    )


def deepseek_reasoning_stream() -> Reply:
    """DeepSeek-reasoner's stream: ``content: null`` beside reasoning, usage on the finish chunk, no refusal."""

    def ds(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict:
        body = {
            "id": "9b4a",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "deepseek-reasoner",
            "system_fingerprint": "fp_7e73fd9a08",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return body

    return sse_reply(
        ds({"role": "assistant", "content": None, "reasoning_content": ""}),
        ds({"content": None, "reasoning_content": "2 plus 2"}),
        ds({"content": None, "reasoning_content": " is 4."}),
        ds({"content": "4", "reasoning_content": None}),
        ds(
            {"content": "", "reasoning_content": None},
            "stop",
            {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        ),
        "[DONE]",
    )


# ------------------------------------------------------------------- comparison helpers


def sdk_call(server: ScriptedServer, call: Any) -> Any:
    """``call(client)`` with an official ``openai.OpenAI`` client aimed at the scripted server, closed afterwards."""
    with openai.OpenAI(base_url=server.base, api_key="x", max_retries=0) as client:
        result = call(client)
        return [chunk.to_dict() for chunk in result] if isinstance(result, openai.Stream) else result.to_dict()


def normalize_completion(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for key in LOST_TOP:
        data.pop(key, None)
    for choice in data["choices"]:
        choice.setdefault("logprobs", None)
        choice["message"].setdefault("refusal", None)
        choice["message"].pop("annotations", None)
    return data


def normalize_chunk(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for key in LOST_TOP:
        data.pop(key, None)
    for choice in data["choices"]:
        choice.setdefault("logprobs", None)
    return data


def accumulate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge stream chunks into (message, finish_reason, usage, model) the way a consumer would.

    Null-valued message keys are dropped, so ``content: null`` and an absent ``content`` merge alike.
    """
    message: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}
    finish = usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            for key, value in choice["delta"].items():
                if key == "tool_calls":
                    for delta in value:
                        call = calls.setdefault(delta["index"], {"function": {"name": "", "arguments": ""}})
                        for field in ("id", "type"):
                            if delta.get(field):
                                call[field] = delta[field]
                        function = delta.get("function") or {}
                        call["function"]["name"] += function.get("name") or ""
                        call["function"]["arguments"] += function.get("arguments") or ""
                elif isinstance(value, str) and key != "role":
                    message[key] = message.get(key, "") + value
                elif value is not None:
                    message[key] = value
            finish = choice["finish_reason"] or finish
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {"message": message, "finish_reason": finish, "usage": usage, "model": chunks[0]["model"]}


def ours(server: ScriptedServer, **attributes: Any) -> Client:
    return Client(make_provider(server, **attributes))


def assert_chunk_invariants(chunks: list[dict[str, Any]], usage: bool) -> None:
    """Role on the first chunk, finish_reason only on the last choice chunk, then the usage chunk if known."""
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [chunk for chunk in chunks if chunk["choices"]]
    assert [c["choices"][0]["finish_reason"] is not None for c in with_choices] == [False] * (len(with_choices) - 1) + [
        True
    ]
    assert all("role" not in chunk["choices"][0]["delta"] for chunk in with_choices[1:])
    if usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert all(chunk["usage"] is None for chunk in chunks[:-1])
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1  # the server's id when it sent one, else a generated chatcmpl-…


# ------------------------------------------------------------------------ shape tests


def test_non_stream_text_matches_openai_sdk(server: ScriptedServer) -> None:
    body = oai_completion({"role": "assistant", "content": "It is sunny.", "refusal": None, "annotations": []})
    server.script(json_reply(body), json_reply(body))
    expected = sdk_call(server, lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES))
    with ours(server) as client:
        resp = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert isinstance(resp, ChatCompletion)
    got = resp.to_dict()
    assert normalize_completion(got) == normalize_completion(expected)
    assert got["id"].startswith("chatcmpl-") and isinstance(got["created"], int)
    assert resp.choices[0].message.content == "It is sunny."
    assert resp.usage.total_tokens == 29 and resp.usage.prompt_tokens_details.cached_tokens == 3
    assert resp.model == "gpt-4o-2024-08-06"
    assert server.errors == []


def test_non_stream_tool_calls_match_openai_sdk(server: ScriptedServer) -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None, "annotations": []}
    body = oai_completion(message, "tool_calls")
    server.script(json_reply(body), json_reply(body))
    expected = sdk_call(server, lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS))
    with ours(server) as client:
        resp = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)
    assert normalize_completion(resp.to_dict()) == normalize_completion(expected)
    call = resp.choices[0].message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("call_abc123", "function", "get_weather")
    assert call.function.arguments == '{"city":"Paris"}'
    assert resp.choices[0].message.content is None
    assert resp.choices[0].finish_reason == "tool_calls"
    assert server.requests[1].json()["tools"] == TOOLS


def test_non_stream_reasoning_content_matches_openai_sdk(server: ScriptedServer) -> None:
    body = oai_completion({"role": "assistant", "content": "4", "reasoning_content": "2 plus 2 is 4."}, usage=None)
    server.script(json_reply(body), json_reply(body))
    expected = sdk_call(server, lambda c: c.chat.completions.create(model="deepseek-reasoner", messages=MESSAGES))
    with ours(server) as client:
        resp = client.chat.completions.create(model="deepseek-reasoner", messages=MESSAGES)
    assert normalize_completion(resp.to_dict()) == normalize_completion(expected)
    assert resp.choices[0].message.reasoning_content == "2 plus 2 is 4."
    assert resp.usage is None and "usage" not in resp.to_dict()


def test_stream_text_matches_openai_sdk_chunk_by_chunk(server: ScriptedServer) -> None:
    server.script(oai_text_stream(), oai_text_stream())
    expected = sdk_call(server, lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    with ours(server) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        chunks = list(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    got = [chunk.to_dict() for chunk in chunks]
    assert [normalize_chunk(c) for c in got] == [normalize_chunk(c) for c in expected]
    assert_chunk_invariants(got, usage=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "It is sunny in Paris."
    assert chunks[-1].usage.total_tokens == 29
    assert server.requests[1].json()["stream_options"] == {"include_usage": True}


def test_async_stream_text_matches_openai_sdk_chunk_by_chunk(server: ScriptedServer) -> None:
    server.script(oai_text_stream(), oai_text_stream())

    async def run() -> tuple[list[dict], list[dict]]:
        client = openai.AsyncOpenAI(base_url=server.base, api_key="x", max_retries=0)
        expected = [
            c.to_dict() async for c in await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        ]
        await client.close()
        async with AsyncClient(make_provider(server)) as relay:
            stream = await relay.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            got = [c.to_dict() async for c in stream]
        return expected, got

    expected, got = asyncio.run(run())
    assert [normalize_chunk(c) for c in got] == [normalize_chunk(c) for c in expected]
    assert_chunk_invariants(got, usage=True)


def test_stream_tool_calls_match_openai_sdk(server: ScriptedServer) -> None:
    server.script(oai_tool_stream(), oai_tool_stream())
    expected = sdk_call(
        server, lambda c: c.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    )
    with ours(server) as client:
        got = [
            c.to_dict() for c in client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
        ]
    # llmrelay's provider layer yields the calls whole, so the deltas are grouped differently; the merged result and
    # each chunk's envelope are the same.
    assert accumulate(got) == accumulate(expected)
    assert accumulate(got)["message"]["tool_calls"] == [CALL]
    assert accumulate(got)["finish_reason"] == "tool_calls"
    assert_chunk_invariants(got, usage=True)
    assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": None, "refusal": None}
    assert {frozenset(normalize_chunk(c)) for c in got} == {frozenset(normalize_chunk(c)) for c in expected}
    assert {frozenset(c["choices"][0]) for c in got if c["choices"]} == {
        frozenset(normalize_chunk(c)["choices"][0]) for c in expected if c["choices"]
    }


def test_stream_reasoning_content_matches_openai_sdk(server: ScriptedServer) -> None:
    server.script(deepseek_reasoning_stream(), deepseek_reasoning_stream())
    expected = sdk_call(server, lambda c: c.chat.completions.create(model="d", messages=MESSAGES, stream=True))
    with ours(server) as client:
        chunks = list(client.chat.completions.create(model="d", messages=MESSAGES, stream=True))
    got = [c.to_dict() for c in chunks]
    assert accumulate(got) == accumulate(expected)
    assert accumulate(got)["message"] == {"role": "assistant", "reasoning_content": "2 plus 2 is 4.", "content": "4"}
    assert [c.choices[0].delta.reasoning_content for c in chunks[1:3]] == ["2 plus 2", " is 4."]
    assert_chunk_invariants(got, usage=True)


def test_stream_of_a_plain_server_without_usage(server: ScriptedServer) -> None:
    """A minimal OpenAI-compatible server (no usage, no role chunk): role is added, finish_reason is last."""
    from scripted_server import chunk

    server.script(sse_reply(chunk("Hi"), chunk(" there"), chunk(finish_reason="length"), "[DONE]"))
    provider = make_provider(server, supports_stream_options=False)
    with Client(provider) as client:
        got = [c.to_dict() for c in client.chat.completions.create(model="", messages=MESSAGES, stream=True)]
    assert_chunk_invariants(got, usage=False)
    assert [c["choices"][0]["delta"] for c in got] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hi"},
        {"content": " there"},
        {},
    ]
    assert got[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in got)  # nothing was asked for, nothing is claimed
    assert "stream_options" not in server.requests[0].json()


# ---------------------------------------------------------------- objects and requests


def test_objects_attribute_access_and_copies(server: ScriptedServer) -> None:
    message = {"role": "assistant", "content": "ok", "tool_calls": [CALL], "refusal": None}
    server.script(json_reply(oai_completion(message, "tool_calls")))
    with ours(server) as client:
        resp = client.chat.completions.create(model="m", messages=MESSAGES)
    msg = resp.choices[0].message
    assert msg.role == "assistant" and msg.refusal is None and msg.audio is None
    assert msg.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert resp.choices[0].logprobs is None and resp.object == "chat.completion"
    assert resp.provider.startswith("Scripted")  # the provider that answered: an attribute, not in the JSON
    assert "provider" not in resp.to_dict()
    with pytest.raises(AttributeError):
        _ = msg.no_such_field
    data = resp.to_dict()
    data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "changed"
    assert msg.tool_calls[0].function.name == "get_weather"  # to_dict() is a copy
    assert resp == ChatCompletion(resp.id, resp.created, resp.model, resp.choices, resp.usage)
    assert '"get_weather"' in resp.to_json() and resp.model_dump() == resp.to_dict()
    assert pickle.loads(pickle.dumps(resp)) == resp and copy.deepcopy(resp) == resp
    msg.content = "edited"  # attributes can be set, like the openai SDK's objects
    assert msg.to_dict()["content"] == "edited"


def test_request_parameters_headers_and_provider_info(server: ScriptedServer) -> None:
    server.script(json_reply(oai_completion({"role": "assistant", "content": "x"}) | {"model": "served-model"}))
    provider = make_provider(server, label="MyProvider")
    with Client(provider, api_key="sk-test", headers={"X-App": "a"}, timeout=5) as client:
        resp = client.chat.completions.create(
            model="asked-model",
            messages=MESSAGES,
            temperature=0,
            max_tokens=5,
            tools=TOOLS,
            seed=1,
            extra_body={"top_k": 3},
            extra_headers={"X-Call": "b"},
        )
    request = server.requests[0]
    body = request.json()
    assert body["model"] == "asked-model" and body["stream"] is False
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_k"]) == (0, 5, 1, 3)
    assert request.headers["authorization"] == "Bearer sk-test"
    assert (request.headers["x-app"], request.headers["x-call"]) == ("a", "b")
    assert (resp.provider, resp.model) == ("MyProvider", "served-model")


def test_unknown_parameter_is_a_type_error_and_n_is_refused(server: ScriptedServer) -> None:
    with ours(server) as client:
        with pytest.raises(TypeError, match="not_a_param"):
            client.chat.completions.create(model="m", messages=MESSAGES, not_a_param=1)
        with pytest.raises(ValueError, match="n must be 1, not 2"):
            client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert server.requests == []


def test_provider_by_catalog_name_and_default_provider(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json_reply(oai_completion({"role": "assistant", "content": "from custom"}))
    server.script(body, body)
    with Client("LlamaCpp", api_base=server.base) as client:
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content == "from custom"
    monkeypatch.setenv("LLMRELAY_PROVIDER", "custom")
    monkeypatch.setenv("LLMRELAY_API_BASE", server.base)
    with Client() as client:
        assert client.providers[0].get_name() == "Custom"
        assert client.chat.completions.create(model="m", messages=MESSAGES).provider == "Custom"
    with pytest.raises(ValueError, match="unknown provider"):
        Client("no-such-provider")
    with pytest.raises(TypeError):
        Client(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- tool loop


def _tool_loop_handler(turns: list[dict[str, Any]]) -> Any:
    """Turn 1 asks for get_weather; turn 2 answers with what the tool returned."""

    def handler(request: Any) -> Reply:
        body = request.json()
        turns.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            return json_reply(oai_completion({"role": "assistant", "content": f"Paris: {last['content']}"}))
        message = {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None}
        return json_reply(oai_completion(message, "tool_calls"))

    return handler


def test_two_turn_tool_loop_end_to_end(server: ScriptedServer) -> None:
    turns: list[dict[str, Any]] = []
    server.route("POST", "/v1/chat/completions", _tool_loop_handler(turns))
    messages: list[Any] = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    with ours(server) as client:
        first = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls"
        messages.append(first.choices[0].message)  # the message object itself, as with the openai SDK
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"})
        snapshot = copy.deepcopy(messages[-1])
        second = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Paris: sunny, 24 C"
    sent = turns[1]["messages"]
    assert sent[:2] == [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": [CALL]}  # sent back as received
    assert sent[3] == {"role": "tool", "tool_call_id": "call_abc123", "content": "sunny, 24 C"}
    assert messages[-1] == snapshot and len(messages) == 4


def test_tool_loop_with_dicts_and_streaming_keeps_messages_unchanged(server: ScriptedServer) -> None:
    """Dict messages are sent exactly as given (consecutive assistant messages too) and never mutated."""
    server.script(oai_tool_stream(), oai_text_stream())
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    with ours(server) as client:
        chunks = [c.to_dict() for c in client.chat.completions.create(model="m", messages=messages, stream=True)]
        assistant = accumulate(chunks)["message"]
        assistant.setdefault("content", None)
        messages.append(assistant)
        messages.append({"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "sunny"})
        before = copy.deepcopy(messages)
        answer = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="m", messages=messages, stream=True)
            if c.choices
        )
    assert answer == "It is sunny in Paris."
    assert messages == before
    sent = server.requests[1].json()["messages"]
    assert sent == before
    assert [m["role"] for m in sent] == ["user", "assistant", "assistant", "user", "assistant", "tool"]
    assert sent[4] == {"role": "assistant", "content": None, "tool_calls": [CALL]}


# -------------------------------------------------------------------- models and images


def test_models_list(server: ScriptedServer) -> None:
    server.route(
        "GET",
        "/v1/models",
        json_reply({"object": "list", "data": [{"id": "b-model", "object": "model"}, {"id": "a-model"}]}),
    )
    provider = make_provider(server, label="Lister")
    with Client(provider) as client:
        models = client.models.list()
    assert [m.id for m in models] == ["a-model", "b-model"]
    assert models.to_dict() == {
        "object": "list",
        "data": [
            {"id": "a-model", "object": "model", "created": 0, "owned_by": "Lister"},
            {"id": "b-model", "object": "model", "created": 0, "owned_by": "Lister"},
        ],
    }
    assert models[0].object == "model" and models.data[1].owned_by == "Lister" and len(models) == 2


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_images_generate_matches_openai_sdk(server: ScriptedServer, response_format: str) -> None:
    item = {"url": "https://img.example/1.png"} if response_format == "url" else {"b64_json": "iVBORw0KGgo="}
    answer = {"created": CREATED, "data": [{**item, "revised_prompt": "a red apple, photo"}]}
    server.route("POST", "/v1/images/generations", json_reply(answer))
    expected = sdk_call(
        server, lambda c: c.images.generate(prompt="an apple", model="dall-e-3", response_format=response_format)
    )
    provider = make_provider(server)
    with Client(provider, api_key="sk-img") as client:
        resp = client.images.generate("an apple", model="dall-e-3", size="1024x1024", response_format=response_format)
    assert resp.to_dict() == expected
    assert resp.data[0].revised_prompt == "a red apple, photo"
    assert getattr(resp.data[0], response_format) == item[response_format]
    assert server.requests[1].json() == {
        "model": "dall-e-3",
        "prompt": "an apple",
        "size": "1024x1024",
        "response_format": response_format,
    }
    assert server.requests[1].headers["authorization"] == "Bearer sk-img"


def test_images_generate_errors_and_default_model(server: ScriptedServer) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"error": {"message": "model nope not found"}}, 404))
    with Client(make_provider(server, image_models=["flux"])) as client:
        with pytest.raises(ModelNotFoundError):
            client.images.generate("x")
    assert server.requests[0].json() == {"model": "flux", "prompt": "x"}
    with Client(make_provider(server)) as client, pytest.raises(ValueError, match="no image model"):
        client.images.generate("x")
