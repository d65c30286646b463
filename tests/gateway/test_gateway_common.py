"""Rules common to every door (SPEC 9.1.2, 9.1.4, 9.1.6-9.1.8), over real sockets in front of the scripted server."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from gateway_support import Running
from raw import chat, fetch
from scripted_server import ScriptedServer, chunk, completion, json_reply, sse_reply

from llmrelay.server.app import Endpoint, Gateway
from llmrelay.server.config import ConfigError, load_config
from llmrelay.server.doors import DoorRequest
from llmrelay.server.doors import chat as chat_door

ALICE, BOB = "sk-llmrelay-alice-secret", "sk-llmrelay-bob-secret"
KEYS = "".join(
    f'[[keys]]\nname = "{name}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    for name, key in (("alice", ALICE), ("bob", BOB))
)


def _keys_of(gw: Running) -> list[str | None]:
    records = [json.loads(line) for line in gw.access_lines]
    return [record["key"] for record in records if record["path"] == "/v1/chat/completions"]


# ------------------------------------------------------------------------------------- 9.1.2


def test_key_from_bearer_in_any_case_or_x_api_key(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS, log_format="json")
    for headers in (
        {"Authorization": f"bearer {ALICE}"},
        {"Authorization": f"BEARER {ALICE}"},
        {"x-api-key": ALICE, "anthropic-version": "2023-06-01", "anthropic-beta": "anything,at-all"},
    ):
        server.script(json_reply(completion("hi")))
        reply = chat(gw.url, "up/m", headers=headers)
        assert reply.status == 200, (headers, reply.body)
    assert _keys_of(gw) == ["alice"] * 3
    sent = server.requests[-1]
    assert not any(name.lower().startswith("anthropic-") for name in sent.headers)  # never forwarded
    reply = chat(gw.url, "up/m", headers={"x-api-key": "sk-llmrelay-wrong"})
    assert reply.status == 401 and reply.error["code"] == "invalid_api_key"
    reply = chat(gw.url, "up/m")
    assert reply.status == 401 and "x-api-key" in reply.error["message"]


def test_both_headers_differing_run_as_the_first_valid_authorization_first(
    server: ScriptedServer, make_gateway
) -> None:
    gw = make_gateway(KEYS, log_format="json")
    cases = [
        ({"Authorization": f"Bearer {BOB}", "x-api-key": ALICE}, "bob"),
        ({"Authorization": "Bearer sk-llmrelay-wrong", "x-api-key": ALICE}, "alice"),
        ({"Authorization": f"Bearer {BOB}", "x-api-key": "sk-llmrelay-wrong"}, "bob"),
    ]
    for headers, _ in cases:
        server.script(json_reply(completion("hi")))
        assert chat(gw.url, "up/m", headers=headers).status == 200
    assert _keys_of(gw) == [name for _, name in cases]
    reply = chat(gw.url, "up/m", headers={"Authorization": "Bearer sk-a", "x-api-key": "sk-b"})
    assert reply.status == 401 and reply.error["code"] == "invalid_api_key"
    assert ALICE not in reply.body.decode() and "sk-a" not in reply.body.decode()


def test_paths_match_without_their_query_string(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply(completion("hi")))
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}]}
    reply = fetch("POST", gw.url + "/v1/chat/completions?beta=true", body)
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "hi"
    assert fetch("GET", gw.url + "/v1/chat/completions?beta=true").status == 405


def _upgrade(port: int, path: str) -> bytes:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/models", "/nowhere"])
def test_a_websocket_upgrade_gets_405_never_101(make_gateway, path: str) -> None:
    gw = make_gateway(KEYS)
    received = _upgrade(gw.port, path)
    assert received.startswith(b"HTTP/1.1 405"), received[:200]
    assert b"101" not in received.split(b"\r\n", 1)[0]
    assert b"method_not_allowed" in received or b"websocket" in received.lower()
    assert fetch("GET", gw.url + "/health").status == 200  # still serving


# ------------------------------------------------------------------------------------- 9.1.6

ALIASES = """
[routes.fast]
targets = ["up/fast-model"]

