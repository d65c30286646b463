"""Reloading the configuration without a restart: SIGHUP / ``llmrelay serve --reload PIDFILE`` re-read the file,
check it whole and swap it in for new requests; a bad file leaves the running configuration; key limits and
cooldowns go on counting; with ``--workers`` every worker reloads."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from gateway_support import Lines, llmrelay_command
from raw import afetch, chat
from scripted_server import Reply, ScriptedServer, chunk, completion, json_reply, sse

from llmrelay.server.reload import reload_gateway

FIRST = "/v1/chat/completions"
SECOND = "/v1/second/chat/completions"


def key_entry(name: str, **limits: int) -> str:
    digest = hashlib.sha256(f"sk-llmrelay-{name}-0123456789abcdef".encode()).hexdigest()
    return f'[[keys]]\nname = "{name}"\nsha256 = "{digest}"\n' + "".join(f"{k} = {v}\n" for k, v in limits.items())


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sk-llmrelay-{name}-0123456789abcdef"}


def rewrite(path: str | Path, old: str, new: str) -> None:
    """Edit the gateway's configuration file in place: its ``old`` part becomes ``new``."""
    text = Path(path).read_text()
    assert old in text, text
    Path(path).write_text(text.replace(old, new))


def paths(server: ScriptedServer) -> list[str]:
    return [request.route_path for request in server.requests if request.method == "POST"]


PAIR = '[routes.pair]\ntargets = ["up/a", "up2/b"]\ncooldown_after = 1\ncooldown_s = 600\n'
BEFORE = key_entry("alice", rpm=3) + PAIR + '[routes.fast]\ntargets = ["up/a"]\n'
AFTER = (
    key_entry("alice", rpm=3)
    + key_entry("bob")
    + PAIR
    + '[routes.fast]\ntargets = ["up2/b"]\n[routes.late]\ntargets = ["up2/b"]\n'
)


def test_reload_swaps_routes_and_keys_and_keeps_limits_and_cooldowns(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway(BEFORE)
    path = Path(gw.gateway.config.path)
    server.route("POST", FIRST, json_reply({"error": {"message": "down"}}, 500))
    server.route("POST", SECOND, json_reply(completion("b")))
    assert chat(gw.url, "pair", auth("alice")).status == 200  # up/a failed: cooling for 600 s; alice: 1 of 3
    assert chat(gw.url, "fast", auth("bob")).status == 401  # no bob yet

    rewrite(path, BEFORE, AFTER)
    said: list[str] = []
    assert gw.run(reload_gateway(gw.gateway, Lines(said, lambda line: None)))  # type: ignore[arg-type]
    assert len(said) == 1 and f"reloaded {path} (" in said[0] and "routes: pair, fast, late; keys: 2" in said[0], said

    assert chat(gw.url, "fast", auth("alice")).status == 200  # the new target of fast; alice: 2 of 3
    assert chat(gw.url, "pair", auth("alice")).status == 200  # up/a still cooling: straight to up2; 3 of 3
    assert paths(server) == [FIRST, SECOND, SECOND, SECOND]
    assert chat(gw.url, "fast", auth("alice")).status == 429  # her rpm window survived the reload
    assert chat(gw.url, "fast", auth("bob")).status == 200  # the new key
    assert chat(gw.url, "late", auth("bob")).status == 200  # the new route, named in the metrics
    metrics = asyncio.run(afetch("GET", gw.url + "/metrics")).body.decode()
    assert 'route="late",status="200"' in metrics, metrics

    # A file with a mistake: logged, and the running configuration stays.
    rewrite(path, AFTER, AFTER + '[routes.broken]\ntargets = ["up/a"]\nstrategy = "best"\n')
    said.clear()
    assert not gw.run(reload_gateway(gw.gateway, Lines(said, lambda line: None)))  # type: ignore[arg-type]
    assert len(said) == 1 and "reload failed, still serving the previous configuration" in said[0], said
    assert "routes.broken.strategy: unknown strategy 'best'" in said[0]
    assert chat(gw.url, "fast", auth("bob")).status == 200
    listed = asyncio.run(afetch("GET", gw.url + "/v1/models", headers=auth("bob"))).json()["data"]
    assert "fast" in [m["id"] for m in listed] and "broken" not in [m["id"] for m in listed]


def test_a_stream_in_flight_finishes_on_the_configuration_it_started_with(server: ScriptedServer, make_gateway) -> None:
    gw = make_gateway('[routes.fast]\ntargets = ["up/a"]\n')
    slow = [sse(chunk("one")), 1.0, sse(chunk(" two"), chunk(finish_reason="stop"), "[DONE]")]
    server.route("POST", FIRST, Reply(headers={"Content-Type": "text/event-stream"}, writes=slow))
    server.route("POST", SECOND, json_reply(completion("from b")))

    async def main() -> None:
        body = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
        streaming = asyncio.create_task(afetch("POST", gw.url + "/v1/chat/completions", body))
        assert await server.wait_for_async(lambda: len(server.requests) == 1)
        rewrite(gw.gateway.config.path, 'targets = ["up/a"]', 'targets = ["up2/b"]')
        reloaded = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(reload_gateway(gw.gateway), gw.loop))
        assert await reloaded
        fresh = await afetch("POST", gw.url + "/v1/chat/completions", {**body, "stream": False})
        assert fresh.headers["x-llmrelay-provider"] == "up2" and server.requests[-1].json()["model"] == "b"
        old = await streaming
        assert old.status == 200 and old.headers["x-llmrelay-provider"] == "up"
        texts = [c["choices"][0]["delta"].get("content") for c in old.chunks() if c["choices"]]
        assert "".join(t for t in texts if t) == "one two" and old.body.endswith(b"data: [DONE]\n\n")

    asyncio.run(main())


