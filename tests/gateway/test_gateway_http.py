"""Endpoints, routing of `model`, headers and every row of the error table (SPEC 8.3, 8.4), over raw HTTP."""

from __future__ import annotations

import hashlib
import json

from raw import chat, fetch
from scripted_server import ScriptedServer, completion, json_reply, text_reply, usage

KEY = "sk-llmrelay-alice-secret"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_chat_json_routes_provider_model_and_sets_headers(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply(completion("Hello!", model="served-model", usage=usage(3, 2))))
    reply = chat(
        gw.url,
        "up/my-model",
        headers={"x-request-id": "req-123"},
        temperature=0.5,
        seed=7,
        response_format={"type": "json_object"},
        user="u1",
        max_completion_tokens=9,
    )
    assert reply.status == 200, reply.body
    assert reply.headers["x-request-id"] == "req-123"
    assert reply.headers["x-llmrelay-provider"] == "up"
    assert reply.headers["x-llmrelay-model"] == "served-model"
    data = reply.json()
    assert data["object"] == "chat.completion" and data["model"] == "served-model"
    assert data["choices"][0]["message"]["content"] == "Hello!"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["total_tokens"] == 5
    sent = server.requests[0].json()
    assert server.requests[0].route_path == "/v1/chat/completions"
    assert sent["model"] == "my-model" and sent["stream"] is False
    assert (sent["temperature"], sent["seed"], sent["user"], sent["max_completion_tokens"]) == (0.5, 7, "u1", 9)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]


