"""Building the chat request: headers, body, endpoint, keys, and leaving the caller's data alone."""

from __future__ import annotations

import copy

import pytest
from helpers import MESSAGES, SECRET, collect, collect_error, make_provider, text_of
from scripted_server import chunk, completion, json_reply, sse_reply

from llmrelay import OpenaiTemplate
from llmrelay.errors import MissingAuthError

OK = completion("ok")


def one_request(server, provider=None, **kwargs):
    """Run one call against a scripted JSON answer; return the recorded request."""
    server.script(json_reply(OK))
    items = collect(provider or make_provider(server), **kwargs)
    assert text_of(items) == "ok"
    assert len(server.requests) == 1
    return server.requests[0]


def one_stream_request(server, provider=None, **kwargs):
    server.script(sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]"))
    items = collect(provider or make_provider(server), stream=True, **kwargs)
    assert text_of(items) == "ok"
    return server.requests[-1]


# ------------------------------------------------------------------ headers


def test_headers_non_streaming(server) -> None:
    request = one_request(server, api_key=SECRET)
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers.get_all("authorization") == [f"Bearer {SECRET}"]
    assert request.headers.get_all("accept") == ["application/json"]
    assert request.headers.get_all("content-type") == ["application/json"]


def test_headers_streaming(server) -> None:
    request = one_stream_request(server, api_key=SECRET)
    assert request.headers.get_all("accept") == ["text/event-stream"]
    assert request.json()["stream"] is True


@pytest.mark.parametrize("spelling", ["Authorization", "authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"])
def test_one_authorization_header_however_spelled(server, spelling: str) -> None:
    request = one_request(server, api_key=SECRET, headers={spelling: "Bearer caller-token"})
    names = [name for name, _ in request.raw_headers if name.lower() == "authorization"]
    assert len(names) == 1
    assert request.headers["authorization"] == "Bearer caller-token"


def test_class_headers_and_call_headers_merge(server) -> None:
    provider = make_provider(server, headers={"X-Title": "class", "authorization": "Bearer class-token", "X-Keep": "1"})
    request = one_request(server, provider, api_key=SECRET, headers={"x-title": "call", "ACCEPT": "application/x"})
    assert request.headers.get_all("x-title") == ["call"]
    assert request.headers.get_all("authorization") == ["Bearer class-token"]
    assert request.headers.get_all("accept") == ["application/x"]
    assert request.headers["x-keep"] == "1"


def test_none_header_value_removes_the_header(server) -> None:
    request = one_request(server, api_key=SECRET, headers={"Authorization": None, "X-Extra": "1"})
    assert request.headers.count("authorization") == 0
    assert request.headers["x-extra"] == "1"


@pytest.mark.parametrize("key", [f"{SECRET}\n", f" {SECRET}", f"{SECRET}\r\nX-Injected: 1", "a\tb"])
def test_malformed_key_is_a_value_error_without_the_key(server, key: str) -> None:
    with pytest.raises(ValueError, match="API key") as caught:
        collect(make_provider(server), api_key=key)
    assert key.strip() not in str(caught.value)
    assert server.requests == []


def test_header_with_line_break_is_a_value_error(server) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        collect(make_provider(server), headers={"X-Bad": "a\r\nInjected: yes"})
    assert server.requests == []


def test_no_key_no_authorization_header(server, monkeypatch) -> None:
    provider = make_provider(server)
    monkeypatch.delenv(provider.get_api_key_env(), raising=False)
    request = one_request(server, provider)
    assert request.headers.count("authorization") == 0


def test_get_headers_directly() -> None:
    class Named(OpenaiTemplate):
        api_base = "http://example.invalid/v1"
        api_key = "class-key"

    assert Named.get_headers(True) == {
        "Accept": "text/event-stream",
        "Content-Type": "application/json",
        "Authorization": "Bearer class-key",
    }
    assert Named.get_headers(False, "arg-key")["Authorization"] == "Bearer arg-key"
    merged = Named.get_headers(False, headers={"content-type": "application/json; charset=utf-8"})
    assert [name for name in merged if name.lower() == "content-type"] == ["content-type"]


# ------------------------------------------------------------------ body


def test_body_basic_and_none_params_omitted(server) -> None:
    request = one_request(server, model="m1")
    assert request.json() == {"messages": MESSAGES, "model": "m1", "stream": False}


def test_zero_false_and_empty_string_are_sent(server) -> None:
    request = one_request(
        server, temperature=0, max_tokens=0, top_p=0.0, stop="", seed=0, store=False, user="", logprobs=False
    )
    body = request.json()
    assert body["temperature"] == 0
    assert body["max_tokens"] == 0
    assert body["top_p"] == 0.0
    assert body["stop"] == ""
    assert body["seed"] == 0
    assert body["store"] is False
    assert body["user"] == ""
    assert body["logprobs"] is False


