"""The sync ``Client``: scripts, threads, a running event loop, and no threads or loops left behind."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest
from helpers import make_provider
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, completion, json_reply, sse_reply

from llmrelay.client import Client

MESSAGES = [{"role": "user", "content": "Hi"}]


def echo(request: RecordedRequest) -> Reply:
    """Answers with the last user message, as JSON or as a stream, whichever was asked."""
    body = request.json()
    text = body["messages"][-1]["content"]
    if body.get("stream"):
        return sse_reply(chunk(text[:1], role="assistant"), chunk(text[1:]), chunk(finish_reason="stop"), "[DONE]")
    return json_reply(completion(text))


def client_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("llmrelay-client")]


def wait_until(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def text_of(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_with_block_leaves_no_thread_behind(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", echo)
    before = set(threading.enumerate())
    with Client(make_provider(server)) as client:
        assert client_threads() == []  # the loop starts on first use
        assert client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content == "Hi"
        assert len(client_threads()) == 1
    assert set(threading.enumerate()) == before
    assert client.closed
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.chat.completions.create(model="", messages=MESSAGES)
    assert set(threading.enumerate()) == before


def test_several_threads_share_one_client(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", echo)
    before = set(threading.enumerate())
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []
    client = Client(make_provider(server))

    def work(number: int) -> None:
        try:
            messages = [{"role": "user", "content": f"thread {number}"}]
            whole = client.chat.completions.create(model="", messages=messages).choices[0].message.content
            streamed = text_of(client.chat.completions.create(model="", messages=messages, stream=True))
            results[number] = (whole, streamed)
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=work, args=(number,)) for number in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    assert errors == []
    assert results == {number: (f"thread {number}",) * 2 for number in range(8)}
    assert len(client_threads()) == 1  # one loop thread serves every calling thread
    client.close()
    assert set(threading.enumerate()) == before
    assert len(server.requests) == 16


def test_inside_a_running_event_loop(server: ScriptedServer) -> None:
    """As in Jupyter: sync calls from code that runs on an event loop, no "loop is already running"."""
    server.route("POST", "/v1/chat/completions", echo)
    before = set(threading.enumerate())

    async def main() -> tuple[str, str]:
        with Client(make_provider(server)) as client:
            whole = client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content
            streamed = text_of(client.chat.completions.create(model="", messages=MESSAGES, stream=True))
        return whole, streamed

    assert asyncio.run(main()) == ("Hi", "Hi")
    assert set(threading.enumerate()) == before


def test_stopping_a_stream_early_closes_its_connection(server: ScriptedServer) -> None:
    server.script(sse_reply(chunk("first", role="assistant"), chunk("second"), end="keep_open"))
    before = set(threading.enumerate())
    with Client(make_provider(server)) as client:
        with client.chat.completions.create(model="", messages=MESSAGES, stream=True) as stream:
            for item in stream:
                if item.choices and item.choices[0].delta.content == "first":
                    break
        assert server.wait_for(lambda: server.requests[0].client_disconnected)
    assert set(threading.enumerate()) == before


def test_an_unclosed_client_stops_its_thread_when_collected(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", echo)

    def use_and_drop() -> str:
        client = Client(make_provider(server))
        return client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content

    assert use_and_drop() == "Hi"
    gc.collect()
    assert wait_until(lambda: client_threads() == [])


def test_a_stream_keeps_its_client_alive(server: ScriptedServer) -> None:
    """Iterating a stream of a client nobody else references still works (the stream holds the loop)."""
    server.route("POST", "/v1/chat/completions", echo)
    stream = Client(make_provider(server)).chat.completions.create(
        model="", messages=[{"role": "user", "content": "kept"}], stream=True
    )
    gc.collect()
    assert text_of(stream) == "kept"
    del stream
    gc.collect()
    assert wait_until(lambda: client_threads() == [])


def test_any_openai_template_subclass_works(server: ScriptedServer) -> None:
    """A hand-written provider with its own body hook, as a later llama.cpp test will use."""
    server.route("POST", "/v1/chat/completions", echo)

    class Shouting(make_provider(server)):  # type: ignore[misc]
        @classmethod
        def prepare_body(cls, body: dict[str, Any]) -> dict[str, Any]:
            body["messages"] = [{**m, "content": m["content"].upper()} for m in body["messages"]]
            return body

    with Client(provider=Shouting) as client:
        resp = client.chat.completions.create(model="", messages=MESSAGES)
    assert (resp.provider, resp.choices[0].message.content) == ("Shouting", "HI")
    assert MESSAGES == [{"role": "user", "content": "Hi"}]
