"""The gateway for operators (issue 15): what a caller's body can reach upstream, what callers and upstreams can
grow, capped Retry-After, per-target retries, the last target's provider on failures, upstream headers and
query (Azure), health endpoints. Every test runs over real sockets against the scripted server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from typing import Any

import aiohttp
import pytest
from gateway_support import Lines, Running
from raw import afetch, chat, fetch
from redis_server import RedisServer
from scripted_server import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    chunk,
    completion,
    json_reply,
    sse,
    sse_reply,
    usage,
)

from llmrelay.client.convert import ChatCall
from llmrelay.server.app import Endpoint, Gateway
from llmrelay.server.config import ConfigError, load_config
from llmrelay.server.doors import DoorRequest
from llmrelay.server.doors import chat as chat_door
from llmrelay.server.metrics import MAX_LABEL_LENGTH, MAX_LEARNED_MODELS

FIRST = "/v1/chat/completions"
SECOND = "/v1/second/chat/completions"
CHEAP_KEY = "sk-llmrelay-cheap-0123456789abcdef0123456789"
OPEN_KEY = "sk-llmrelay-open-0123456789abcdef01234567890"
NONE_KEY = "sk-llmrelay-none-0123456789abcdef01234567890"
KEYS = f"""
[[keys]]
name = "cheap"
sha256 = "{hashlib.sha256(CHEAP_KEY.encode()).hexdigest()}"
models = ["up/cheap"]

[[keys]]
name = "open"
sha256 = "{hashlib.sha256(OPEN_KEY.encode()).hexdigest()}"

[[keys]]
name = "none"
sha256 = "{hashlib.sha256(NONE_KEY.encode()).hexdigest()}"
models = []
"""
HI = [{"role": "user", "content": "Hi"}]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(url: str, body: Any, key: str = CHEAP_KEY) -> Any:
    return fetch("POST", url + "/v1/chat/completions", body, auth(key))


def metrics_text(url: str) -> str:
    return fetch("GET", url + "/metrics").body.decode()


def posted(server: ScriptedServer) -> list[RecordedRequest]:
    return [request for request in server.requests if request.method == "POST"]


def no_traceback(gw: Any) -> None:
    assert not [line for line in gw.log_lines if "Traceback" in line or "internal error" in line], gw.log_lines


# ------------------------------------------------------------------ defect 1: the authorised model and messages


@pytest.mark.parametrize("field", ["model", "messages", "stream", "stream_options", "n", "extra_body"])
def test_extra_body_cannot_replace_what_the_gateway_authorised(
    server: ScriptedServer, make_gateway, field: str
) -> None:
    gw = make_gateway(KEYS)
    values = {
        "model": "pricey",
        "messages": [{"role": "user", "content": "other"}],
        "stream": True,
        "stream_options": {"include_usage": False},
        "n": 1,
        "extra_body": {"model": "pricey"},
    }
    reply = post(gw.url, {"model": "up/cheap", "messages": HI, "extra_body": {field: values[field]}})
    assert reply.status == 400, reply.body
    assert reply.error["param"] == f"extra_body.{field}" and reply.error["code"] == "invalid_request"
    assert f"'extra_body' may not set {field!r}" in reply.error["message"]
    assert posted(server) == []


def test_upstream_receives_exactly_the_authorised_model_and_messages(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    server.script(json_reply(completion("ok")))
    body = {"model": "up/cheap", "messages": HI, "extra_body": {"top_k": 3, "temperature": 0.5}, "custom": {"a": 1}}
    reply = post(gw.url, body)
    assert reply.status == 200, reply.body
    sent = posted(server)[0].json()
    assert sent["model"] == "cheap" and sent["messages"] == HI
    assert (sent["top_k"], sent["temperature"], sent["custom"]) == (3, 0.5, {"a": 1})  # pass-through still works
    assert "extra_body" not in sent and "n" not in sent


def test_a_callers_stream_options_never_switch_off_the_usage_the_gateway_counts(
    server: ScriptedServer, make_gateway
) -> None:
    gw = make_gateway(KEYS)
    server.script(sse_reply(chunk("hi"), chunk(finish_reason="stop"), chunk(choices=[], usage=usage(2, 3)), "[DONE]"))
    reply = post(
        gw.url, {"model": "up/cheap", "messages": HI, "stream": True, "stream_options": {"include_usage": False}}
    )
    assert reply.status == 200
    assert posted(server)[0].json()["stream_options"] == {"include_usage": True}
    assert all(not chunk.get("usage") for chunk in reply.chunks())  # the caller asked for no usage chunk
    assert 'llmrelay_tokens_total{kind="completion",model="test-model",provider="up"} 3.0' in metrics_text(gw.url)


class _PassThroughDoor:
    """A door that hands the caller's whole body on as pass-through fields (as a careless new door might)."""

    answer = staticmethod(chat_door.answer)
    renderer = staticmethod(chat_door.renderer)
    error_body = staticmethod(chat_door.error_body)

    @staticmethod
    def parse(body: dict[str, Any]) -> DoorRequest:
        return DoorRequest(ChatCall("up/cheap", HI, False, False, {"extra_data": body}))


