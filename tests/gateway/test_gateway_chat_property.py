"""A property of the chat door (issue 15): whatever JSON body a caller with a limited key sends — every documented
field with random types and values, unknown fields, nesting, ``extra_body`` — the gateway answers 2xx or 4xx,
never 5xx, logs no traceback, and never sends the upstream another model or other messages than it authorised."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, completion, json_reply, sse_reply

KEY = "sk-llmrelay-property-0123456789abcdef0123456789"
CONFIG = f"""
[routes.cheap-route]
targets = ["up/cheap"]

[[keys]]
name = "limited"
sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
models = ["up/cheap", "cheap-route"]
"""
DOCUMENTED = (
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "extra_body",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "metadata",
    "reasoning_effort",
    "modalities",
    "audio",
    "store",
    "service_tier",
    "prediction",
    "web_search_options",
    "models",
    "route",
)

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
names = st.sampled_from(DOCUMENTED) | st.text(max_size=6)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3), max_leaves=8
)
texts = st.text(max_size=10)
objects = st.dictionaries(names, json_values, max_size=3)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"])},
        optional={"content": texts | json_values, "name": texts, "tool_calls": json_values},
    ),
    min_size=1,
    max_size=3,
)
# A well-typed value per documented field (the random JSON value of any type is the other choice).
TYPED: dict[str, Any] = {
    "model": st.sampled_from(["up/cheap", "cheap-route"]),
    "messages": messages,
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values}),
    "n": st.just(1),
    "extra_body": objects,
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 10**6),
    "max_completion_tokens": st.integers(1, 10**6),
    "stop": texts | st.lists(texts, max_size=3),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "tools": st.lists(objects, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | objects,
    "parallel_tool_calls": st.booleans(),
    "response_format": objects,
    "logit_bias": objects,
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "user": texts,
    "metadata": objects,
    "reasoning_effort": texts,
    "models": st.lists(texts, max_size=3),
    "route": texts,
}


def field(name: str) -> st.SearchStrategy[Any]:
    typed = TYPED.get(name, json_values)
    return st.one_of(typed, typed, typed, json_values)  # mostly well-typed, so that bodies get past the checks


bodies = st.builds(
    lambda model, chosen, extra, more: {**more, **chosen, "model": model, "messages": extra},
    field("model"),
    st.lists(st.sampled_from(DOCUMENTED[2:]), unique=True, max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({name: field(name) for name in chosen})
    ),
    field("messages"),
    st.dictionaries(st.text(max_size=6), json_values, max_size=2),
)


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def upstream(request: RecordedRequest) -> Reply:
    if request.json().get("stream") is True:
        return sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]")
    return json_reply(completion("ok"))


def test_any_chat_body_is_answered_2xx_or_4xx_and_only_the_authorised_model_goes_upstream(
    server: ScriptedServer, make_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(CONFIG)
    server.route("POST", "/v1/chat/completions", upstream)
    statuses: set[int] = set()
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_session())

    async def post(body: dict[str, Any]) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        async with session.post(gw.url + "/v1/chat/completions", data=json.dumps(body), headers=headers) as reply:
            return reply.status, await reply.read()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies)
    def check(body: dict[str, Any]) -> None:
        seen = len(server.requests)
        status, answer = loop.run_until_complete(post(body))
        statuses.add(status)
        assert 200 <= status < 300 or 400 <= status < 500, (status, answer[:300])
        if status >= 400:
            assert set(json.loads(answer)) == {"error"}, answer[:300]
        for request in server.requests[seen:]:
            sent = request.json()
            assert sent["model"] == "cheap", sent
            # The messages as the gateway read them (orjson: an integer beyond 64 bits is read as a float).
            assert sent["messages"] == orjson.loads(json.dumps(body))["messages"], sent
            assert sent.get("n") in (None, 1) and "extra_body" not in sent
            assert "models" not in sent and "route" not in sent
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]

    with caplog.at_level(logging.WARNING):
        try:
            check()
        finally:
            loop.run_until_complete(session.close())
            loop.close()
    assert any(200 <= status < 300 for status in statuses) and any(400 <= s < 500 for s in statuses), statuses
