"""The provider catalog: lookups, the default provider, and each quirk as the server receives it."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from typing import Any

import pytest
from scripted_server import chunk, completion, json_reply, sse_reply

from llmrelay import OpenaiTemplate
from llmrelay.providers import catalog
from llmrelay.providers.catalog import (
    PROVIDERS,
    Cerebras,
    Custom,
    Groq,
    LlamaCpp,
    LMStudio,
    Mistral,
    Ollama,
    OpenAI,
    Perplexity,
    UnsupportedParameterError,
    default_provider,
    get_provider,
    is_configured,
    provider_names,
)

MESSAGES = [{"role": "user", "content": "Hi"}]

# name -> (base URL, key variable, needs a key)
EXPECTED = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", True),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY", True),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", True),
    "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY", True),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY", True),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY", True),
    "deepseek": ("https://api.deepseek.com", "DEEPSEEK_API_KEY", True),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY", True),
    "gemini": ("https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY", True),
    "nvidia": ("https://integrate.api.nvidia.com/v1", "NVIDIA_API_KEY", True),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", True),
    "cerebras": ("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", True),
    "perplexity": ("https://api.perplexity.ai", "PERPLEXITY_API_KEY", True),
    "ollama": ("http://localhost:11434/v1", "OLLAMA_API_KEY", False),
    "lmstudio": ("http://localhost:1234/v1", "LMSTUDIO_API_KEY", False),
    "vllm": ("http://localhost:8000/v1", "VLLM_API_KEY", False),
    "llamacpp": ("http://localhost:8080/v1", "LLAMACPP_API_KEY", False),
}

_keys = itertools.count()


def fresh_key() -> str:
    """A key no other test used: the model-list cache is keyed by (base URL, key)."""
    return f"sk-catalog-{os.getpid()}-{next(_keys)}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key, base URL or LLMRELAY_* setting leaks in from the environment."""
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name.startswith("LLMRELAY_"):
            monkeypatch.delenv(name)


def collect(provider: type[OpenaiTemplate], model: str = "", **kwargs: Any) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in provider.create_async_generator(model, MESSAGES, **kwargs)]

    return asyncio.run(run())


def stream_ok() -> Any:
    return sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]")


# ------------------------------------------------------------------------ lookups


def test_every_named_provider_has_its_real_base_url_and_key_variable() -> None:
    for name, (base, env, keyed) in EXPECTED.items():
        cls = PROVIDERS[name]
        assert issubclass(cls, OpenaiTemplate), name
        assert cls.get_api_base() == base, name
        assert cls.get_api_key_env() == env, name
        assert cls.needs_auth is keyed, name
        assert cls.default_model or not keyed, f"{name} has no default model"


def test_catalog_names_are_lower_case_and_complete() -> None:
    assert set(EXPECTED) | {"custom"} == set(PROVIDERS)
    assert all(name == name.lower() for name in PROVIDERS)
    names = provider_names()
    assert names[-1] == "local"
    assert names[:-1] == list(PROVIDERS)


