"""The shared core: one resolver, one image-option rule, bounded caches, provider knowledge in the catalog.

Each test reproduces a defect that existed while the client, the CLI and the provider
kept their own copies of a rule (issue "shared core").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from helpers import MESSAGES, make_provider
from scripted_server import ScriptedServer, completion, json_reply

from llmrelay import AsyncClient, Client
from llmrelay.client.convert import StreamShape, chat_call_from_json, completion_dict
from llmrelay.errors import (
    AllProvidersFailedError,
    ConnectError,
    InvalidRequestError,
    MissingAuthError,
    RateLimitError,
    ServerError,
    error_code,
    http_status,
)
from llmrelay.providers import listing
from llmrelay.responses import Answer, FinishReason, ProviderInfo, ToolCalls, Usage

KEY_VARIABLES = ("OPENAI_API_KEY", "LLMRELAY_API_KEY", "LLMRELAY_PROVIDER", "LLMRELAY_API_BASE")


@pytest.fixture
def only_groq_key(monkeypatch: pytest.MonkeyPatch) -> str:
    for name in [name for name in os.environ if name.endswith("_API_KEY")] + list(KEY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-secret-groq-0123456789")
    return "gsk-secret-groq-0123456789"


# ------------------------------------------------------------------ a key never goes to a host it was not set for


def test_client_with_an_adhoc_api_base_sends_no_catalog_key(server: ScriptedServer, only_groq_key: str) -> None:
    server.script(json_reply(completion("hi")))
    with Client(api_base=server.base) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "hi"
    assert "authorization" not in {name.lower() for name in server.requests[0].headers}
    assert answer.provider == "Custom"


def test_async_client_with_an_adhoc_api_base_sends_no_catalog_key(server: ScriptedServer, only_groq_key: str) -> None:
    server.script(json_reply(completion("hi")))

    async def run() -> Any:
        return await AsyncClient(base_url=server.base).chat.completions.create(model="m", messages=MESSAGES)

    answer = asyncio.run(run())
    assert answer.choices[0].message.content == "hi"
    assert "authorization" not in {name.lower() for name in server.requests[0].headers}


def test_adhoc_api_base_uses_the_api_key_argument_or_llmrelay_api_key(
    server: ScriptedServer, only_groq_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script(json_reply(completion("a")), json_reply(completion("b")))
    with Client(api_base=server.base, api_key="sk-given-key") as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    monkeypatch.setenv("LLMRELAY_API_KEY", "sk-relay-key")
    with Client(api_base=server.base) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert server.requests[0].headers["authorization"] == "Bearer sk-given-key"
    assert server.requests[1].headers["authorization"] == "Bearer sk-relay-key"


def test_cli_and_client_resolve_an_adhoc_api_base_alike(server: ScriptedServer, only_groq_key: str) -> None:
    server.script(json_reply(completion("from cli")))
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay", "chat", "--no-stream", "--api-base", server.base, "-m", "m", "Hi"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMRELAY_LOGS": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from cli"
    assert "authorization" not in {name.lower() for name in server.requests[0].headers}


# ------------------------------------------------------------------ one list of image options


def test_image_width_and_height_become_size_through_every_door(server: ScriptedServer) -> None:
    image = {"data": [{"url": "https://example.invalid/cat.png"}]}
    server.script(json_reply(image), json_reply(image))
    provider = make_provider(server, image_models=["img"])
    asyncio.run(provider.generate_images_async("cat", "img", width=512, height=256))
    with Client(provider) as client:
        result = client.images.generate("cat", model="img", width=512, height=256)
    assert result.data[0].url == "https://example.invalid/cat.png"
    for request in server.requests:
        body = request.json()
        assert body["size"] == "512x256"
        assert "width" not in body and "height" not in body


def test_client_images_reject_unknown_options_before_sending(server: ScriptedServer) -> None:
    provider = make_provider(server, image_models=["img"])
    with Client(provider) as client, pytest.raises(TypeError, match="colour"):
        client.images.generate("cat", model="img", colour="red")
    assert server.requests == []


# ------------------------------------------------------------------ bounded model cache, public clear


def test_model_cache_is_bounded_and_can_be_cleared(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "MODEL_CACHE_SIZE", 5)
    server.route("GET", "/v1/models", lambda request: json_reply({"data": [{"id": "m1"}]}))
    provider = make_provider(server)
    for number in range(12):
        assert provider.get_models(api_key=f"sk-key-number-{number}") == ["m1"]
    assert listing.model_cache_size() == 5
    listing.clear_model_cache()
    assert listing.model_cache_size() == 0


def test_expired_model_listings_are_dropped(server: ScriptedServer) -> None:
    server.route("GET", "/v1/models", lambda request: json_reply({"data": [{"id": "m1"}]}))
    provider = make_provider(server, models_ttl=0.0)
    provider.get_models()
    provider.get_models()
    assert len([r for r in server.requests if r.path.endswith("/models")]) == 2
    assert listing.cached_listing(server.base, None) is None


def test_models_list_sends_the_client_headers(server: ScriptedServer) -> None:
    server.route("GET", "/v1/models", lambda request: json_reply({"data": [{"id": "m1"}]}))
    with Client(make_provider(server), headers={"X-Team": "blue"}) as client:
        assert [model.id for model in client.models.list().data] == ["m1"]
    assert server.requests[0].headers["x-team"] == "blue"


# ------------------------------------------------------------------ provider knowledge lives in the catalog


def test_default_max_tokens_is_a_provider_attribute_sent_by_every_door(server: ScriptedServer) -> None:
    server.script(json_reply(completion("a")), json_reply(completion("b")), json_reply(completion("c")))
    provider = make_provider(server, default_max_tokens=77)
    asyncio.run(provider.create_async_generator("", MESSAGES).__anext__())
    with Client(provider) as client:
        client.chat.completions.create(model="", messages=MESSAGES)
        client.chat.completions.create(model="", messages=MESSAGES, max_tokens=5)
    assert [request.json().get("max_tokens") for request in server.requests] == [77, 77, 5]


def test_catalog_sets_max_tokens_for_llama_cpp_servers() -> None:
    from llmrelay.providers.catalog import get_provider

    assert get_provider("llamacpp").default_max_tokens == 2048
    assert get_provider("local").default_max_tokens == 512
    assert get_provider("openai").default_max_tokens is None


# ------------------------------------------------------------------ the converter and the error table


def test_chat_call_from_json_checks_fields_and_keeps_unknown_ones() -> None:
    call = chat_call_from_json(
        {
            "model": "m",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.5,
            "tools": [],
            "vendor_flag": {"a": 1},
        }
    )
    assert (call.model, call.stream, call.include_usage) == ("m", True, True)
    assert call.options["temperature"] == 0.5
    assert "stream_options" not in call.options  # the gateway asks every upstream for usage itself
    assert call.options["extra_data"] == {"vendor_flag": {"a": 1}}
    for body, param in (
        ([], None),
        ({"messages": MESSAGES}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": MESSAGES, "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": MESSAGES, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": MESSAGES, "stop": [1]}, "stop"),
        ({"model": "m", "messages": MESSAGES, "n": 2}, "n"),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            chat_call_from_json(body)
        assert caught.value.param == param
        assert http_status(caught.value) == 400
    with pytest.raises(InvalidRequestError) as caught:
        chat_call_from_json("[]")
    assert caught.value.to_dict()["error"]["code"] == "invalid_json"


def test_answer_and_stream_shape_agree_on_the_finish_reason() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    events = [ProviderInfo("P", "served", "u", "id-1", 5), ToolCalls(calls), Usage(1, 2), FinishReason("stop")]
    answer = Answer()
    shape = StreamShape(events[0], "asked", "P", include_usage=True)
    for event in events:
        answer.add(event)
        shape.delta(event)
    whole = completion_dict(answer, "asked")
    assert whole["choices"][0]["finish_reason"] == shape.finish_reason == "tool_calls"
    assert whole["choices"][0]["message"]["content"] is None
    assert (whole["id"], whole["created"], whole["model"]) == ("id-1", 5, "served")
    end = shape.end()
    assert end[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert end[1]["choices"] == [] and end[1]["usage"]["total_tokens"] == 3


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RateLimitError("slow down", status=429), 429, "rate_limit_exceeded"),
        (MissingAuthError("bad key", status=401), 502, "upstream_auth_error"),
        (ServerError("boom", status=500), 502, "upstream_error"),
        (ConnectError("refused"), 502, "upstream_error"),
        (InvalidRequestError("no model", param="model"), 400, "invalid_request"),
    ],
)
def test_error_table(error: Exception, status: int, code: str) -> None:
    assert http_status(error) == status
    assert error_code(error) == code
    body = error.to_dict()  # type: ignore[attr-defined]
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_all_failed_reports_the_most_informative_error() -> None:
    limited = RateLimitError("limited", status=429, retry_after=3)
    assert AllProvidersFailedError([("a", ConnectError("x")), ("b", limited)]).most_informative() is limited
    both = AllProvidersFailedError([("a", RateLimitError("x", retry_after=9)), ("b", limited)])
    assert both.most_informative() is limited
    assert http_status(both) == 429