[aliases]
"claude-opus-5-5" = "up2/exact"
"claude-*" = "fast"
"gpt-5*" = "up/small-model"
"""


def test_aliases_exact_or_glob_first_match_before_routing(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(ALIASES)
    for _ in range(3):
        server.script(json_reply(completion("hi")))
    assert chat(gw.url, "claude-opus-5-5").status == 200
    assert chat(gw.url, "claude-haiku-4").status == 200
    reply = chat(gw.url, "gpt-5-codex")
    assert reply.status == 200 and reply.headers["x-llmrelay-provider"] == "up"
    sent = [(request.route_path, request.json()["model"]) for request in server.requests]
    assert sent == [
        ("/v1/second/chat/completions", "exact"),  # the exact entry is listed first
        ("/v1/chat/completions", "fast-model"),
        ("/v1/chat/completions", "small-model"),
    ]


def test_key_globs_apply_to_the_name_after_aliasing(server: ScriptedServer, make_gateway) -> None:
    key = f'[[keys]]\nname = "alice"\nsha256 = "{hashlib.sha256(ALICE.encode()).hexdigest()}"\nmodels = ["fast"]\n'
    gw = make_gateway(ALIASES + key)
    auth = {"Authorization": f"Bearer {ALICE}"}
    server.script(json_reply(completion("hi")))
    assert chat(gw.url, "claude-sonnet", headers=auth).status == 200
    reply = chat(gw.url, "gpt-5", headers=auth)  # → up/small-model: not "fast"
    assert reply.status == 403 and reply.error["code"] == "model_not_allowed"
    assert len(server.requests) == 1


def test_alias_config_is_strict(tmp_path: Path) -> None:
    for text, problem in (
        ('[aliases]\n"x" = "nowhere/model"\n', "neither a route nor"),
        ('[aliases]\n"x" = "bare-name"\n', "neither a route nor"),
        ('[aliases]\n"x" = 3\n', "must be a string"),
    ):
        path = tmp_path / "gateway.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(str(path))
        assert "aliases.x" in str(caught.value) and problem in str(caught.value)


# ------------------------------------------------------------------------------------- 9.1.7, 9.1.8


def test_output_limits_lowered_to_the_route_or_provider_cap_and_named(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(
        '[routes.capped]\ntargets = ["up/m"]\nmax_tokens_cap = 100\n[providers.small]\napi_base = "{upstream}"\n'
        "max_tokens_cap = 50\n"
    )
    for _ in range(4):
        server.script(json_reply(completion("hi")))
    reply = chat(gw.url, "capped", max_tokens=32000)
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "max_tokens>100"
    reply = chat(gw.url, "small/m", max_completion_tokens=128000)
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "max_tokens>50"
    reply = chat(gw.url, "capped", max_tokens=100)  # at the cap: untouched, nothing named
    assert reply.status == 200 and "x-llmrelay-ignored" not in reply.headers
    reply = chat(gw.url, "up/m", max_tokens=32000)  # no cap known: never refused for being large
    assert reply.status == 200 and "x-llmrelay-ignored" not in reply.headers
    sent = [request.json() for request in server.requests]
    assert sent[0]["max_tokens"] == 100
    assert sent[1]["max_completion_tokens"] == 50 and "max_tokens" not in sent[1]
    assert sent[2]["max_tokens"] == 100 and sent[3]["max_tokens"] == 32000


def test_a_streamed_answer_names_the_cap_too(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.capped]\ntargets = ["up/m"]\nmax_tokens_cap = 7\n')
    server.script(sse_reply(chunk("a"), chunk("b")))
    reply = chat(gw.url, "capped", stream=True, max_tokens=1000)
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "max_tokens>7"
    assert server.requests[0].json()["max_tokens"] == 7


def test_reasoning_effort_only_where_the_provider_takes_it(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[providers.plain]\napi_base = "{upstream}"\nreasoning_effort = false\n')
    server.script(json_reply(completion("hi")), json_reply(completion("hi")))
    reply = chat(gw.url, "plain/m", reasoning_effort="high")
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "reasoning_effort"
    assert "reasoning_effort" not in server.requests[0].json()
    reply = chat(gw.url, "up/m", reasoning_effort="high")  # a custom upstream takes it by default
    assert reply.status == 200 and "x-llmrelay-ignored" not in reply.headers
    assert server.requests[1].json()["reasoning_effort"] == "high"


def test_provider_caps_and_effort_declarations() -> None:
    from llmrelay.providers.catalog import get_provider

    assert get_provider("openai").accepts_reasoning_effort
    assert not get_provider("deepseek").accepts_reasoning_effort
    assert not get_provider("local").accepts_reasoning_effort
    cap = get_provider("local").get_max_tokens_cap()
    assert cap is None or 512 <= cap <= 8192  # the model's context, when the model is installed


# ------------------------------------------------------------------------------------- 9.1.4 strict_fields


class _DroppingDoor:
    """A door that drops one field (as the Responses and Anthropic doors drop hosted tools): the chat shape
    otherwise. Registered with one row in the route table, as a real door is."""

    error_body = staticmethod(chat_door.error_body)
    answer = staticmethod(chat_door.answer)
    renderer = staticmethod(chat_door.renderer)

    @staticmethod
    def parse(body: dict[str, Any]) -> DoorRequest:
        dropped = {name: value for name, value in body.items() if name.startswith("service_")}
        req = chat_door.parse({name: value for name, value in body.items() if name not in dropped})
        for name in dropped:
            req.drop(name, f"{name}.type")
        return req


class _Gateway(Gateway):
    def route_table(self) -> list[Endpoint]:
        return [*super().route_table(), Endpoint("POST", "/v1/dropping", _DroppingDoor())]


def test_a_new_door_is_one_row_and_its_drops_are_named(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(gateway_class=_Gateway)
    server.script(json_reply(completion("hi")))
    body = {"model": "up/m", "messages": [{"role": "user", "content": "Hi"}], "service_a": 1, "service_b": 2}
    reply = fetch("POST", gw.url + "/v1/dropping", body)
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "service_a, service_b"
    assert "service_a" not in server.requests[0].json()
    assert "POST /v1/dropping" in fetch("GET", gw.url + "/nowhere").error["message"]
    assert fetch("GET", gw.url + "/v1/dropping").headers["allow"] == "POST"


def test_strict_fields_refuses_named_drops_but_keeps_caps_and_effort_drops(
    server: ScriptedServer, make_gateway
) -> None:
    gw = make_gateway(
        '[providers.plain]\napi_base = "{upstream}"\nreasoning_effort = false\nmax_tokens_cap = 10\n',
        gateway_class=_Gateway,
    )
    gw.gateway.config.server.strict_fields = True
    body = {"model": "plain/m", "messages": [{"role": "user", "content": "Hi"}], "service_x": 1}
    reply = fetch("POST", gw.url + "/v1/dropping", body)
    assert reply.status == 400 and reply.error["code"] == "unknown_parameter"
    assert reply.error["param"] == "service_x.type" and "strict_fields" in reply.error["message"]
    assert not server.requests
    server.script(json_reply(completion("hi")))
    del body["service_x"]
    reply = fetch("POST", gw.url + "/v1/dropping", {**body, "max_tokens": 99, "reasoning_effort": "low"})
    assert reply.status == 200 and reply.headers["x-llmrelay-ignored"] == "max_tokens>10, reasoning_effort"


def test_new_config_keys_are_strict(tmp_path: Path) -> None:
    for text, where in (
        ("[server]\nstrict_fields = 1\n", "server.strict_fields"),
        ('[routes.r]\ntargets = ["local/smollm2"]\nmax_tokens_cap = 0\n', "routes.r.max_tokens_cap"),
        ('[providers.p]\napi_base = "http://x/v1"\nmax_tokens_cap = "big"\n', "providers.p.max_tokens_cap"),
        ('[providers.p]\napi_base = "http://x/v1"\nreasoning_effort = "no"\n', "providers.p.reasoning_effort"),
    ):
        path = tmp_path / "gateway.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(str(path))
        assert where in str(caught.value), (text, caught.value)


def test_the_images_door_uses_the_shared_option_names(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply({"created": 1, "data": [{"url": "https://img.example/1.png"}]}))
    body = {"model": "up/img-1", "prompt": "a cat", "width": 512, "height": 256, "seed": 3}
    reply = fetch("POST", gw.url + "/v1/images/generations", body)
    assert reply.status == 200, reply.body
    assert server.requests[0].json() == {"model": "img-1", "prompt": "a cat", "size": "512x256", "seed": 3}


def test_no_reference_cycle_per_request(server: ScriptedServer, make_gateway) -> None:
    """Every request's objects are freed by reference counting, through each door, JSON and streamed: a cycle per
    request (the request and its Exchange referring to each other) once cost the gateway ~10 % CPU in GC."""
    import asyncio
    import gc

    import aiohttp

    server.route(
        "POST",
        "/v1/chat/completions",
        lambda request: (
            sse_reply(chunk("a"), chunk("b")) if request.json().get("stream") else json_reply(completion("hi"))
        ),
    )
    gw = make_gateway()

    chat_body = {"model": "up/m", "messages": [{"role": "user", "content": "x"}]}
    doors = [("/v1/chat/completions", chat_body), ("/v1/responses", {"model": "up/m", "input": "x"})]

    async def requests(count: int) -> None:
        async with aiohttp.ClientSession() as session:
            for number in range(count):
                path, body = doors[number % 2]
                body = {**body, "stream": number % 4 >= 2}
                async with session.post(gw.url + path, json=body) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

    asyncio.run(requests(10))  # warm-up: pools, caches
    gc.collect()
    gc.disable()
    try:
        asyncio.run(requests(200))
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 200, found  # a cycle per request leaves thousands of objects