def test_lookup_is_case_insensitive_and_forgiving() -> None:
    assert get_provider("groq") is Groq
    assert get_provider("GROQ") is Groq
    assert get_provider("  Groq ") is Groq
    assert get_provider("OpenAI") is OpenAI
    assert get_provider("LM Studio") is LMStudio
    assert get_provider("lm-studio") is LMStudio
    assert get_provider("llama.cpp") is LlamaCpp
    assert get_provider("x.ai") is PROVIDERS["xai"]
    assert get_provider("google") is PROVIDERS["gemini"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        get_provider("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in ("groq", "openai", "ollama", "custom", "local"):
        assert name in message


def test_local_is_resolved_lazily() -> None:
    local = get_provider("Local")
    assert local.__name__ == "Local"
    assert issubclass(local, OpenaiTemplate)
    assert local.default_model == "smollm2"
    assert "local" not in PROVIDERS


def test_importing_the_catalog_does_not_import_local() -> None:
    code = "import sys, llmrelay.providers.catalog; print('llmrelay.providers.local' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------- default selection


def test_default_is_local_without_any_key() -> None:
    assert default_provider() is get_provider("local")


def test_default_is_the_first_provider_with_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPLEXITY_API_KEY", "k1")
    assert default_provider() is Perplexity
    monkeypatch.setenv("GROQ_API_KEY", "k2")
    assert default_provider() is Groq  # groq comes before perplexity
    monkeypatch.setenv("OPENAI_API_KEY", "k3")
    assert default_provider() is OpenAI
    monkeypatch.setenv("OPENAI_API_KEY", "")  # an empty variable is not a key
    assert default_provider() is Groq
    assert catalog.DEFAULT_ORDER[0] == "openai"


def test_llmrelay_provider_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "k")
    monkeypatch.setenv("LLMRELAY_PROVIDER", "Mistral")
    assert default_provider() is Mistral  # even without MISTRAL_API_KEY: the user asked for it
    monkeypatch.setenv("LLMRELAY_PROVIDER", "bogus")
    with pytest.raises(ValueError, match=r"LLMRELAY_PROVIDER.*bogus.*groq"):
        default_provider()


def test_llmrelay_api_base_selects_custom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "k")
    monkeypatch.setenv("LLMRELAY_API_BASE", "http://127.0.0.1:9/v1")
    assert default_provider() is Custom


def test_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_configured(Groq)
    monkeypatch.setenv("GROQ_API_KEY", "k")
    assert is_configured(Groq)
    assert is_configured(Ollama)  # no key needed
    assert not is_configured(Custom)  # no base URL
    monkeypatch.setenv("LLMRELAY_API_BASE", "http://127.0.0.1:9/v1")
    assert is_configured(Custom)


# ------------------------------------------------------------ quirks, server-side


def test_mistral_renames_seed_and_sends_no_stream_options(server) -> None:
    server.script(stream_ok())
    items = collect(Mistral, api_base=server.base, api_key="k", stream=True, seed=7, max_completion_tokens=20)
    assert "ok" in items
    body = server.requests[0].json()
    assert body["random_seed"] == 7
    assert body["max_tokens"] == 20
    assert "seed" not in body
    assert "max_completion_tokens" not in body
    assert "stream_options" not in body
    assert body["model"] == "mistral-small-latest"


def test_mistral_refuses_both_spellings(server) -> None:
    with pytest.raises(UnsupportedParameterError, match="seed"):
        collect(Mistral, api_base=server.base, api_key="k", seed=1, extra_data={"random_seed": 2})
    assert server.requests == []


def test_other_providers_keep_stream_options(server) -> None:
    server.script(stream_ok())
    collect(Groq, api_base=server.base, api_key="k", stream=True, seed=7)
    body = server.requests[0].json()
    assert body["stream_options"] == {"include_usage": True}
    assert body["seed"] == 7
    assert body["model"] == "llama-3.3-70b-versatile"
    assert server.requests[0].headers["authorization"] == "Bearer k"


@pytest.mark.parametrize(
    ("provider", "kwargs", "named"),
    [
        (Groq, {"logprobs": True}, "logprobs"),
        (Groq, {"logit_bias": {"1": 2}}, "logit_bias"),
        (Groq, {"n": 2}, "n"),
        (Cerebras, {"presence_penalty": 0.5}, "presence_penalty"),
        (Cerebras, {"extra_data": {"service_tier": "auto"}}, "service_tier"),
    ],
)
def test_rejected_parameters_raise_before_any_request(server, provider, kwargs, named) -> None:
    with pytest.raises(UnsupportedParameterError) as info:
        collect(provider, api_base=server.base, api_key="k", **kwargs)
    assert named in str(info.value)
    assert provider.get_name() in str(info.value)
    assert isinstance(info.value, ValueError)
    assert server.requests == []