def test_none_valued_extra_parameters_are_omitted(server) -> None:
    body = one_request(server, seed=None, tools=None, temperature=None).json()
    assert "seed" not in body and "tools" not in body and "temperature" not in body


def test_openai_parameters_forwarded(server) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    body = one_request(
        server,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        reasoning_effort="low",
        max_completion_tokens=17,
        stop=["\n\n", "END"],
    ).json()
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert body["reasoning_effort"] == "low"
    assert body["max_completion_tokens"] == 17
    assert body["stop"] == ["\n\n", "END"]


def test_extra_parameters_class_list(server) -> None:
    provider = make_provider(server, extra_parameters=("top_k", "min_p"))
    body = one_request(server, provider, top_k=40, min_p=0.05).json()
    assert (body["top_k"], body["min_p"]) == (40, 0.05)
    # The class list replaces the default list: OpenAI names are now unknown to this provider.
    with pytest.raises(TypeError, match="seed"):
        collect(provider, seed=1)


def test_extra_parameters_call_keyword(server) -> None:
    body = one_request(server, extra_parameters=["repetition_penalty"], repetition_penalty=1.1, seed=3).json()
    assert body["repetition_penalty"] == 1.1
    assert body["seed"] == 3


def test_unknown_kwarg_is_a_type_error_naming_it(server) -> None:
    with pytest.raises(TypeError, match="top_k") as caught:
        collect(make_provider(server), top_k=40, seed=1)
    assert "seed" not in str(caught.value).split("argument(s)")[1].split(";")[0]
    assert server.requests == []


def test_unknown_kwargs_all_named(server) -> None:
    with pytest.raises(TypeError) as caught:
        collect(make_provider(server), top_k=40, frobnicate=True)
    assert "top_k" in str(caught.value) and "frobnicate" in str(caught.value)


def test_extra_data_merged_last(server) -> None:
    extra = {"temperature": 1.5, "model": "override", "nested": {"a": [1, None]}, "stream_options": None}
    body = one_request(server, temperature=0.2, extra_data=extra).json()
    assert body["temperature"] == 1.5
    assert body["model"] == "override"
    assert body["nested"] == {"a": [1, None]}
    assert body["stream_options"] is None


def test_extra_body_alias(server) -> None:
    body = one_request(server, extra_body={"provider": {"order": ["a"]}}).json()
    assert body["provider"] == {"order": ["a"]}
    body = one_request_again(server, extra_data={"a": 1, "b": 1}, extra_body={"b": 2})
    assert (body["a"], body["b"]) == (1, 2)


def one_request_again(server, **kwargs):
    server.reset()
    return one_request(server, **kwargs).json()


def test_stream_options_added_when_streaming(server) -> None:
    assert one_stream_request(server).json()["stream_options"] == {"include_usage": True}
    assert "stream_options" not in one_request_again(server)


def test_stream_options_opt_out(server) -> None:
    provider = make_provider(server, supports_stream_options=False)
    assert "stream_options" not in one_stream_request(server, provider).json()


def test_stream_options_set_by_caller_is_kept(server) -> None:
    body = one_stream_request(server, stream_options={"include_usage": False, "x": 1}).json()
    assert body["stream_options"] == {"include_usage": False, "x": 1}


def test_unserializable_body_is_a_type_error(server) -> None:
    with pytest.raises(TypeError, match="JSON"):
        collect(make_provider(server), extra_data={"when": object()})
    assert server.requests == []


@pytest.mark.parametrize("messages", ["Hi", [["user", "Hi"]], {"role": "user", "content": "Hi"}])
def test_bad_messages_are_a_type_error(server, messages) -> None:
    with pytest.raises(TypeError, match="messages"):
        collect(make_provider(server), messages=messages)
    assert server.requests == []


# ------------------------------------------------------------------ messages go out exactly as given


