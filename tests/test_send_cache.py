"""A chat call keeps what it sends besides its body for the next call (``OpenaiTemplate._send_chat``): the headers
the upstream receives are exactly ``get_headers``'s on every call, with or without the call's own headers, whether
they add a name, override one, remove one or repeat one in another case; and a refused header is refused each
time. Real sockets: the scripted server records what it received."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import MESSAGES, make_provider
from scripted_server import ScriptedServer, completion, json_reply

HEADER_SETS: list[dict[str, Any] | None] = [
    None,
    {"x-request-id": "req_1"},
    {"X-Request-Id": "req_2", "X-Team": "blue"},
    {"authorization": "Bearer other"},  # overrides the key's header (case-insensitively)
    {"Accept": None},  # removes a header
    {"x-a": "1", "X-A": "2"},  # one name twice: the later wins
    {},
    None,
    {"x-request-id": "req_3"},
]


def _sent(server: ScriptedServer) -> list[list[tuple[str, str]]]:
    keep = {"accept", "content-type", "authorization", "x-request-id", "x-team", "x-a", "x-fixed"}
    return [[(name.lower(), value) for name, value in r.raw_headers if name.lower() in keep] for r in server.requests]


def _uncached(provider: Any) -> Any:
    """The same provider with its own ``get_headers`` (the template's, called as is): nothing is kept for it."""

    class Uncached(provider):  # type: ignore[misc, valid-type]
        @classmethod
        def get_headers(cls, stream: bool, api_key: str | None = None, headers: Any = None) -> dict[str, str]:
            return super().get_headers(stream, api_key, headers)

    return Uncached


@pytest.mark.parametrize("class_headers", [{}, {"X-Fixed": "yes"}])
def test_every_call_sends_what_the_uncached_path_sends(server: ScriptedServer, class_headers: dict[str, str]) -> None:
    server.script(*[json_reply(completion(f"answer {n}")) for n in range(2 * len(HEADER_SETS))])
    provider = make_provider(server, headers=class_headers)

    async def run(chosen: Any) -> list[str]:
        texts = []
        for headers in HEADER_SETS:
            items = [
                item async for item in chosen.create_async_generator("", MESSAGES, api_key="sk-test", headers=headers)
            ]
            texts.append("".join(item for item in items if isinstance(item, str)))
        return texts

    assert asyncio.run(run(provider)) == [f"answer {n}" for n in range(len(HEADER_SETS))]
    asyncio.run(run(_uncached(provider)))
    sent = _sent(server)
    cached, uncached = sent[: len(HEADER_SETS)], sent[len(HEADER_SETS) :]
    assert cached == uncached
    assert ("x-request-id", "req_1") in cached[1] and ("authorization", "Bearer other") in cached[3]
    assert [value for name, value in cached[5] if name == "x-a"] == ["2"]


def test_a_bad_header_is_refused_on_every_call_after_good_ones(server: ScriptedServer) -> None:
    server.script(json_reply(completion("a")), json_reply(completion("b")))
    provider = make_provider(server)

    async def run() -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for headers in ({"x-request-id": "1"}, {"x-bad": "a\nb"}, {"x-request-id": "2"}, {"bad name": "x"}):
            try:
                async for _ in provider.create_async_generator("", MESSAGES, api_key="sk-test", headers=headers):
                    pass
                outcomes.append(None)
            except (TypeError, ValueError) as error:
                outcomes.append(error)
        return outcomes

    outcomes = asyncio.run(run())
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError) and "control character" in str(outcomes[1])
    assert isinstance(outcomes[3], ValueError) and "not a valid header name" in str(outcomes[3])
    assert [dict(_sent(server)[n])["x-request-id"] for n in (0, 1)] == ["1", "2"]  # nothing sent for the bad ones
    assert len(server.requests) == 2
