"""Routes (SPEC 8.6): fallback, round-robin, least-busy, cooldowns; and the response cache (8.7)."""

from __future__ import annotations

import asyncio
import hashlib

from raw import afetch, chat
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse_reply, usage

FIRST = "/v1/chat/completions"
SECOND = "/v1/second/chat/completions"
ERROR_500 = json_reply({"error": {"message": "down"}}, 500)


def paths(server: ScriptedServer) -> list[str]:
    return [request.route_path for request in server.requests if request.method == "POST"]


def test_fallback_moves_on_before_output(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.script(ERROR_500, json_reply(completion("from b", model="b")))
    reply = chat(gw.url, "fast")
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "from b"
    assert reply.headers["x-llmrelay-provider"] == "up2" and reply.headers["x-llmrelay-model"] == "b"
    assert paths(server) == [FIRST, SECOND]
    assert [r.json()["model"] for r in server.requests] == ["a", "b"]


def test_non_retryable_error_is_not_retried(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.script(json_reply({"error": {"message": "bad field", "code": "bad_field"}}, 400))
    reply = chat(gw.url, "fast")
    assert reply.status == 400 and reply.error["code"] == "bad_field"
    assert paths(server) == [FIRST]


def test_no_retry_after_output(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.script(sse_reply(chunk("partial"), end="abrupt"))
    reply = chat(gw.url, "fast", stream=True)
    assert reply.status == 200
    assert b"[DONE]" not in reply.body and b'"error"' in reply.events()[-1]
    assert paths(server) == [FIRST]  # the second target was never asked


def test_stream_fails_over_before_first_event(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    server.script(sse_reply(end="abrupt"), sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]"))
    reply = chat(gw.url, "fast", stream=True)
    assert reply.status == 200 and reply.events()[-1] == b"data: [DONE]"
    assert reply.headers["x-llmrelay-provider"] == "up2"
    assert paths(server) == [FIRST, SECOND]


def test_all_failing_reports_most_informative(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(
        '[providers.dead]\napi_base = "http://127.0.0.1:9/v1"\n'
        '[routes.fast]\ntargets = ["dead/a", "up/b"]\n[routes.other]\ntargets = ["dead/a", "up2/c"]\n'
    )
    server.script(json_reply({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "3"}))
    reply = chat(gw.url, "fast")
    assert reply.status == 429 and reply.headers["retry-after"] == "3"
    server.script(ERROR_500)  # (up/b cools down for the 3 s it was told; up2/c is another target)
    reply = chat(gw.url, "other")
    assert reply.status == 502 and "down" in reply.error["message"]


def test_round_robin_rotates_the_first_target(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.rr]\ntargets = ["up/a", "up2/b"]\nstrategy = "round-robin"\n')
    for _ in range(4):
        server.script(json_reply(completion("x")))
        assert chat(gw.url, "rr").status == 200
    assert paths(server) == [FIRST, SECOND, FIRST, SECOND]


def test_least_busy_avoids_the_busy_target(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.lb]\ntargets = ["up/a", "up2/b"]\nstrategy = "least-busy"\n')
    server.route(
        "POST",
        FIRST,
        Reply(
            headers={"Content-Type": "application/json"},
            head_delay=1.0,
            writes=[b'{"choices":[{"message":{"content":"a"},"finish_reason":"stop"}]}'],
            body_mode="length",
        ),
    )
    server.route("POST", SECOND, json_reply(completion("b")))

    async def both() -> list[str]:
        first = asyncio.create_task(
            afetch(
                "POST", gw.url + "/v1/chat/completions", {"model": "lb", "messages": [{"role": "user", "content": "1"}]}
            )
        )
        assert await server.wait_for_async(lambda: server.requests, 5.0)  # the first is in flight on up/a
        second = await afetch(
            "POST", gw.url + "/v1/chat/completions", {"model": "lb", "messages": [{"role": "user", "content": "2"}]}
        )
        return [(await first).headers["x-llmrelay-provider"], second.headers["x-llmrelay-provider"]]

    assert asyncio.run(both()) == ["up", "up2"]


def test_cooldown_after_failures_skips_target(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\ncooldown_after = 2\ncooldown_s = 60\n')
    server.route("POST", FIRST, ERROR_500)
    server.route("POST", SECOND, json_reply(completion("b")))
    for _ in range(3):
        assert chat(gw.url, "fast").status == 200
    # up/a failed twice, then cooled down: the third request went straight to up2.
    assert paths(server) == [FIRST, SECOND, FIRST, SECOND, SECOND]
    assert gw.run(gw.gateway.state.cooling("up/a")) > 50
    metrics = asyncio.run(afetch("GET", gw.url + "/metrics")).body.decode()
    assert 'llmrelay_cooldown_skips_total{target="up/a"} 1.0' in metrics
    assert 'llmrelay_upstream_errors_total{code="upstream_error",provider="up"} 2.0' in metrics


def test_retry_after_cools_at_once(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\ncooldown_after = 5\n')
    server.route("POST", FIRST, json_reply({"error": {"message": "limit"}}, 429, headers={"Retry-After": "40"}))
    server.route("POST", SECOND, json_reply(completion("b")))
    assert chat(gw.url, "fast").status == 200
    assert chat(gw.url, "fast").status == 200
    assert paths(server) == [FIRST, SECOND, SECOND]


def test_every_target_cooling_fails_with_an_error(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.one]\ntargets = ["up/a"]\ncooldown_after = 1\n')
    server.route("POST", FIRST, ERROR_500)
    assert chat(gw.url, "one").status == 502
    reply = chat(gw.url, "one")
    assert reply.status == 502 and "cooling down" in reply.error["message"]
    assert len(paths(server)) == 1


CACHE = '[routes.cached]\ntargets = ["up/a"]\ncache_ttl_s = 60\n'


def test_cache_hit_miss_and_bypass(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(CACHE)
    server.route("POST", FIRST, json_reply(completion("cached answer", usage=usage(1, 2))))
    first = chat(gw.url, "cached", temperature=0, user="u1")
    assert first.headers["x-llmrelay-cache"] == "miss"
    second = chat(gw.url, "cached", temperature=0, user="u2", stream_options=None)
    assert second.headers["x-llmrelay-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"] and second.json()["usage"] == first.json()["usage"]
    assert len(paths(server)) == 1
    assert chat(gw.url, "cached", temperature=1).headers["x-llmrelay-cache"] == "miss"  # another parameter
    bypass = chat(gw.url, "cached", temperature=0, headers={"Cache-Control": "no-cache"})
    assert "x-llmrelay-cache" not in bypass.headers or bypass.headers["x-llmrelay-cache"] != "hit"
    assert len(paths(server)) == 3
    metrics = asyncio.run(afetch("GET", gw.url + "/metrics")).body.decode()
    assert 'llmrelay_cache_total{result="hit"} 1.0' in metrics


def test_cache_is_per_key_unless_shared(server: ScriptedServer, make_gateway) -> None:
    keys = {name: f"sk-llmrelay-{name}" for name in ("a", "b")}
    entries = "".join(
        f'[[keys]]\nname = "{name}"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
        for name, key in keys.items()
    )
    gw = make_gateway(CACHE + entries)
    server.route("POST", FIRST, json_reply(completion("x")))
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    assert chat(gw.url, "cached", headers=auth["a"]).headers["x-llmrelay-cache"] == "miss"
    assert chat(gw.url, "cached", headers=auth["b"]).headers["x-llmrelay-cache"] == "miss"
    assert chat(gw.url, "cached", headers=auth["a"]).headers["x-llmrelay-cache"] == "hit"


def test_streamed_answer_fills_cache_and_replays_as_chunks(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(CACHE)
    server.script(
        sse_reply(
            chunk("Hel"), chunk("lo"), chunk(finish_reason="stop"), chunk(choices=[], usage=usage(1, 2)), "[DONE]"
        )
    )
    live = chat(gw.url, "cached", stream=True)
    assert live.headers["x-llmrelay-cache"] == "miss"
    replay = chat(gw.url, "cached", stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-llmrelay-cache"] == "hit"
    chunks = replay.chunks()
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [t for t in texts if t] == ["Hel", "lo"]
    assert chunks[-1]["usage"]["total_tokens"] == 3 and replay.events()[-1] == b"data: [DONE]"
    whole = chat(gw.url, "cached")  # a non-streamed request is answered from the streamed answer
    assert whole.headers["x-llmrelay-cache"] == "hit"
    assert whole.json()["choices"][0]["message"]["content"] == "Hello"
    assert len(paths(server)) == 1


def test_cut_short_answer_is_never_cached(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(CACHE)
    server.script(sse_reply(chunk("Hel"), end="abrupt"), json_reply(completion("full")))
    assert b'"error"' in chat(gw.url, "cached", stream=True).body
    reply = chat(gw.url, "cached", stream=True)
    assert reply.headers["x-llmrelay-cache"] == "miss"
    assert len(paths(server)) == 2