def test_no_door_can_pass_a_field_over_the_authorised_ones(server: ScriptedServer, tmp_path) -> None:
    class WithPassThrough(Gateway):
        def route_table(self) -> list[Endpoint]:
            return [*super().route_table(), Endpoint("POST", "/test/pass", _PassThroughDoor)]

    path = tmp_path / "g.toml"
    path.write_text(f'[providers.up]\napi_base = "{server.base}"\n')
    gw = Running(WithPassThrough(load_config(str(path)), log_stream=Lines([], lambda line: None)), []).start()
    try:
        for field in ("model", "messages", "stream", "stream_options", "n"):
            reply = fetch("POST", gw.url + "/test/pass", {field: "pricey"})
            assert reply.status == 400 and reply.error["param"] == field, reply.body
        server.script(json_reply(completion("ok")))
        assert fetch("POST", gw.url + "/test/pass", {"top_k": 3}).status == 200
        assert posted(server)[0].json()["model"] == "cheap" and posted(server)[0].json()["top_k"] == 3
    finally:
        gw.stop()


@pytest.mark.parametrize("where", ["top", "extra_body"])
@pytest.mark.parametrize("field", ["models", "route"])
def test_model_choosing_fields_refused_for_a_limited_key(
    server: ScriptedServer, make_gateway, where: str, field: str
) -> None:
    gw = make_gateway(KEYS)
    value: Any = ["openai/gpt-4o", "anthropic/claude"] if field == "models" else "fallback"
    body: dict[str, Any] = {"model": "up/cheap", "messages": HI}
    if where == "top":
        body[field] = value
    else:
        body["extra_body"] = {field: value}
    reply = post(gw.url, body)
    assert reply.status == 403 and reply.error["code"] == "model_not_allowed" and reply.error["param"] == field
    assert posted(server) == []
    # A key with no models restriction may use OpenRouter's fields: they reach the upstream as sent.
    server.script(json_reply(completion("ok")))
    reply = post(gw.url, body, OPEN_KEY)
    assert reply.status == 200
    assert posted(server)[0].json()[field] == value


def test_a_key_with_an_empty_models_list_may_use_nothing(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS + '[routes.fast]\ntargets = ["up/a"]\n')
    for model in ("up/cheap", "fast", "test-model"):
        reply = post(gw.url, {"model": model, "messages": HI}, NONE_KEY)
        assert reply.status == 403 and reply.error["code"] == "model_not_allowed", model
    assert posted(server) == []


def test_the_bearer_scheme_is_case_insensitive(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS)
    for scheme in ("bearer", "BEARER", "Bearer"):
        server.script(json_reply(completion("ok")))
        reply = fetch(
            "POST",
            gw.url + "/v1/chat/completions",
            {"model": "up/cheap", "messages": HI},
            {"Authorization": f"{scheme} {CHEAP_KEY}"},
        )
        assert reply.status == 200, (scheme, reply.body)