def test_model_split_at_first_slash_and_bare_name_goes_to_default(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    gw.gateway.default_provider = "up2"
    server.script(json_reply(completion("a")), json_reply(completion("b")))
    assert chat(gw.url, "up/meta-llama/llama-3-8b").status == 200
    assert chat(gw.url, "bare-model").status == 200
    assert server.requests[0].json()["model"] == "meta-llama/llama-3-8b"
    assert server.requests[1].route_path == "/v1/second/chat/completions"
    assert server.requests[1].json()["model"] == "bare-model"


def test_unknown_provider_is_404_with_request_id(make_gateway) -> None:
    gw = make_gateway()
    reply = chat(gw.url, "nowhere/model")
    assert reply.status == 404
    assert reply.error["code"] == "model_not_found" and "nowhere" in reply.error["message"]
    assert len(reply.headers["x-request-id"]) >= 16


def test_bad_bodies(make_gateway) -> None:
    gw = make_gateway()
    url = gw.url + "/v1/chat/completions"
    for raw in (b"{not json", b"", b"[1, 2]", b'"text"'):
        reply = fetch("POST", url, raw=raw)
        assert reply.status == 400, raw
        assert reply.error["code"] == "invalid_json", (raw, reply.error)
        assert "x-request-id" in reply.headers
    reply = fetch("POST", url, {"messages": [{"role": "user", "content": "x"}]})
    assert reply.status == 400 and reply.error["code"] == "invalid_request" and reply.error["param"] == "model"
    reply = fetch("POST", url, {"model": "up/x", "messages": "hi"})
    assert reply.status == 400 and reply.error["param"] == "messages"
    reply = fetch("POST", url, {"model": "up/x", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})
    assert reply.status == 400 and reply.error["param"] == "temperature"


def test_unsupported_parameter_is_400(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[providers.groq]\napi_base = "{upstream}"\n', GROQ_API_KEY="gsk-x")
    reply = chat(gw.url, "groq/llama", logprobs=True)
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "unsupported_parameter"
    assert not server.requests


def test_body_over_max_body_mb_is_413(make_gateway) -> None:
    gw = make_gateway()
    gw.gateway.max_body = 1000
    reply = chat(gw.url, "up/x", padding="x" * 2000)
    assert reply.status == 413 and reply.error["code"] == "request_too_large"


def test_keys_401_403(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(f'[[keys]]\nname = "alice"\nsha256 = "{DIGEST}"\nmodels = ["up/allowed-*"]\n')
    reply = chat(gw.url, "up/allowed-1")
    assert reply.status == 401 and reply.error["code"] == "invalid_api_key"
    reply = chat(gw.url, "up/allowed-1", headers={"Authorization": "Bearer sk-llmrelay-wrong"})
    assert reply.status == 401 and reply.error["code"] == "invalid_api_key"
    assert "sk-llmrelay-wrong" not in reply.body.decode()
    reply = chat(gw.url, "up/other", headers=AUTH)
    assert reply.status == 403 and reply.error["code"] == "model_not_allowed"
    server.script(json_reply(completion("ok")))
    assert chat(gw.url, "up/allowed-1", headers=AUTH).status == 200
    assert fetch("GET", gw.url + "/v1/models").status == 401
    log = "\n".join(gw.access_lines)
    assert "key=alice" in log and KEY not in log and "sk-llmrelay-wrong" not in log


def test_limits_429_with_retry_after(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(f'[[keys]]\nname = "alice"\nsha256 = "{DIGEST}"\nrpm = 2\n')
    server.script(json_reply(completion("1")), json_reply(completion("2")))
    assert chat(gw.url, headers=AUTH).status == 200
    assert chat(gw.url, headers=AUTH).status == 200
    reply = chat(gw.url, headers=AUTH)
    assert reply.status == 429 and reply.error["code"] == "rate_limit_exceeded"
    assert 1 <= int(reply.headers["retry-after"]) <= 60
    assert "rpm" in reply.error["message"]
    assert len(server.requests) == 2


def test_tpm_from_usage(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(f'[[keys]]\nname = "alice"\nsha256 = "{DIGEST}"\ntpm = 10\n')
    server.script(json_reply(completion("1", usage=usage(8, 4))))
    assert chat(gw.url, headers=AUTH).status == 200
    reply = chat(gw.url, headers=AUTH)
    assert reply.status == 429 and "tpm" in reply.error["message"] and reply.headers["retry-after"]


def test_upstream_errors_map_per_table(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    cases = [
        (json_reply({"error": {"message": "bad thing", "code": "weird_param"}}, 400), 400, "weird_param"),
        (
            json_reply({"error": {"message": "maximum context length is 8192 tokens"}}, 400),
            400,
            "context_length_exceeded",
        ),
        (
            json_reply({"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}, 404),
            404,
            "model_not_found",
        ),
        (
            json_reply({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "7"}),
            429,
            "rate_limit_exceeded",
        ),
        (json_reply({"error": {"message": "Incorrect API key provided"}}, 401), 502, "upstream_auth_error"),
        (json_reply({"error": {"message": "no credit"}}, 402), 502, "upstream_auth_error"),
        (json_reply({"error": {"message": "boom"}}, 500), 502, "upstream_error"),
        (text_reply("<html>bad gateway</html>", 503, "text/html"), 502, "upstream_error"),
    ]
    for reply_, status, code in cases:
        server.script(reply_)
        reply = chat(gw.url, "up/m")
        assert reply.status == status, (code, reply.body)
        assert reply.error["code"] == code, reply.error
        assert reply.headers["x-llmrelay-provider"] == "up"
        if status == 429:
            assert reply.headers["retry-after"] == "7"
        if code == "upstream_auth_error":
            assert "up" in reply.error["message"] and "LLMRELAY_UP_API_KEY" in reply.error["message"]
            assert "gateway" in reply.error["message"]


def test_connect_error_502_and_timeout_504(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(
        '[providers.dead]\napi_base = "http://127.0.0.1:9/v1"\n'
        '[providers.slow]\napi_base = "{upstream}"\ntimeout = 0.3\n'
    )
    reply = chat(gw.url, "dead/m")
    assert reply.status == 502 and reply.error["code"] == "upstream_error"
    from scripted_server import Reply

    server.script(
        Reply(head_delay=2.0, writes=[b"{}"], headers={"Content-Type": "application/json"}, body_mode="length")
    )
    reply = chat(gw.url, "slow/m")
    assert reply.status == 504 and reply.error["code"] == "upstream_timeout"


def test_404_405_health(make_gateway) -> None:
    gw = make_gateway()
    reply = fetch("GET", gw.url + "/v2/nothing")
    assert reply.status == 404 and reply.error["code"] == "not_found" and "x-request-id" in reply.headers
    reply = fetch("GET", gw.url + "/v1/chat/completions")
    assert reply.status == 405 and reply.error["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "POST"
    reply = fetch("DELETE", gw.url + "/v1/models")
    assert reply.status == 405
    reply = fetch("GET", gw.url + "/health")
    assert reply.status == 200 and reply.json() == {"status": "ok"}


def test_models_listing(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[providers.dead]\napi_base = "http://127.0.0.1:9/v1"\n[routes.fast]\ntargets = ["up/a"]\n')
    server.route("GET", "/v1/models", json_reply({"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]}))
    server.route("GET", "/v1/second/models", json_reply({"data": [{"id": "other"}]}))
    reply = fetch("GET", gw.url + "/v1/models")
    assert reply.status == 200
    data = reply.json()
    ids = [item["id"] for item in data["data"]]
    assert ids[0] == "fast"
    assert {"up/m1", "up/m2", "up2/other"} <= set(ids)
    assert not any(item.startswith("dead/") for item in ids)  # dead fails; the list still answers
    owners = {item["id"]: item["owned_by"] for item in data["data"]}
    assert owners["up/m1"] == "up" and owners["fast"] == "llmrelay"
    listed = len(server.requests)
    assert fetch("GET", gw.url + "/v1/models").json() == data  # cached
    assert len(server.requests) == listed
    reply = fetch("GET", gw.url + "/v1/models/up/m2")
    assert reply.status == 200 and reply.json()["id"] == "up/m2" and reply.json()["object"] == "model"
    reply = fetch("GET", gw.url + "/v1/models/up/nope")
    assert reply.status == 404 and reply.error["code"] == "model_not_found"


def test_images(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply({"created": 1, "data": [{"url": "https://img.example/1.png"}]}))
    reply = fetch(
        "POST", gw.url + "/v1/images/generations", {"model": "up/img-1", "prompt": "a cat", "size": "256x256"}
    )
    assert reply.status == 200, reply.body
    assert reply.json()["data"][0]["url"] == "https://img.example/1.png"
    sent = server.requests[0]
    assert sent.route_path == "/v1/images/generations"
    assert sent.json() == {"model": "img-1", "prompt": "a cat", "size": "256x256"}
    reply = fetch("POST", gw.url + "/v1/images/generations", {"model": "up/img-1"})
    assert reply.status == 400 and reply.error["param"] == "prompt"


def test_metrics_and_access_log(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(log_format="json")
    server.script(json_reply(completion("hi", usage=usage(3, 4))))
    assert chat(gw.url, "up/m", headers={"x-request-id": "r-1"}).status == 200
    assert chat(gw.url, "nowhere/m").status == 404
    text = fetch("GET", gw.url + "/metrics").body.decode()
    for name in (
        "llmrelay_requests_total",
        "llmrelay_request_duration_seconds_bucket",
        "llmrelay_time_to_first_token_seconds",
        "llmrelay_tokens_total",
        "llmrelay_upstream_errors_total",
        "llmrelay_inflight_requests",
        "llmrelay_cache_total",
        "llmrelay_redis_errors_total",
    ):
        assert name in text, name
    assert 'llmrelay_requests_total{model="test-model",provider="up",route="",status="200"} 1.0' in text
    assert 'llmrelay_tokens_total{kind="completion",model="test-model",provider="up"} 4.0' in text
    records = [json.loads(line) for line in gw.access_lines]
    first = next(record for record in records if record["request_id"] == "r-1")
    assert first["status"] == 200 and first["provider"] == "up" and first["tokens"] == 7
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions" and first["duration_s"] >= 0
    assert "Hi" not in "\n".join(gw.access_lines) and "hi" not in [r.get("model") for r in records]
    assert any(record["status"] == 404 for record in records)


def test_text_access_log_quotes_odd_values(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    reply = chat(gw.url, "up/evil model\n2026-01-01 GET / 200")
    assert reply.status == 502  # the scripted server has no reply queued
    assert reply.headers["x-llmrelay-model"] == "evil model%0A2026-01-01 GET / 200"
    line = next(line for line in gw.access_lines if "evil" in line)
    assert '"evil model\\n2026-01-01 GET / 200"' in line
    assert len([line for line in gw.access_lines if "/v1/chat/completions" in line]) == 1