def test_a_request_in_flight_falls_back_on_the_providers_it_started_with(server: ScriptedServer, make_gateway) -> None:
    """The route's second target is moved to another URL by a reload while a request waits on the first target:
    that request falls back to the second target where it was, new requests go to the new URL."""
    gw = make_gateway('[routes.fast]\ntargets = ["up/a", "up2/b"]\n')
    slow_failure = json_reply({"error": {"message": "down"}}, 500)
    slow_failure.head_delay = 1.0
    server.route("POST", FIRST, slow_failure)
    server.route("POST", SECOND, json_reply(completion("from second")))
    server.route("POST", "/v1/third/chat/completions", json_reply(completion("from third")))

    async def main() -> None:
        waiting = asyncio.create_task(afetch("POST", gw.url + "/v1/chat/completions", BODY))
        assert await server.wait_for_async(lambda: len(server.requests) == 1)
        rewrite(gw.gateway.config.path, f'"{server.base}/second"', f'"{server.base}/third"')
        assert await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(reload_gateway(gw.gateway), gw.loop))
        old = await waiting
        assert old.status == 200 and old.json()["choices"][0]["message"]["content"] == "from second"
        fresh = await afetch("POST", gw.url + "/v1/chat/completions", BODY)
        assert fresh.status == 200 and fresh.json()["choices"][0]["message"]["content"] == "from third"

    asyncio.run(main())
    assert paths(server) == [FIRST, SECOND, FIRST, "/v1/third/chat/completions"]


BODY = {"model": "fast", "messages": [{"role": "user", "content": "Hi"}]}


def wait_for_lines(lines: list[str], word: str, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in lines if word in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_installed_command_reloads_every_worker(
    server: ScriptedServer, spawn_gateway, tmp_path: Path, workers: int
) -> None:
    pid_file = tmp_path / "gateway.pid"
    gw = spawn_gateway('[routes.old]\ntargets = ["up2/b"]\n', "--workers", str(workers), "--pid-file", str(pid_file))
    assert pid_file.read_text().strip() == str(gw.process.pid)
    server.route("POST", SECOND, json_reply(completion("b")))
    config = tmp_path / "spawned0.toml"

    async def statuses(model: str) -> list[int]:
        # One connection per request, so that with --workers every worker answers some.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            found = []
            for _ in range(12):
                body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
                async with session.post(gw.base + "/chat/completions", json=body) as response:
                    found.append(response.status)
            return found

    assert 200 not in asyncio.run(statuses("new"))  # no such route yet: the default provider, unscripted there
    rewrite(config, "[routes.old]", "[routes.new]")
    done = subprocess.run([llmrelay_command(), "serve", "--reload", str(pid_file)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    reloaded = wait_for_lines(gw.lines, "reloaded", workers)
    assert len(reloaded) == workers and len({line.split(":")[0] for line in reloaded}) == workers, gw.lines
    assert asyncio.run(statuses("new")) == [200] * 12

    config.write_text("[routes.new]\nnot toml")
    gw.process.send_signal(signal.SIGHUP)
    assert len(wait_for_lines(gw.lines, "reload failed", workers)) == workers, gw.lines
    assert asyncio.run(statuses("new")) == [200] * 12
    assert gw.terminate() == 0
    assert not pid_file.exists()
    assert not [line for line in gw.lines if "Traceback" in line]