# ------------------------------------------------------------------------- defect 2: no body gives a 500


@pytest.mark.parametrize("value", [5, "ab", [1, 2], True, 1.5])
def test_extra_body_of_the_wrong_type_is_a_400_naming_it(server: ScriptedServer, make_gateway, value: Any) -> None:
    gw = make_gateway()
    reply = chat(gw.url, extra_body=value)
    assert reply.status == 400, reply.body
    assert reply.error["param"] == "extra_body" and reply.error["code"] == "invalid_request"
    assert reply.error["message"].startswith("'extra_body' must be an object of extra body fields, not ")
    assert posted(server) == []
    no_traceback(gw)


def test_extra_body_fields_are_type_checked_like_the_body(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    reply = chat(gw.url, extra_body={"temperature": "hot"})
    assert reply.status == 400 and reply.error["param"] == "extra_body.temperature"
    assert posted(server) == []


@pytest.mark.parametrize("n", [0, 2, -1])
def test_n_other_than_one_says_so(server: ScriptedServer, make_gateway, n: int) -> None:
    gw = make_gateway()
    reply = chat(gw.url, n=n)
    assert reply.status == 400 and reply.error["param"] == "n"
    assert reply.error["message"].startswith(f"'n' must be 1, not {n}")
    assert posted(server) == []


# ---------------------------------------------------------------------- defect 3: bounded metric labels


def test_metrics_stay_small_whatever_callers_and_upstreams_send(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(KEYS + '[routes.fast]\ntargets = ["up/a"]\ncooldown_after = 1000\n')
    before = len(metrics_text(gw.url))
    big = "m" * 2000

    def upstream(request: RecordedRequest) -> Reply:
        number = int(request.json()["messages"][0]["content"])
        if number % 2:  # an upstream error code of the upstream's choosing
            return json_reply({"error": {"message": "no", "code": f"code-{number}-{big}"}}, 400)
        return json_reply(completion("ok", model=f"reported-{number}-{big[: number % 300]}", usage=usage(1, 1)))

    server.route("POST", FIRST, upstream)

    async def flood() -> list[int]:
        statuses = []
        for number in range(400):  # refused: too long (400), not allowed (403), unknown provider (404)
            body = {"model": f"up/{number}-{big}", "messages": HI}
            statuses.append((await afetch("POST", gw.url + FIRST, body, auth(CHEAP_KEY))).status)
            body["model"] = f"up/{number}-{big[:240]}"
            statuses.append((await afetch("POST", gw.url + FIRST, body, auth(CHEAP_KEY))).status)
            body["model"] = f"nope{number}/{big[:240]}"
            statuses.append((await afetch("POST", gw.url + FIRST, body, auth(OPEN_KEY))).status)
        for number in range(300):  # answered by the upstream: its codes and reported model names
            body = {"model": "fast", "messages": [{"role": "user", "content": str(number)}]}
            statuses.append((await afetch("POST", gw.url + FIRST, body, auth(OPEN_KEY))).status)
        return statuses

    statuses = asyncio.run(flood())
    assert set(statuses) == {200, 400, 403, 404}
    text = metrics_text(gw.url)
    # At most MAX_LEARNED_MODELS reported names of at most MAX_LABEL_LENGTH characters, in three series each (and
    # their _created lines), plus the _other series: bounded whatever the flood (before the bound: megabytes).
    assert len(text) < before + MAX_LEARNED_MODELS * 6 * (MAX_LABEL_LENGTH + 100) + 10_000, len(text)
    assert max(len(line) for line in text.splitlines()) < 400
    assert big[:100] not in text and "nope" not in text and "code-" not in text
    assert 'model="_other"' in text
    assert 'llmrelay_upstream_errors_total{code="invalid_request",provider="up"} 150.0' in text
    series = [line for line in text.splitlines() if line.startswith("llmrelay_requests_total{")]
    assert len(series) <= MAX_LEARNED_MODELS + 10, len(series)


def test_model_names_are_bounded_in_requests_and_in_headers(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    reply = chat(gw.url, "up/" + "m" * 300)
    assert reply.status == 400 and reply.error["param"] == "model" and "longer than 256" in reply.error["message"]
    assert posted(server) == []
    server.script(json_reply(completion("ok", model="r" * 20_000)))  # an upstream reports the name it likes
    reply = chat(gw.url, "up/a")
    assert reply.status == 200 and reply.headers["x-llmrelay-model"] == "r" * 253 + "..."
    assert gw.access_lines[-1].count("r" * 253 + "...") == 1 and "r" * 254 not in gw.access_lines[-1]


# -------------------------------------------------------------------------- defect 4: capped Retry-After


def test_an_upstream_retry_after_is_capped(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a"]\n', settings="max_cooldown_s = 7")
    server.script(json_reply({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "99999999999"}))
    reply = chat(gw.url, "fast")
    assert reply.status == 429 and reply.headers["retry-after"] == "7"
    assert 0 < gw.run(gw.gateway.state.cooling("up/a")) <= 7
    # Every target now cools down after a rate limit: the next request is itself rate limited, not a 502.
    reply = chat(gw.url, "fast")
    assert reply.status == 429 and reply.error["code"] == "rate_limit_exceeded", reply.body
    assert 1 <= int(reply.headers["retry-after"]) <= 7
    assert len(posted(server)) == 1


def test_a_single_target_forwards_the_capped_retry_after(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(settings="max_cooldown_s = 300")
    server.script(json_reply({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "99999999999"}))
    reply = chat(gw.url, "up/a")
    assert reply.status == 429 and reply.headers["retry-after"] == "300"


def test_a_fractional_retry_after_is_rounded_up(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "1.5"}))
    reply = chat(gw.url, "up/a")
    assert reply.status == 429 and reply.headers["retry-after"] == "2"


def test_cooling_after_failures_is_not_a_rate_limit(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a"]\ncooldown_after = 1\ncooldown_s = 60\n')
    server.script(json_reply({"error": {"message": "down"}}, 500))
    assert chat(gw.url, "fast").status == 502
    reply = chat(gw.url, "fast")
    assert reply.status == 502 and "cooling down" in reply.error["message"]
    assert "retry-after" not in reply.headers


# ---------------------------------------------------------------- defect 7: the provider of a failed request


def test_a_failed_route_names_the_last_target_and_every_error(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n', log_format="json")
    server.route("POST", FIRST, json_reply({"error": {"message": "first is down"}}, 500))
    server.route("POST", SECOND, json_reply({"error": {"message": "second is down"}}, 503))
    reply = chat(gw.url, "fast")
    assert reply.status == 502
    assert reply.headers["x-llmrelay-provider"] == "up2" and reply.headers["x-llmrelay-model"] == "b"
    message = reply.error["message"]
    assert "up/a: " in message and "first is down" in message, message
    assert "up2/b: " in message and "second is down" in message, message
    record = json.loads(gw.access_lines[-1])
    assert record["provider"] == "up2" and record["status"] == 502
    assert 'llmrelay_requests_total{model="b",provider="up2",route="fast",status="502"} 1.0' in metrics_text(gw.url)


def test_a_failed_stream_names_the_last_target(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.route("POST", FIRST, json_reply({"error": {"message": "first is down"}}, 500))
    server.route("POST", SECOND, json_reply({"error": {"message": "bad"}}, 400))
    reply = chat(gw.url, "fast", stream=True)
    assert reply.status == 400 and reply.headers["x-llmrelay-provider"] == "up2"


# ------------------------------------------------------------------------------- retries per target


def test_route_retries_a_target_before_moving_on(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\nretries = 2\ncooldown_after = 10\n')
    server.script(
        json_reply({"error": {"message": "down"}}, 500),
        json_reply({"error": {"message": "slow"}}, 429, headers={"Retry-After": "0.1"}),
        json_reply(completion("third time")),
    )
    reply = chat(gw.url, "fast")
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "third time"
    assert [request.route_path for request in posted(server)] == [FIRST, FIRST, FIRST]
    assert 'llmrelay_retries_total{route="fast"} 2.0' in metrics_text(gw.url)


def test_a_long_retry_after_is_not_waited_for_the_route_moves_on(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\nretries = 3\n', settings="max_cooldown_s = 120")
    server.script(
        json_reply({"error": {"message": "slow"}}, 429, headers={"Retry-After": "99999"}),
        json_reply(completion("from b")),
    )
    reply = chat(gw.url, "fast")
    assert reply.status == 200 and reply.json()["choices"][0]["message"]["content"] == "from b"
    assert [request.route_path for request in posted(server)] == [FIRST, SECOND]
    assert 100 < gw.run(gw.gateway.state.cooling("up/a")) <= 120  # the cooldown is the capped Retry-After
    assert "llmrelay_retries_total{" not in metrics_text(gw.url)


def test_route_without_retries_moves_on_at_once(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.script(json_reply({"error": {"message": "down"}}, 500), json_reply(completion("b")))
    assert chat(gw.url, "fast").status == 200
    assert [request.route_path for request in posted(server)] == [FIRST, SECOND]
    assert "llmrelay_retries_total{" not in metrics_text(gw.url)


def test_retries_out_of_range_are_refused(server: ScriptedServer, tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[routes.fast]\ntargets = ["local/x"]\nretries = 11\n')
    with pytest.raises(ConfigError, match=r"routes\.fast\.retries: must be from 0 to 10"):
        load_config(str(path))


# ------------------------------------------------------------------- upstream headers and query (Azure)

AZURE = """
[providers.azure]
api_base = "{upstream}/openai/deployments/gpt-4o?api-version=2024-10-21"
headers = {{ "api-key" = "${{AZURE_OPENAI_KEY}}", "x-team" = "t-${{TEAM}}" }}
"""


def test_provider_headers_and_query_reach_every_upstream_url(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(AZURE.replace("{{", "{").replace("}}", "}"), AZURE_OPENAI_KEY="az-secret-1", TEAM="blue")
    deployment = "/v1/openai/deployments/gpt-4o"
    server.route("POST", deployment + "/chat/completions", json_reply(completion("ok")))
    server.route("GET", deployment + "/models", json_reply({"object": "list", "data": [{"id": "gpt-4o"}]}))
    assert chat(gw.url, "azure/gpt-4o").status == 200
    listing = fetch("GET", gw.url + "/v1/models")
    assert "azure/gpt-4o" in [item["id"] for item in listing.json()["data"]]
    paths = {request.route_path: request for request in server.requests}
    chat_request, models_request = paths[deployment + "/chat/completions"], paths[deployment + "/models"]
    for request in (chat_request, models_request):
        assert request.query == {"api-version": ["2024-10-21"]}
        assert request.headers["api-key"] == "az-secret-1" and request.headers["x-team"] == "t-blue"
        assert "authorization" not in request.headers


def test_a_secret_header_value_is_never_quoted_back(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(AZURE.replace("{{", "{").replace("}}", "}"), AZURE_OPENAI_KEY="az-secret-echoed", TEAM="red")
    echo = {"error": {"message": "the key az-secret-echoed is not valid for this deployment", "code": "bad_key"}}
    server.script(json_reply(echo, 400))
    reply = chat(gw.url, "azure/gpt-4o")
    assert reply.status == 400 and "az-secret-echoed" not in reply.body.decode()
    assert "the key *** is not valid" in reply.error["message"]
    assert not [line for line in gw.log_lines if "az-secret-echoed" in line]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ('{ "api-key" = "${NOT_SET_ANYWHERE}" }', r"headers\.api-key: the environment variable NOT_SET_ANYWHERE"),
        ('{ "api-key" = 5 }', r"headers\.api-key: must be a string"),
        ('{ "bad name" = "x" }', r"headers: .*not a valid header name"),
        ('{ "api-key" = "${1X}" }', r"headers\.api-key: \$\{1X\} is not an environment variable name"),
    ],
)
def test_provider_headers_are_checked(tmp_path, headers: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[providers.azure]\napi_base = "http://127.0.0.1:9/v1"\nheaders = {headers}\n')
    with pytest.raises(ConfigError, match=rf"providers\.azure\.{problem}"):
        load_config(str(path), environ={})


# ---------------------------------------------------------------------------------------- health


def test_health_live_and_ready(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    for path, body in (("/health", {"status": "ok"}), ("/health/live", {"status": "ok"})):
        reply = fetch("GET", gw.url + path)
        assert reply.status == 200 and reply.json() == body
    reply = fetch("GET", gw.url + "/health/ready")
    assert reply.status == 200 and reply.json() == {"status": "ready"}
    gw.gateway.draining = True
    reply = fetch("GET", gw.url + "/health/ready")
    assert reply.status == 503 and reply.json() == {"status": "not ready", "reason": "draining"}
    assert fetch("GET", gw.url + "/health/live").status == 200


async def _new_connection(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request on a connection of its own (as a load balancer's health check opens)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.request(method, url, json=body) as response:
            return response.status, await response.json(), dict(response.headers)


def test_draining_answers_health_on_new_connections(server: ScriptedServer, spawn_gateway) -> None:
    gw = spawn_gateway()
    writes: list[bytes | float] = [sse(chunk("one")), 2.0, sse(chunk("two"), chunk(finish_reason="stop"), "[DONE]")]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=writes))

    async def run() -> tuple[bytes, list[tuple[int, dict[str, Any], dict[str, str]]]]:
        async with aiohttp.ClientSession() as session:
            body = {"model": "up/a", "messages": HI, "stream": True}
            async with session.post(gw.url + FIRST, json=body) as response:
                first = await response.content.readuntil(b'"content":"one"')
                gw.process.send_signal(signal.SIGTERM)
                for _ in range(100):  # until the signal is handled (no sleep-based guess of when)
                    health = await _new_connection("GET", gw.url + "/health")
                    if health[0] == 503:
                        break
                    await asyncio.sleep(0.02)
                answers = [
                    health,
                    await _new_connection("GET", gw.url + "/health/ready"),
                    await _new_connection("GET", gw.url + "/health/live"),
                    await _new_connection("POST", gw.url + FIRST, {"model": "up/a", "messages": HI}),
                ]
                return first + await response.read(), answers

    streamed, answers = asyncio.run(run())
    (health, ready, live, work) = answers
    assert health[:2] == (503, {"status": "draining"})
    assert ready[:2] == (503, {"status": "not ready", "reason": "draining"})
    assert live[:2] == (200, {"status": "ok"})
    assert work[0] == 503 and work[1]["error"]["code"] == "shutting_down" and work[2]["Connection"] == "close"
    assert streamed.endswith(b"data: [DONE]\n\n") and b'"content":"two"' in streamed
    assert gw.process.wait(15) == 0
    assert len(posted(server)) == 1  # the request refused while draining never reached the upstream


def test_ready_follows_redis(server: ScriptedServer, spawn_gateway) -> None:
    own = RedisServer().start()
    try:
        gw = spawn_gateway(env={"LLMRELAY_REDIS_URL": own.url})
        reply = fetch("GET", gw.url + "/health/ready")
        assert reply.status == 200 and reply.json() == {"status": "ready"}
        own.kill()
        reply = fetch("GET", gw.url + "/health/ready")
        assert reply.status == 503 and reply.json() == {"status": "not ready", "reason": "redis unreachable"}
        assert fetch("GET", gw.url + "/health/live").status == 200 and fetch("GET", gw.url + "/health").status == 200
        own.start()
        assert fetch("GET", gw.url + "/health/ready").status == 200
        assert gw.terminate() == 0
    finally:
        own.stop()
