"""Transport: connection reuse, idle and total timeouts, sync use from scripts, threads and running loops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import MESSAGES, acollect, collect, collect_error, kinds, make_provider, text_of
from scripted_server import Reply, chunk, completion, json_reply, sse, sse_reply, usage

from llmrelay.errors import ConnectError, RateLimitError, RelayError, StreamIncompleteError, TimeoutError
from llmrelay.http.session import close_sessions
from llmrelay.responses import FinishReason, ProviderInfo


def answer(text: str = "ok") -> Reply:
    return sse_reply(chunk(text), chunk(finish_reason="stop"), chunk(choices=[], usage=usage()), "[DONE]")


# ------------------------------------------------------------------ connection reuse


def test_ten_sequential_calls_use_one_connection(server) -> None:
    for index in range(10):
        server.script(answer(f"s{index}") if index % 2 else json_reply(completion(f"j{index}")))
    provider = make_provider(server)

    async def main() -> list[str]:
        texts = []
        for index in range(10):
            texts.append(text_of(await acollect(provider, stream=bool(index % 2))))
        return texts

    assert asyncio.run(main()) == [f"s{i}" if i % 2 else f"j{i}" for i in range(10)]
    assert len(server.requests) == 10
    assert server.connections == 1


def test_breaking_at_finish_reason_keeps_the_connection(server) -> None:
    provider = make_provider(server)
    for index in range(10):
        server.script(answer(f"t{index}"))

    async def main() -> list[str]:
        texts = []
        for _ in range(10):
            pieces = []
            async for item in provider.create_async_generator("", MESSAGES, stream=True):
                if isinstance(item, str):
                    pieces.append(item)
                if isinstance(item, FinishReason):
                    break
            texts.append("".join(pieces))
        return texts

    assert asyncio.run(main()) == [f"t{i}" for i in range(10)]
    assert server.connections == 1


def test_error_statuses_keep_the_connection(server) -> None:
    provider = make_provider(server)
    server.script(json_reply({"error": {"message": "slow"}}, 429), json_reply({"error": "bad"}, 400), answer())

    async def main() -> str:
        for status in (429, 400):
            with pytest.raises(RelayError) as caught:
                await acollect(provider)
            assert caught.value.status == status
        return text_of(await acollect(provider, stream=True))

    assert asyncio.run(main()) == "ok"
    assert server.connections == 1


def test_sync_sequential_calls_reuse_a_connection(server) -> None:
    provider = make_provider(server)
    for index in range(10):
        server.script(answer(str(index)))
    texts = [text_of(list(provider.create_completion("", MESSAGES, stream=True))) for _ in range(10)]
    assert texts == [str(i) for i in range(10)]
    assert server.connections == 1


def test_a_half_read_stream_is_not_reused(server) -> None:
    # The caller stops in the middle: that connection still carries the rest of the answer, so
    # it must be closed, and the next call must get a clean one.
    provider = make_provider(server)
    server.script(
        Reply(headers=[("Content-Type", "text/event-stream")], writes=[sse(chunk("a")), 0.3, sse(chunk("b"))]),
        answer("second"),
    )

    async def main() -> str:
        generator = provider.create_async_generator("", MESSAGES, stream=True)
        async for item in generator:
            if isinstance(item, str):
                break
        await generator.aclose()
        return text_of(await acollect(provider, stream=True))

    assert asyncio.run(main()) == "second"
    assert server.connections == 2


def test_a_request_dropped_on_a_new_connection_is_not_sent_twice(server) -> None:
    # The server read the request and hung up without answering: sending the POST again could
    # run (and bill) the generation twice, so the error goes to the caller.
    server.script(Reply(raw=b""), answer("must not be reached"))
    _, error = collect_error(make_provider(server))
    assert isinstance(error, ConnectError)
    assert len(server.requests) == 1


def test_a_pooled_connection_closed_by_the_server_is_retried_once(server) -> None:
    # The second request goes out on the pooled connection, which the server drops: that is the
    # keep-alive race, and the request is sent again once on a new connection.
    provider = make_provider(server)
    server.script(answer("first"), Reply(raw=b""), answer("second"))

    async def main() -> list[str]:
        return [text_of(await acollect(provider, stream=True)) for _ in range(2)]

    assert asyncio.run(main()) == ["first", "second"]
    assert [request.connection for request in server.requests] == [1, 1, 2]


def test_no_connection_cap_for_concurrent_calls(server) -> None:
    count = 12
    for _ in range(count):
        server.script(
            Reply(
                headers=[("Content-Type", "text/event-stream")],
                writes=[sse(chunk("x")), 0.3, sse(chunk(finish_reason="stop"))],
            )
        )
    provider = make_provider(server)

    async def main() -> list:
        return await asyncio.gather(*(acollect(provider, stream=True) for _ in range(count)))

    results = asyncio.run(main())
    assert [text_of(items) for items in results] == ["x"] * count
    # All were in flight at once: none waited for another's connection.
    assert server.connections == count


# ------------------------------------------------------------------ proxies

REMOTE = "http://llm.example.invalid/v1"


def test_proxy_argument(server) -> None:
    server.script(json_reply(completion("via proxy")))
    provider = make_provider(server, api_base=REMOTE)
    assert text_of(collect(provider, proxy=server.url)) == "via proxy"
    (request,) = server.requests
    assert request.path == f"{REMOTE}/chat/completions"
    assert request.headers["host"] == "llm.example.invalid"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_proxy_from_environment(server, monkeypatch, variable: str) -> None:
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, server.url)
    server.script(json_reply(completion("via env proxy")))
    assert text_of(collect(make_provider(server, api_base=REMOTE))) == "via env proxy"
    assert server.requests[0].path == f"{REMOTE}/chat/completions"


def test_environment_proxy_skips_localhost_and_no_proxy(server, monkeypatch) -> None:
    from llmrelay.http.session import env_proxy

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example,.corp.example")
    server.script(json_reply(completion("direct")))
    assert text_of(collect(make_provider(server))) == "direct"  # 127.0.0.1 is never proxied
    assert env_proxy("https://api.openai.com/v1/models") == "http://proxy.example:3128"
    assert env_proxy("https://internal.example/v1") is None
    assert env_proxy("https://x.corp.example/v1") is None
    assert env_proxy("http://localhost:8080/v1") is None


def test_invalid_ssl_setting_is_a_value_error(server) -> None:
    with pytest.raises(ValueError, match="ssl"):
        collect(make_provider(server, ssl="yes"))
    assert server.requests == []


# ------------------------------------------------------------------ timeouts


def test_idle_read_timeout_on_a_stalled_stream(server) -> None:
    server.script(
        Reply(
            headers=[("Content-Type", "text/event-stream")],
            writes=[sse(chunk("partial ")), sse(chunk("text")), 2.0, sse(chunk(finish_reason="stop"))],
        )
    )
    started = time.monotonic()
    items, error = collect_error(make_provider(server), stream=True, timeout=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert isinstance(error, TimeoutError)
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == "partial text"
    assert text_of(items) == "partial text"
    assert "0.3" in str(error)


def test_a_steady_stream_longer_than_timeout_is_not_cut(server) -> None:
    pieces = [f"p{index} " for index in range(12)]
    server.script(sse_reply(*[chunk(piece) for piece in pieces], chunk(finish_reason="stop"), "[DONE]", delay=0.1))
    items = collect(make_provider(server), stream=True, timeout=0.3)
    assert text_of(items) == "".join(pieces)
    assert items[-1] == FinishReason("stop")


def test_idle_timeout_fires_after_a_steady_start_then_a_stall(server) -> None:
    # The idle timer is re-armed lazily: it must still fire `timeout` after the last byte, not after the first.
    writes: list[bytes | float] = []
    for index in range(8):
        writes += [sse(chunk(f"p{index} ")), 0.1]
    writes += [3.0, sse(chunk(finish_reason="stop"))]
    server.script(Reply(headers=[("Content-Type", "text/event-stream")], writes=writes))
    started = time.monotonic()
    items, error = collect_error(make_provider(server), stream=True, timeout=0.4)
    elapsed = time.monotonic() - started
    assert isinstance(error, TimeoutError)
    assert text_of(items) == "".join(f"p{index} " for index in range(8))
    # The last byte comes at ~0.7 s: the timeout is due at ~1.1 s (not at 0.4 s, not after the 3 s pause).
    assert 1.0 <= elapsed < 2.5


def test_a_shorter_timeout_applies_on_a_reused_connection(server) -> None:
    provider = make_provider(server)
    server.script(json_reply(completion("ok")))
    server.script(Reply(headers=[("Content-Type", "application/json")], writes=[3.0, b"{}"]))

    async def main() -> tuple[list, BaseException | None, float]:
        first = [item async for item in provider.create_async_generator("m", MESSAGES, timeout=60)]
        started = time.monotonic()
        try:
            async for _ in provider.create_async_generator("m", MESSAGES, timeout=0.3):
                pass
        except TimeoutError as error:
            return first, error, time.monotonic() - started
        finally:
            await close_sessions()
        return first, None, time.monotonic() - started

    first, error, elapsed = asyncio.run(main())
    assert text_of(first) == "ok"
    assert isinstance(error, TimeoutError)
    assert elapsed < 2.0
    assert server.connections == 1


def test_total_timeout_cuts_a_long_stream(server) -> None:
    pieces = [chunk(f"p{index} ") for index in range(30)]
    server.script(sse_reply(*pieces, chunk(finish_reason="stop"), "[DONE]", delay=0.1))
    started = time.monotonic()
    items, error = collect_error(make_provider(server), stream=True, timeout=5, total_timeout=0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert isinstance(error, TimeoutError)
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == text_of(items)
    assert error.partial_text.startswith("p0 p1 ")
    assert "total_timeout" in str(error) or "0.5" in str(error)


def test_total_timeout_before_the_answer_starts(server) -> None:
    server.script(Reply(head_delay=1.5, headers=[("Content-Type", "application/json")], writes=[b"{}"]))
    started = time.monotonic()
    _, error = collect_error(make_provider(server), timeout=10, total_timeout=0.3)
    assert time.monotonic() - started < 1.4
    assert isinstance(error, TimeoutError)


def test_timeout_reading_a_json_body(server) -> None:
    body = b'{"choices": [{"message": {"content": "slow"}}]}'
    server.script(
        Reply(headers=[("Content-Type", "application/json")], writes=[body[:10], 2.0, body[10:]], body_mode="length")
    )
    started = time.monotonic()
    _, error = collect_error(make_provider(server), timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert isinstance(error, TimeoutError)


# ------------------------------------------------------------------ sync use


def test_create_completion_from_a_plain_function(server) -> None:
    server.script(answer("sync answer"))
    items = list(make_provider(server).create_completion("", MESSAGES, stream=True))
    assert text_of(items) == "sync answer"
    assert kinds(items) == ["info", "text", "usage", "finish"]


def test_create_completion_raises_typed_errors(server) -> None:
    server.script(json_reply({"error": {"message": "nope"}}, 401))
    from llmrelay.errors import MissingAuthError

    with pytest.raises(MissingAuthError):
        list(make_provider(server).create_completion("", MESSAGES))


def test_create_completion_from_four_threads(server) -> None:
    def handler(request):
        word = request.json()["messages"][0]["content"]
        return sse_reply(
            chunk(word[:3], model=word), chunk(word[3:]), chunk(finish_reason="stop"), "[DONE]", delay=0.05
        )

    server.route("POST", "/v1/chat/completions", handler)
    provider = make_provider(server)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            messages = [{"role": "user", "content": f"thread-{number}"}]
            items = list(provider.create_completion("", messages, stream=True))
            assert isinstance(items[0], ProviderInfo) and items[0].model == f"thread-{number}"
            results[number] = text_of(items)
        except BaseException as error:  # collected and re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors, errors
    assert results == {number: f"thread-{number}" for number in range(4)}


def test_create_completion_inside_a_running_loop(server) -> None:
    server.script(answer("from inside"))
    provider = make_provider(server)

    async def main() -> list:
        return list(provider.create_completion("", MESSAGES, stream=True))

    assert text_of(asyncio.run(main())) == "from inside"


def test_under_uvloop_async_and_sync_calls(server) -> None:
    uvloop = pytest.importorskip("uvloop")
    server.script(answer("async on uvloop"), answer("sync on uvloop"))
    server.route("GET", "/v1/models", json_reply(["m"]))
    provider = make_provider(server)

    async def main() -> tuple[str, str, list[str]]:
        first = text_of(await acollect(provider, stream=True))
        second = text_of(list(provider.create_completion("", MESSAGES, stream=True)))
        return first, second, provider.get_models()

    assert uvloop.run(main()) == ("async on uvloop", "sync on uvloop", ["m"])


def test_create_completion_stopped_early_closes_cleanly(server) -> None:
    server.script(
        Reply(headers=[("Content-Type", "text/event-stream")], writes=[sse(chunk("a")), 0.5, sse(chunk("b"))]),
        answer("next"),
    )
    provider = make_provider(server)
    generator = provider.create_completion("", MESSAGES, stream=True)
    for item in generator:
        if isinstance(item, str):
            break
    generator.close()
    assert text_of(list(provider.create_completion("", MESSAGES, stream=True))) == "next"


class SimulatedInterruptError(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_sync_iteration_interrupted_while_waiting_closes_the_stream(server) -> None:
    # Like Ctrl-C during a stalled stream: the pending step is cancelled, the generator closed and
    # the connection dropped at once, not left open until the server gives up.
    pings: list[bytes | float] = [0.1, b": ping\n\n"] * 15  # keeps the stream alive, yields no item
    server.script(
        Reply(
            headers=[("Content-Type", "text/event-stream")],
            writes=[sse(chunk("a")), *pings, sse(chunk(finish_reason="stop"), "[DONE]")],
        )
    )

    def interrupt(signum, frame):
        raise SimulatedInterruptError

    previous = signal.signal(signal.SIGALRM, interrupt)
    items = []
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(SimulatedInterruptError):
            for item in make_provider(server).create_completion("", MESSAGES, stream=True):
                items.append(item)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert text_of(items) == "a"
    started = time.monotonic()
    assert server.wait_for(lambda: server.requests[0].client_disconnected, timeout=1.0)
    assert time.monotonic() - started < 1.0


def test_no_unclosed_session_warnings_at_exit(server) -> None:
    server.route("POST", "/v1/chat/completions", answer("bye"))
    script = textwrap.dedent(
        f"""
        import asyncio, gc, warnings
        warnings.simplefilter("always")
        from llmrelay import OpenaiTemplate

        class P(OpenaiTemplate):
            api_base = {server.base!r}
            default_model = "m"

        messages = [{{"role": "user", "content": "x"}}]

        async def main():
            return [item async for item in P.create_async_generator("", messages, stream=True)]

        print("".join(i for i in asyncio.run(main()) if isinstance(i, str)))
        print("".join(i for i in P.create_completion("", messages, stream=True) if isinstance(i, str)))
        gc.collect()
        """
    )
    env = {**os.environ, "PYTHONDEVMODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["bye", "bye"]
    assert "Unclosed" not in result.stderr, result.stderr
    assert "Task was destroyed" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


# ------------------------------------------------------------------ impersonation (curl_cffi)


def test_impersonate_chrome_streams_and_maps_errors(server) -> None:
    pytest.importorskip("curl_cffi")  # in the [test] extra, so CI runs this
    provider = make_provider(server, api_key="sk-imp")
    server.script(
        sse_reply(chunk(" Hel"), chunk("lo\n"), chunk(finish_reason="stop"), "[DONE]"),
        json_reply(completion(" whole ")),
        json_reply({"error": {"message": "slow down"}}, status=429, headers={"retry-after": "2"}),
    )
    streamed = collect(provider, stream=True, impersonate="chrome")
    assert text_of(streamed) == " Hello\n"
    assert streamed[-1] == FinishReason("stop")
    assert text_of(collect(provider, impersonate="chrome")) == " whole "
    _, error = collect_error(provider, impersonate="chrome")
    assert isinstance(error, RateLimitError) and error.retry_after == 2
    assert all("Chrome/" in request.headers["user-agent"] for request in server.requests)
    assert server.requests[0].headers.get_all("authorization") == ["Bearer sk-imp"]
    assert "sk-imp" not in str(error) and "sk-imp" not in repr(error)


# ------------------------------------------------------------------ SOCKS proxies (aiohttp-socks)


def test_socks5_proxy_carries_the_request(server) -> None:
    pytest.importorskip("aiohttp_socks")  # in the [test] extra, so CI runs this
    from socks_proxy import Socks5Proxy

    proxy = Socks5Proxy().start()
    try:
        server.script(
            sse_reply(chunk("through "), chunk("socks"), chunk(finish_reason="stop"), "[DONE]"),
            json_reply(completion("again")),
        )
        provider = make_provider(server)
        assert text_of(collect(provider, stream=True, proxy=proxy.url)) == "through socks"
        assert text_of(collect(provider, proxy=proxy.url)) == "again"
        assert proxy.targets and set(proxy.targets) == {("127.0.0.1", server.port)}
        assert len(server.requests) == 2
    finally:
        proxy.stop()


# ------------------------------------------------------------------ TLS and the ssl setting


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(tls_files):
    import ssl

    from scripted_server import ScriptedServer

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    https = ScriptedServer(ssl=context).start()
    try:
        yield https
    finally:
        https.stop()


def test_https_with_a_self_signed_certificate_and_the_ssl_setting(tls_server, tls_files) -> None:
    import ssl

    assert tls_server.url.startswith("https://")
    tls_server.script(
        sse_reply(chunk("secure "), chunk("stream"), chunk(finish_reason="stop"), "[DONE]"),
        json_reply(completion("trusted")),
        json_reply(completion("unverified")),
    )
    # Default: the certificate is verified, and this one is signed by nobody we trust.
    _, error = collect_error(make_provider(tls_server), stream=True)
    assert isinstance(error, ConnectError)
    assert "certificate not trusted: self-signed certificate" in str(error)
    # An SSLContext is used as is: trusting the certificate makes it work (streaming, over TLS).
    trusting = ssl.create_default_context(cafile=tls_files[0])
    provider = make_provider(tls_server, ssl=trusting)
    assert text_of(collect(provider, stream=True)) == "secure stream"
    assert text_of(collect(provider)) == "trusted"
    # ssl = False turns verification off.
    assert text_of(collect(make_provider(tls_server, ssl=False))) == "unverified"
    assert [request.path for request in tls_server.requests] == ["/v1/chat/completions"] * 3