def test_messages_sent_exactly_and_never_mutated(server) -> None:
    messages = [
        {"role": "system", "content": "  be brief \n"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": ""},
        {"role": "user", "content": "again", "name": "bob", "custom_field": {"x": [1, 2]}},
    ]
    snapshot = copy.deepcopy(messages)
    body = one_request(server, messages=messages).json()
    assert body["messages"] == snapshot
    assert body["messages"][2]["content"] is None
    assert "content" in body["messages"][2]
    assert messages == snapshot
    # And with media attached to the last user message, the caller's dicts still stay as they were.
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    server.reset()
    body = one_request(server, messages=messages, media=[(png, "a.png")]).json()
    assert messages == snapshot
    assert body["messages"][:4] == snapshot[:4]
    assert body["messages"][4]["content"][0] == {"type": "text", "text": "again"}


# ------------------------------------------------------------------ endpoint and base URL


def test_api_endpoint_argument(server) -> None:
    request = one_request(server, api_endpoint=f"{server.url}/custom/chat")
    assert request.path == "/custom/chat"


def test_api_endpoint_class_attribute(server) -> None:
    provider = make_provider(server, api_endpoint=f"{server.url}/openai/deployments/x/chat/completions?api-version=1")
    request = one_request(server, provider)
    assert request.path == "/openai/deployments/x/chat/completions?api-version=1"


def test_api_endpoint_without_api_base(server) -> None:
    provider = type("EndpointOnly", (OpenaiTemplate,), {"api_endpoint": f"{server.base}/chat/completions"})
    request = one_request(server, provider, model="m")
    assert request.path == "/v1/chat/completions"


def test_trailing_slash_api_base_no_double_slash(server) -> None:
    provider = make_provider(server, api_base=server.base + "/")
    assert one_request(server, provider).path == "/v1/chat/completions"
    server.reset()
    assert one_request(server, make_provider(server), api_base=server.base + "//").path == "/v1/chat/completions"


def test_api_base_argument_overrides_class(server) -> None:
    provider = make_provider(server, api_base="http://127.0.0.1:9/never")
    assert one_request(server, provider, api_base=server.url + "/other").path == "/other/chat/completions"


def test_base_url_alias_class_attribute(server) -> None:
    provider = type("BaseUrlClass", (OpenaiTemplate,), {"base_url": server.base, "default_model": "m"})
    assert one_request(server, provider).path == "/v1/chat/completions"


def test_base_url_alias_keyword(server) -> None:
    provider = type("BaseUrlKeyword", (OpenaiTemplate,), {"default_model": "m"})
    assert one_request(server, provider, base_url=server.url + "/kw").path == "/kw/chat/completions"
    server.reset()
    # Both given: api_base wins, and base_url is not reported as an unknown keyword.
    assert one_request(server, provider, api_base=server.base, base_url="http://127.0.0.1:9").path == (
        "/v1/chat/completions"
    )


def test_subclass_without_api_base_is_value_error_before_any_request(server) -> None:
    provider = type("NoBase", (OpenaiTemplate,), {"default_model": "m"})
    with pytest.raises(ValueError, match="api_base"):
        collect(provider, api_key=SECRET)
    assert server.requests == []
    with pytest.raises(ValueError, match="api_base"):
        provider.get_models(api_key=SECRET)


# ------------------------------------------------------------------ keys


def test_needs_auth_without_key_is_missing_auth_before_any_request(server, monkeypatch) -> None:
    provider = make_provider(server, needs_auth=True)
    monkeypatch.delenv(provider.get_api_key_env(), raising=False)
    _, error = collect_error(provider)
    assert type(error) is MissingAuthError
    assert provider.get_api_key_env() in str(error)
    assert server.requests == []


def test_key_from_class_env_var(server, monkeypatch) -> None:
    provider = make_provider(server, needs_auth=True)
    assert provider.get_api_key_env() == f"{provider.__name__.upper()}_API_KEY"
    monkeypatch.setenv(provider.get_api_key_env(), "env-key")
    assert one_request(server, provider).headers["authorization"] == "Bearer env-key"
    server.reset()
    assert one_request(server, provider, api_key="arg-key").headers["authorization"] == "Bearer arg-key"


def test_key_precedence_class_attribute_over_env(server, monkeypatch) -> None:
    provider = make_provider(server, api_key="class-key", api_key_env="MY_CUSTOM_KEY_VAR")
    monkeypatch.setenv("MY_CUSTOM_KEY_VAR", "env-key")
    assert one_request(server, provider).headers["authorization"] == "Bearer class-key"
    provider = make_provider(server, api_key_env="MY_CUSTOM_KEY_VAR")
    server.reset()
    assert one_request(server, provider).headers["authorization"] == "Bearer env-key"


def test_openai_template_directly_reads_openai_env(server, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base + "/")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    request = one_request(server, OpenaiTemplate, model="gpt-4o-mini")
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json()["model"] == "gpt-4o-mini"


def test_openai_template_default_base(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenaiTemplate.get_api_base() == "https://api.openai.com/v1"
    assert OpenaiTemplate.get_api_key_env() == "OPENAI_API_KEY"


# ------------------------------------------------------------------ models


def test_default_model_and_aliases(server) -> None:
    provider = make_provider(
        server,
        default_model="dflt",
        default_vision_model="vis",
        model_aliases={"short": "long-name-v1", "spread": ["a", "b"]},
    )
    assert provider.get_model("") == "dflt"
    assert provider.get_model("", has_media=True) == "vis"
    assert provider.get_model("short") == "long-name-v1"
    assert provider.get_model("spread") in ("a", "b")
    assert provider.get_model("other") == "other"
    assert one_request(server, provider, model="short").json()["model"] == "long-name-v1"


def test_no_model_and_no_default_is_value_error(server) -> None:
    provider = make_provider(server, default_model="")
    with pytest.raises(ValueError, match="model"):
        collect(provider)
    assert server.requests == []
