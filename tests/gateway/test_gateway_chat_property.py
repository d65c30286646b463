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
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(DOCUMENTED) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values},
        optional={"content": st.text(max_size=10) | json_values, "name": json_values, "tool_calls": json_values},
    ),
    min_size=1,
    max_size=3,
)
good = {
    "model": st.sampled_from(["up/cheap", "cheap-route", "up/pricey", "pricey"]),
    "messages": messages,
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values}),
    "n": st.just(1),
}
field_values = {name: (good[name] | json_values) if name in good else json_values for name in DOCUMENTED}
bodies = st.fixed_dictionaries(
    {"model": field_values["model"], "messages": field_values["messages"]},
    optional={
        **{name: value for name, value in field_values.items() if name not in ("model", "messages")},
        "extra_body": st.dictionaries(st.sampled_from(DOCUMENTED) | st.text(max_size=5), json_values, max_size=4)
        | json_values,
    },
).flatmap(lambda body: st.dictionaries(st.text(max_size=6), json_values, max_size=2).map(lambda more: {**more, **body}))


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
            assert sent["messages"] == body["messages"], sent
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
