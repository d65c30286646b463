"""Raw HTTP against the gateway with aiohttp: exact status, headers and bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        data = self.json()
        assert set(data) == {"error"}, data
        assert set(data["error"]) == {"message", "type", "param", "code"}, data
        return data["error"]

    def events(self) -> list[bytes]:
        """The SSE events as sent (each without its blank-line terminator)."""
        assert self.body.endswith(b"\n\n"), self.body[-80:]
        return self.body[:-2].split(b"\n\n")

    def chunks(self) -> list[Any]:
        return [json.loads(event[6:]) for event in self.events() if event.startswith(b"data: {")]


async def afetch(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=data, headers=all_headers) as response:
            content = await response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, content)


def fetch(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> Reply:
    return asyncio.run(afetch(method, url, body, headers, raw))


def chat(url: str, model: str = "up/test-model", headers: dict[str, str] | None = None, **params: Any) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], **params}
    return fetch("POST", url + "/v1/chat/completions", body, headers)
