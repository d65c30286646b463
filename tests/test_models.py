"""get_models: listing shapes, flags, sorting, fallback, auth errors, the cache, sync and async use."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import SECRET, make_provider
from scripted_server import Reply, json_reply, text_reply

from llmrelay.errors import ConnectError, MissingAuthError, ResponseError, ServerError


def list_models(server, body, **attributes) -> list[str]:
    server.script(json_reply(body))
    return make_provider(server, **attributes).get_models()


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": [{"id": "b-model", "object": "model"}, {"id": "a-model", "object": "model"}]},
        {"models": [{"name": "b-model"}, {"name": "a-model"}]},
        [{"id": "b-model"}, {"id": "a-model"}],
        ["b-model", "a-model"],
        {"data": ["b-model", {"name": "a-model"}]},
    ],
    ids=["data", "models", "bare-list", "strings", "mixed"],
)
def test_listing_shapes(server, body) -> None:
    assert list_models(server, body) == ["a-model", "b-model"]
    (request,) = server.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["accept"] == "application/json"


def test_id_wins_over_name_and_entries_without_id_are_skipped(server) -> None:
    body = {"data": [{"id": "the-id", "name": "Pretty Name"}, {"object": "model"}, {"id": ""}, 42, None]}
    assert list_models(server, body) == ["the-id"]


def test_sort_models_false_keeps_server_order(server) -> None:
    assert list_models(server, ["z", "a", "m"], sort_models=False) == ["z", "a", "m"]
    assert list_models(server, ["z", "a", "m"]) == ["a", "m", "z"]


def test_listing_sent_with_key(server) -> None:
    server.script(json_reply({"data": []}))
    assert make_provider(server).get_models(api_key=SECRET) == []
    assert server.requests[0].headers.get_all("authorization") == [f"Bearer {SECRET}"]


def test_image_and_vision_flags(server) -> None:
    body = {
        "data": [
            {"id": "chat"},
            {"id": "img-a", "image": True},
            {"id": "img-b", "type": "image"},
            {"id": "img-c", "supports_images": True},
            {"id": "vis", "vision": True},
            {"id": "not-img", "image": False, "vision": 0},
        ]
    }
    provider = make_provider(server, image_models=["static-img"], vision_models=["static-vis"])
    assert provider.get_image_models() == ["static-img"]  # nothing listed yet, and no request made
    assert server.requests == []
    server.script(json_reply(body))
    assert provider.get_models() == ["chat", "img-a", "img-b", "img-c", "not-img", "vis"]
    assert provider.get_image_models() == ["static-img", "img-a", "img-b", "img-c"]
    assert provider.get_vision_models() == ["static-vis", "vis"]
    base = provider.get_api_base()
    assert provider.is_image_model("img-b", base, None)
    assert not provider.is_image_model("not-img", base, None)
    assert not provider.is_image_model("img-b", base, "another-key")


def test_unexpected_listing_shape_is_response_error(server) -> None:
    server.script(json_reply({"object": "list"}))
    with pytest.raises(ResponseError, match="model list"):
        make_provider(server).get_models()
    server.script(text_reply("<html>not json</html>", content_type="text/html"))
    with pytest.raises(ResponseError, match="not JSON"):
        make_provider(server).get_models()


# ------------------------------------------------------------------ failure handling


def test_fallback_models_on_500_with_warning(server, caplog) -> None:
    server.script(json_reply({"error": {"message": "listing is down"}}, status=500))
    provider = make_provider(server, fallback_models=["fb-1", "fb-2"])
    with caplog.at_level(logging.WARNING, logger="llmrelay"):
        models = provider.get_models()
    assert models == ["fb-1", "fb-2"]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "listing is down" in warnings[0].getMessage()
    assert provider.get_name() in warnings[0].getMessage()
    # A fallback is not cached: the next call asks the server again.
    server.script(json_reply({"data": [{"id": "real"}]}))
    assert provider.get_models() == ["real"]
    assert len(server.requests) == 2


def test_fallback_models_on_connection_failure(server) -> None:
    provider = make_provider(server, api_base="http://127.0.0.1:9/v1", fallback_models=["fb"])
    assert provider.get_models() == ["fb"]


def test_fallback_models_on_garbage(server) -> None:
    server.script(text_reply("garbage", content_type="application/json"))
    assert make_provider(server, fallback_models=["fb"]).get_models() == ["fb"]


def test_fallback_list_is_a_copy(server) -> None:
    server.script(json_reply({}, status=503))
    provider = make_provider(server, fallback_models=["fb"])
    provider.get_models().append("mutated")
    assert provider.fallback_models == ["fb"]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_raises_even_with_fallback(server, status: int) -> None:
    server.script(
        json_reply({"error": {"message": f"Invalid API key {SECRET}", "code": "invalid_api_key"}}, status=status)
    )
    provider = make_provider(server, fallback_models=["fb"])
    with pytest.raises(MissingAuthError) as caught:
        provider.get_models(api_key=SECRET)
    assert SECRET not in str(caught.value) and SECRET not in (caught.value.body or "")


def test_needs_auth_without_key_raises_before_listing(server, monkeypatch) -> None:
    provider = make_provider(server, needs_auth=True, fallback_models=["fb"])
    monkeypatch.delenv(provider.get_api_key_env(), raising=False)
    with pytest.raises(MissingAuthError, match=provider.get_api_key_env()):
        provider.get_models()
    assert server.requests == []


def test_no_fallback_raises_the_typed_error(server) -> None:
    server.script(json_reply({"error": {"message": "down"}}, status=502))
    with pytest.raises(ServerError):
        make_provider(server).get_models()
    with pytest.raises(ConnectError):
        make_provider(server, api_base="http://127.0.0.1:9/v1").get_models()


# ------------------------------------------------------------------ cache


def test_cache_per_base_and_key(server) -> None:
    provider = make_provider(server)
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "m"}]}))
    assert provider.get_models(api_key="key-1") == ["m"]
    assert provider.get_models(api_key="key-1") == ["m"]
    assert len(server.requests) == 1
    assert provider.get_models(api_key="key-2") == ["m"]
    assert len(server.requests) == 2
    assert provider.get_models(api_key="key-2", api_base=server.base + "/") == ["m"]  # same base, normalised
    assert len(server.requests) == 2
    server.route("GET", "/other/models", json_reply(["x"]))
    assert provider.get_models(api_key="key-1", api_base=server.url + "/other") == ["x"]
    assert len(server.requests) == 3
    # The returned list is a copy: mutating it does not change the cache.
    provider.get_models(api_key="key-1").append("mutated")
    assert provider.get_models(api_key="key-1") == ["m"]
    assert len(server.requests) == 3


def test_cache_ttl_zero_always_asks(server) -> None:
    provider = make_provider(server, models_ttl=0)
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "m"}]}))
    provider.get_models()
    provider.get_models()
    assert len(server.requests) == 2


def test_cache_shared_by_providers_on_the_same_base_but_sorted_per_class(server) -> None:
    server.route("GET", "/v1/models", json_reply(["b", "a"]))
    sorted_provider = make_provider(server)
    unsorted_provider = make_provider(server, sort_models=False)
    assert sorted_provider.get_models() == ["a", "b"]
    assert unsorted_provider.get_models() == ["b", "a"]
    assert len(server.requests) == 1


# ------------------------------------------------------------------ sync / async


def test_sync_get_models_inside_a_running_loop(server) -> None:
    server.route("GET", "/v1/models", json_reply(["m1"]))
    provider = make_provider(server)

    async def main() -> list[str]:
        return provider.get_models()

    assert asyncio.run(main()) == ["m1"]


def test_get_models_async(server) -> None:
    server.route("GET", "/v1/models", json_reply(["m2", "m1"]))
    provider = make_provider(server)

    async def main() -> tuple[list[str], list[str]]:
        first = await provider.get_models_async()
        second = await provider.get_models_async()
        return first, second

    assert asyncio.run(main()) == (["m1", "m2"], ["m1", "m2"])
    assert len(server.requests) == 1


def test_get_models_timeout(server) -> None:
    server.script(Reply(head_delay=1.5, headers=[("Content-Type", "application/json")], writes=[b"[]"]))
    with pytest.raises(TimeoutError):
        make_provider(server).get_models(timeout=0.3)
