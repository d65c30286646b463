"""The Responses door and its stored responses as a hostile caller and an operator see them (issues 16, 19):
odd upstream streams through the ``openai`` SDK's strict ``responses.stream()`` helper, the bounds on what a
caller can make the gateway keep or load, and the ids it gives out — over real sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from gateway_support import Lines, Running
from raw import fetch
from scripted_server import ScriptedServer, chunk, json_reply, sse_reply, tool_call_delta, usage

from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config
from llmrelay.server.state import MemoryState


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base, api_key="unused", max_retries=0)


def final_of(gw: Any, **extra: Any) -> Any:
    with client(gw) as sdk, sdk.responses.stream(model="up/x", input="Hi", **extra) as stream:
        return stream.get_final_response()


# ---------------------------------------------------------------------------- odd streams, strict helper


def test_empty_answer_streams_to_a_complete_response(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(sse_reply(chunk(role="assistant", content=""), chunk(finish_reason="stop"), "[DONE]"))
    final = final_of(gw)
    assert final.status == "completed"
    assert final.output_text == ""


def test_no_event_at_all_streams_to_a_complete_response(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(sse_reply("[DONE]"))
    final = final_of(gw)
    assert final.status == "completed" and final.output_text == ""


def test_reasoning_only_answer(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(role="assistant", content=""),
            chunk(reasoning_content="think "),
            chunk(reasoning_content="hard"),
            chunk(finish_reason="stop"),
            "[DONE]",
        )
    )
    final = final_of(gw)
    assert final.status == "completed"
    kinds = [item.type for item in final.output]
    assert kinds[0] == "reasoning", kinds
    assert final.output_text == ""


def test_tool_call_only_answer(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(role="assistant", content=None),
            chunk(tool_calls=[tool_call_delta(0, id="call_z", name="f", arguments='{"a":1}')]),
            chunk(finish_reason="tool_calls"),
            "[DONE]",
        )
    )
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    final = final_of(gw, tools=tools)
    assert [(item.type, item.name, item.arguments) for item in final.output] == [("function_call", "f", '{"a":1}')]


def test_length_limited_answer_is_incomplete(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(
            chunk(role="assistant", content=""),
            chunk("cut sh"),
            chunk(finish_reason="length"),
            chunk(choices=[], usage=usage(3, 2)),
            "[DONE]",
        )
    )
    # As OpenAI's own service: the stream ends with response.incomplete, which the helper's
    # get_final_response() does not take for a final response; every event before it must satisfy the helper.
    with client(gw) as sdk, sdk.responses.stream(model="up/x", input="Hi", max_output_tokens=2) as stream:
        events = list(stream)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "cut sh"
    assert [event.type for event in events].count("response.output_text.done") == 1


def test_upstream_failure_before_any_output_is_an_http_error(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    server.script(json_reply({"error": {"message": "boom"}}, status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        final_of(gw)
    assert caught.value.status_code == 502
    server.script(sse_reply(end="abrupt"))
    with pytest.raises(openai.APIError):
        final_of(gw)


# ---------------------------------------------------------------------------- what a caller makes the gateway keep


def create(gw: Any, body: dict[str, Any]) -> Any:
    return fetch("POST", gw.url + "/v1/responses", {"model": "up/x", **body})


def test_stored_responses_are_bounded_in_bytes(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(settings="responses_max_mb = 0.5")
    big = "x" * 200_000  # three of these are more than 0.5 MB
    ids = []
    for _ in range(3):
        server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
        reply = create(gw, {"input": big})
        assert reply.status == 200
        ids.append(reply.json()["id"])
    assert fetch("GET", gw.url + f"/v1/responses/{ids[0]}").status == 404  # least recently used out first
    assert fetch("GET", gw.url + f"/v1/responses/{ids[2]}").status == 200
    server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
    alone = create(gw, {"input": "y" * 600_000})  # larger than all the bound: answered, not kept
    assert alone.status == 200 and fetch("GET", gw.url + f"/v1/responses/{alone.json()['id']}").status == 404
    assert fetch("GET", gw.url + f"/v1/responses/{ids[2]}").status == 200  # and it evicted nothing


def test_a_chain_cannot_grow_past_max_body(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(settings="max_body_mb = 0.05")  # 52,428 bytes
    previous = None
    piece = "z" * 20_000
    statuses = []
    for _ in range(4):
        server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
        body: dict[str, Any] = {"input": piece}
        if previous is not None:
            body["previous_response_id"] = previous
        reply = create(gw, body)
        statuses.append(reply.status)
        if reply.status != 200:
            break
        previous = reply.json()["id"]
    assert statuses == [200, 200, 400]
    error = reply.error
    assert error["code"] == "conversation_too_large" and error["param"] == "previous_response_id"
    assert "max_body_mb" in error["message"]
    assert len(server.requests) == 2  # refused before any upstream call


def test_response_ids_are_128_random_bits(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    ids = []
    for _ in range(24):
        server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
        ids.append(create(gw, {"input": "Hi", "store": False}).json()["id"])
    assert all(len(one) == len("resp_") + 32 and one.startswith("resp_") for one in ids)
    # a uuid4 holds 122 random bits: its 13th hex digit is always "4", its 17th one of 8-b
    assert {one[5 + 12] for one in ids} != {"4"}
    assert not {one[5 + 16] for one in ids} <= set("89ab")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/responses/resp_" + "0" * 5_000,
        "/v1/responses/resp_x%2F..%2Fcache%2Fk",
        "/v1/responses/%2A",
        "/v1/responses/resp_00000000000000000000000000000000/input_items?limit=99999999999999999999",
    ],
)
def test_caller_chosen_ids_are_not_found_without_a_lookup(server: ScriptedServer, make_gateway, path: str) -> None:
    gw = make_gateway()
    reply = fetch("GET", gw.url + path)
    assert reply.status == 404, reply.body[:200]
    assert reply.error["code"] == "not_found"
    assert len(reply.body) < 12_000


# ---------------------------------------------------------------------------- HEAD like GET


@pytest.mark.parametrize("path", ["/", "/playground/app.js", "/health", "/v1/models", "/health/ready"])
def test_head_answers_like_get(server: ScriptedServer, make_gateway, path: str) -> None:
    gw = make_gateway()
    got = fetch("GET", gw.url + path)
    head = fetch("HEAD", gw.url + path)
    assert head.status == got.status == 200
    assert head.body == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")
    assert head.headers.get("content-security-policy") == got.headers.get("content-security-policy")


# ---------------------------------------------------------------------------- nothing keyed by caller input grows


def test_model_names_chosen_by_callers_leave_nothing_behind(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway()
    for number in range(30):
        server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
        stream = number % 2 == 1
        body = {"model": f"up/caller-model-{number}", "input": "Hi", "store": False, "stream": stream}
        assert fetch("POST", gw.url + "/v1/responses", body).status == 200
    fetch("POST", gw.url + "/v1/responses", {"model": "up/failing", "input": "Hi"})  # no scripted reply: a 5xx
    assert gw.gateway.pipeline.busy == {}


@pytest.mark.parametrize("limit", ["%C2%B2", "9" * 5000, "%D9%A1", "-1", "1.0", "", "0"])
def test_input_items_limit_is_a_400_whatever_its_text(server: ScriptedServer, make_gateway, limit: str) -> None:
    gw = make_gateway()
    server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}))
    response_id = create(gw, {"input": "Hi"}).json()["id"]
    reply = fetch("GET", gw.url + f"/v1/responses/{response_id}/input_items?limit={limit}")
    assert reply.status == 400, reply.body[:300]
    assert reply.error["param"] == "limit"
    assert fetch("GET", gw.url + f"/v1/responses/{response_id}/input_items?limit=1").status == 200


# ---------------------------------------------------------------------------- what an upstream sends


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_an_upstream_retry_field_of_any_length_is_ignored(server: ScriptedServer, make_gateway, path: str) -> None:
    gw = make_gateway()
    server.script(
        sse_reply(b"retry: " + b"9" * 5000 + b"\n\n", chunk(role="assistant", content=""), chunk("ok"), "[DONE]")
    )
    body: dict[str, Any] = {"model": "up/x", "stream": True}
    body.update({"input": "Hi"} if path == "/v1/responses" else {"messages": [{"role": "user", "content": "Hi"}]})
    reply = fetch("POST", gw.url + path, body)
    assert reply.status == 200
    assert b'"ok"' in reply.body
    last = reply.events()[-1]
    assert last == b"data: [DONE]" if path == "/v1/chat/completions" else b"response.completed" in last


# ---------------------------------------------------------------------------- the response cache, in memory


def test_memory_cache_is_bounded_in_bytes(server: ScriptedServer, tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[providers.up]\napi_base = "{server.base}"\n\n[routes.cached]\ntargets = ["up/a"]\ncache_ttl_s = 60\n'
    )
    state = MemoryState(max_cache_entry_bytes=2_000, max_cache_bytes=3_000)
    log: list[str] = []
    gw = Running(Gateway(load_config(str(path)), state, log_stream=Lines(log, lambda line: None)), log).start()

    def ask(prompt: str, size: int, expect: str) -> None:
        if expect == "miss":  # a hit takes no scripted reply
            server.script(json_reply({"choices": [{"message": {"role": "assistant", "content": prompt * size}}]}))
        body = {"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
        reply = fetch("POST", gw.url + "/v1/chat/completions", body)
        assert reply.status == 200
        assert (prompt, reply.headers["x-llmrelay-cache"]) == (prompt, expect)

    try:
        for prompt in "abc":  # ~1.2 KB each: 3 KB holds two
            ask(prompt, 1_200, "miss")
        ask("c", 1_200, "hit")
        ask("a", 1_200, "miss")  # the oldest went to make room
        ask("big", 1_000, "miss")  # 3 KB: larger than an entry may be
        ask("big", 1_000, "miss")
        assert len(server.requests) == 6
    finally:
        gw.stop()


# ---------------------------------------------------------------------------- error bodies stay small


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "message", "role": "Q" * 200_000, "content": "x"}]}, "input[0].role"),
        ({"input": "x", "tool_choice": "Q" * 200_000}, "tool_choice"),
        ({"input": "x", "previous_response_id": "Q" * 200_000}, "previous_response_id"),
        ({"input": "x", "Q" * 200_000: 1}, "Q" * 253 + "..."),
    ],
)
def test_an_error_quotes_at_most_a_few_kb_of_what_was_sent(
    server: ScriptedServer, make_gateway, body: dict[str, Any], param: str
) -> None:
    gw = make_gateway(settings="strict_fields = true")
    reply = create(gw, body)
    assert reply.status == 400
    error = reply.error
    assert error["param"] == param
    assert "QQQQ" in error["message"] and error["message"].endswith("...")  # it quotes, and is cut
    assert len(reply.body) < 5_000
    assert not server.requests