def test_groq_rejects_message_names(server) -> None:
    async def run() -> None:
        messages = [{"role": "user", "content": "Hi", "name": "bob"}]
        async for _ in Groq.create_async_generator("", messages, api_base=server.base, api_key="k"):
            pass

    with pytest.raises(UnsupportedParameterError, match=r"messages\[\]\.name"):
        asyncio.run(run())
    assert server.requests == []


def test_groq_accepts_n_equal_to_one(server) -> None:
    server.script(json_reply(completion("ok")))
    assert "ok" in collect(Groq, api_base=server.base, api_key="k", n=1)
    assert server.requests[0].json()["n"] == 1


def test_perplexity_falls_back_to_its_model_list(server) -> None:
    server.route("GET", "/v1/models", json_reply({"error": {"message": "not found"}}, status=404))
    models = asyncio.run(Perplexity.get_models_async(api_base=server.base, api_key=fresh_key()))
    assert models == Perplexity.fallback_models
    assert "sonar" in models


def test_self_hosted_server_uses_the_first_listed_model(server) -> None:
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "b-model"}, {"id": "a-model"}]}))
    server.script(json_reply(completion("ok")))
    assert "ok" in collect(LMStudio, api_base=server.base, api_key=fresh_key())
    assert [request.method for request in server.requests] == ["GET", "POST"]
    assert server.requests[1].json()["model"] == "a-model"  # sorted listing, first one


def test_explicit_model_skips_the_listing(server) -> None:
    server.script(json_reply(completion("ok")))
    collect(LlamaCpp, model="mine", api_base=server.base)
    assert [request.method for request in server.requests] == ["POST"]
    assert server.requests[0].json()["model"] == "mine"
    assert "authorization" not in server.requests[0].headers  # no key needed, none sent


def test_ollama_has_a_default_model_and_honours_its_base_variable(server, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_API_BASE", server.base)
    server.script(json_reply(completion("ok")))
    collect(Ollama)
    assert server.requests[0].json()["model"] == "llama3.2"
    assert server.requests[0].path == "/v1/chat/completions"


def test_custom_reads_its_base_and_key_from_the_environment(server, monkeypatch) -> None:
    key = fresh_key()
    monkeypatch.setenv("LLMRELAY_API_BASE", server.base + "/")
    monkeypatch.setenv("LLMRELAY_API_KEY", key)
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "served"}]}))
    server.script(json_reply(completion("ok")))
    assert "ok" in collect(Custom)
    post = server.requests[-1]
    assert post.path == "/v1/chat/completions"
    assert post.headers["authorization"] == f"Bearer {key}"
    assert post.json()["model"] == "served"


def test_custom_without_a_base_url_says_which_variable_to_set() -> None:
    with pytest.raises(ValueError, match="LLMRELAY_API_BASE"):
        collect(Custom, model="m")


def test_openai_honours_openai_base_url(server, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    server.script(json_reply(completion("ok")))
    collect(OpenAI)
    assert server.requests[0].json()["model"] == "gpt-4.1-mini"


def test_keyed_provider_without_key_fails_before_any_request(server) -> None:
    from llmrelay.errors import MissingAuthError

    with pytest.raises(MissingAuthError, match="GROQ_API_KEY"):
        collect(Groq, api_base=server.base)
    assert server.requests == []


def test_openai_image_models_go_to_the_images_endpoint(server) -> None:
    server.script(json_reply({"data": [{"url": "https://example.invalid/cat.png"}]}))
    items = collect(OpenAI, model="dall-e-3", api_base=server.base, api_key="k", size="1024x1024")
    assert server.requests[0].path == "/v1/images/generations"
    assert server.requests[0].json() == {"model": "dall-e-3", "prompt": "Hi", "size": "1024x1024"}
    assert any(getattr(item, "images", None) == ["https://example.invalid/cat.png"] for item in items)
