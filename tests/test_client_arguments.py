"""Arguments the library refuses before sending, each naming the argument (issue 15, defect 12)."""

from __future__ import annotations

import asyncio

import pytest
from helpers import MESSAGES, make_provider
from scripted_server import ScriptedServer

from llmrelay.client import AsyncClient


@pytest.mark.parametrize("value", ["x", 5, ["a", "b"]])
def test_extra_body_that_is_not_a_dict_names_extra_body(server: ScriptedServer, value: object) -> None:
    async def call() -> None:
        async with AsyncClient(make_provider(server)) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES, extra_body=value)

    with pytest.raises(TypeError, match=r"^extra_body must be a dict of extra body fields, not "):
        asyncio.run(call())
    assert server.requests == []


@pytest.mark.parametrize("endpoint", ["{base}/chat\r\nX-Injected: 1", "{base}/chat\n", " {base}/chat"])
def test_api_endpoint_with_a_line_break_names_api_endpoint(server: ScriptedServer, endpoint: str) -> None:
    provider = make_provider(server, api_endpoint=endpoint.format(base=server.base))

    async def call() -> None:
        async with AsyncClient(provider, max_retries=0) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises(ValueError, match=r"^api_endpoint '"):
        asyncio.run(call())
    assert server.requests == []
