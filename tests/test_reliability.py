"""Reliability of the transport (issue 11, issue 8): no hang, no leak, no obscure error, no key in any error.

Every test talks over real sockets to the scripted server; waits are bounded so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import textwrap
import weakref
from typing import Any

import pytest
from helpers import SECRET, acollect, collect_error, make_provider, text_of
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, completion, json_reply, sse

from llmrelay import OpenaiTemplate
from llmrelay.client import AsyncClient, Client
from llmrelay.client.retry import BASE_DELAY, retry_delay
from llmrelay.errors import ConnectError, ResponseError, ServerError, StreamIncompleteError
from llmrelay.http import session as session_module
from llmrelay.http._aiohttp_hooks import LAZY_TIMER, Connector, LazyReadTimeoutHandler, hook_problems
from llmrelay.http.checks import DEFAULT_TIMEOUT, check_api_key, check_headers, check_timeout
from llmrelay.http.pool import get_session
from llmrelay.http.session import open_response
from llmrelay.http.status import parse_retry_after, redact, redact_error
from llmrelay.http.url import check_api_base, join_url

MESSAGES = [{"role": "user", "content": "Hi"}]
BOUND = 20.0  # seconds: no single call here may take longer (a hang fails instead of blocking the suite)


class Sleeps:
    """An injected sleep that records the requested delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def run(coroutine: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, BOUND)

    return asyncio.run(bounded())


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception reachable through ``__cause__`` / ``__context__``."""
    found: list[BaseException] = []
    pending = [error]
    while pending:
        link = pending.pop()
        if any(link is seen for seen in found):
            continue
        found.append(link)
        pending.extend(linked for linked in (link.__cause__, link.__context__) if linked is not None)
    return found


def assert_no_key_in_chain(error: BaseException, secret: str = SECRET) -> None:
    for link in chain(error):
        texts = [str(link), repr(link), *(repr(arg) for arg in link.args)]
        texts += [str(getattr(link, name, "")) for name in ("message", "body", "code", "type")]
        for text in texts:
            assert secret.lower() not in text.lower(), f"{type(link).__name__}: {text}"


def raw_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# ------------------------------------------------------------ 1. retry-after nan / inf / garbage


NON_FINITE = [
    {"retry-after": "nan"},
    {"retry-after-ms": "nan"},
    {"retry-after": "inf"},
    {"retry-after-ms": "inf"},
    {"retry-after": "-inf"},
    {"retry-after": "1e999"},
    {"retry-after-ms": "NaN", "retry-after": "soon"},
]


def busy(headers: dict[str, str]) -> Reply:
    return json_reply({"error": {"message": "busy", "type": "server_error"}}, 503, headers)


@pytest.mark.parametrize("headers", NON_FINITE)
def test_a_non_finite_retry_after_is_ignored_by_client(server: ScriptedServer, headers: dict[str, str]) -> None:
    server.script(busy(headers), json_reply(completion("fine")))
    sleeps = Sleeps()
    with Client(make_provider(server), max_retries=2, sleep=sleeps) as client:
        assert client.chat.completions.create(model="", messages=MESSAGES).choices[0].message.content == "fine"
    assert len(server.requests) == 2
    # the backoff applied instead: 0.5 s less up to 25 % jitter
    assert len(sleeps.delays) == 1 and 0.75 * BASE_DELAY <= sleeps.delays[0] <= BASE_DELAY


@pytest.mark.parametrize("headers", NON_FINITE[:4])
def test_a_non_finite_retry_after_is_ignored_by_async_client(server: ScriptedServer, headers: dict[str, str]) -> None:
    server.script(busy(headers), json_reply(completion("fine")))
    sleeps = Sleeps()

    async def main() -> str:
        client = AsyncClient(make_provider(server), max_retries=2, sleep=sleeps)
        answer = await client.chat.completions.create(model="", messages=MESSAGES)
        return answer.choices[0].message.content

    assert run(main()) == "fine"
    assert len(sleeps.delays) == 1 and math.isfinite(sleeps.delays[0]) and sleeps.delays[0] <= BASE_DELAY


def test_retry_after_nan_with_the_real_sleep_does_not_hang(server: ScriptedServer) -> None:
    server.script(busy({"retry-after": "nan"}), json_reply(completion("fine")))

    async def main() -> str:
        answer = await AsyncClient(make_provider(server)).chat.completions.create(model="", messages=MESSAGES)
        return answer.choices[0].message.content

    assert run(main()) == "fine"


def test_retry_after_parser_and_retry_delay_refuse_non_finite_values() -> None:
    for headers in NON_FINITE:
        assert parse_retry_after(headers) is None, headers
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "3"}) == 3.0
    for value in (math.nan, math.inf, -math.inf, "5", True):
        delay = retry_delay(ServerError("busy", status=503, retry_after=value), 0, 2)  # type: ignore[arg-type]
        assert delay is not None and 0.75 * BASE_DELAY <= delay <= BASE_DELAY, value
    assert retry_delay(ServerError("busy", status=503, retry_after=61.0), 0, 2) is None  # SPEC 5: raise at once


# ------------------------------------------------------------ 2. bad chunked framing after the headers


def bad_framing_after_headers() -> Reply:
    """Valid headers and a first chunk, then (in a later segment) a chunk size that is not hex; socket held open."""
    return Reply(
        headers=[("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")],
        body_mode="close",
        writes=[raw_chunk(sse(chunk("partial"))), 0.05, b"zz-not-hex\r\nmore\r\n"],
        end="keep_open",
        keep_open_timeout=BOUND,
    )


PARSER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import http_parser
    from llmrelay import OpenaiTemplate
    from llmrelay.errors import RelayError

    print(http_parser.HttpResponseParser.__module__)
    Provider = type("P", (OpenaiTemplate,), {"api_base": sys.argv[1], "default_model": "m"})

    async def main():
        try:
            async for _ in Provider.create_async_generator("", [{"role": "user", "content": "Hi"}], stream=True,
                                                           timeout=float(sys.argv[2])):
                pass
        except RelayError as error:
            return f"{type(error).__name__}|{getattr(error, 'partial_text', None)}"
        except BaseException as error:
            return f"RAW {type(error).__module__}.{type(error).__name__}: {error}"
        return "no error"

    print(asyncio.run(asyncio.wait_for(main(), 15)))
    """
)


@pytest.mark.parametrize("parser", ["c", "python"])
def test_bad_chunked_framing_after_the_headers_is_a_stream_error_not_a_hang(
    server: ScriptedServer, parser: str
) -> None:
    server.script(bad_framing_after_headers())
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1" if parser == "python" else ""}
    if parser == "c":
        env.pop("AIOHTTP_NO_EXTENSIONS")
    # timeout=5: the error must come from the framing itself, at once, not from any timer
    result = subprocess.run(
        [sys.executable, "-c", PARSER_SCRIPT, server.base, "5"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    module, outcome = result.stdout.split()[0], result.stdout.strip().splitlines()[-1]
    assert module == ("aiohttp._http_parser" if parser == "c" else "aiohttp.http_parser")
    assert outcome == "StreamIncompleteError|partial"


def test_bad_chunked_framing_in_process_is_a_stream_error_with_the_partial_text(server: ScriptedServer) -> None:
    server.script(bad_framing_after_headers())
    provider = make_provider(server)

    async def main() -> BaseException:
        try:
            await acollect(provider, stream=True, timeout=1)
        except Exception as error:
            return error
        raise AssertionError("no error")

    error = run(main())
    assert isinstance(error, StreamIncompleteError)
    assert error.partial_text == "partial"
    assert "not valid HTTP" in str(error)


def test_bad_chunked_framing_through_a_socks_proxy_is_a_stream_error(server: ScriptedServer) -> None:
    pytest.importorskip("aiohttp_socks")
    from socks_proxy import Socks5Proxy

    proxy = Socks5Proxy().start()
    try:
        server.script(bad_framing_after_headers())
        provider = make_provider(server)

        async def main() -> tuple[BaseException, list[str]]:
            try:
                await acollect(provider, stream=True, timeout=5, proxy=proxy.url)
            except Exception as error:
                return error, hook_problems(get_session(proxy.url).connector)
            raise AssertionError("no error")

        error, problems = run(main())
    finally:
        proxy.stop()
    assert problems == []  # the SOCKS connector's connections use our protocol too
    assert isinstance(error, StreamIncompleteError) and error.partial_text == "partial"


# ------------------------------------------------------------ 3. one asyncio.run per call leaks nothing


def test_asyncio_run_per_call_keeps_no_loop_or_session_alive(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", json_reply(completion("ok")))
    provider = make_provider(server)
    loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
    sessions: weakref.WeakSet[Any] = weakref.WeakSet()

    async def one() -> str:
        loops.add(asyncio.get_running_loop())
        sessions.add(get_session())
        return text_of(await acollect(provider))

    runs = 500
    for _ in range(runs):
        assert asyncio.run(one()) == "ok"
    gc.collect()
    assert len(server.requests) == runs
    assert len(loops) <= 2, f"{len(loops)} event loops still alive after {runs} asyncio.run() calls"
    assert len(sessions) <= 2, f"{len(sessions)} sessions still alive after {runs} asyncio.run() calls"


def test_a_manually_run_loop_is_released_after_shutdown_asyncgens(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", json_reply(completion("ok")))
    provider = make_provider(server)
    loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
    for _ in range(20):
        loop = asyncio.new_event_loop()
        loops.add(loop)
        assert text_of(loop.run_until_complete(acollect(provider))) == "ok"
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    del loop
    gc.collect()
    assert len(loops) == 0


# ------------------------------------------------------------ 5. timeouts are checked before any request


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, "10", True, b"1", [1]])
@pytest.mark.parametrize("name", ["timeout", "total_timeout"])
def test_a_bad_timeout_is_a_value_error_before_any_request(server: ScriptedServer, name: str, value: Any) -> None:
    server.script(json_reply(completion("must not be sent")))
    _, error = collect_error(make_provider(server), **{name: value})
    assert type(error) is ValueError
    assert name in str(error)
    assert server.requests == []


def test_a_bad_timeout_through_the_client_is_not_retried(server: ScriptedServer) -> None:
    sleeps = Sleeps()
    with Client(make_provider(server), timeout=-1, sleep=sleeps) as client, pytest.raises(ValueError, match="timeout"):
        client.chat.completions.create(model="", messages=MESSAGES)
    assert server.requests == [] and sleeps.delays == []


def test_infinite_timeouts_mean_no_limit_on_fresh_and_pooled_connections(server: ScriptedServer) -> None:
    provider = make_provider(server)
    server.script(json_reply(completion("one")), json_reply(completion("two")))

    async def main() -> list[str]:
        return [
            text_of(await acollect(provider, timeout=math.inf, total_timeout=math.inf)),  # fresh connection
            text_of(await acollect(provider, timeout=math.inf)),  # pooled connection
        ]

    assert run(main()) == ["one", "two"]
    assert server.connections == 1


def test_check_timeout_values() -> None:
    assert check_timeout("timeout", None) == DEFAULT_TIMEOUT
    assert check_timeout("total_timeout", None) is None
    assert check_timeout("timeout", math.inf) is None
    assert check_timeout("timeout", 2) == 2.0 and type(check_timeout("timeout", 2)) is float
    assert check_timeout("total_timeout", 0.25) == 0.25
    for bad in (0, -1, math.nan, -math.inf, "1", False, None.__class__):
        with pytest.raises(ValueError, match=r"^total_timeout"):
            check_timeout("total_timeout", bad)


# ------------------------------------------------------------ 8.3b the ClientTimeout cache is bounded


def test_the_client_timeout_cache_is_bounded(server: ScriptedServer) -> None:
    server.route("POST", "/v1/chat/completions", json_reply(completion("ok")))
    provider = make_provider(server)
    count = session_module.TIMEOUT_CACHE_SIZE + 36

    async def main() -> None:
        for index in range(count):
            await acollect(provider, timeout=10 + index / 1000)

    run(main())
    assert len(server.requests) == count
    assert len(session_module._timeouts) <= session_module.TIMEOUT_CACHE_SIZE


# ------------------------------------------------------------ 8.4 a pooled connection the server closed


def close_after_each(delays: list[float]) -> Any:
    """Answer (echoing the question), then close the connection after ``delays[n]`` seconds.

    No ``Connection: close`` header: the client pools the connection, and its next request
    races the close (the keep-alive race, made to happen on every request).
    """
    served = [0]

    def handler(request: RecordedRequest) -> Reply:
        delay = delays[served[0] % len(delays)]
        served[0] += 1
        body = json_reply(completion(request.json()["messages"][0]["content"])).body
        writes: list[bytes | float] = [body, delay] if delay else [body]
        return Reply(headers=[("Content-Type", "application/json")], writes=writes, body_mode="length", end="abrupt")

    return handler


@pytest.mark.parametrize(
    ("server_delays", "client_pauses"),
    [([0.0], [0.0]), ([0.0, 0.002, 0.02], [0.0, 0.001, 0.01, 0.03]), ([0.05], [0.0, 0.06])],
)
def test_a_connection_closed_after_each_response_never_fails_a_request(
    server: ScriptedServer, server_delays: list[float], client_pauses: list[float]
) -> None:
    server.route("POST", "/v1/chat/completions", close_after_each(server_delays))
    provider = make_provider(server)
    count = 50

    async def main() -> list[str]:
        texts = []
        for index in range(count):
            texts.append(text_of(await acollect(provider, messages=[{"role": "user", "content": f"q{index}"}])))
            pause = client_pauses[index % len(client_pauses)]
            if pause:
                await asyncio.sleep(pause)
        return texts

    assert run(main()) == [f"q{index}" for index in range(count)]
    assert len(server.requests) == count
    assert len({request.connection for request in server.requests}) == count  # one request per connection
    assert server.connections == count


# ------------------------------------------------------------ 8.6 the aiohttp hooks are on


def test_the_aiohttp_hooks_are_in_place(server: ScriptedServer) -> None:
    server.script(json_reply(completion("ok")))
    provider = make_provider(server)

    async def main() -> tuple[Any, list[str], list[Any]]:
        await acollect(provider)
        connector = get_session().connector
        pooled = [protocol for held in connector._conns.values() for protocol, _ in held]  # type: ignore[union-attr]
        return connector, hook_problems(connector), pooled

    connector, problems, pooled = run(main())
    assert LAZY_TIMER, "aiohttp's ResponseHandler lost a method the lazy idle-read timer overrides"
    assert isinstance(connector, Connector)
    assert problems == [], problems
    # The connection the request went over (back in the pool) is one of the hooked handler's.
    assert pooled and all(type(protocol) is LazyReadTimeoutHandler for protocol in pooled), pooled


# ------------------------------------------------------------ 10. no key anywhere in the exception chain


@pytest.mark.parametrize(
    "api_base",
    [
        "http://127.0.0.1:99999/v1?key={key}",
        "http://127.0.0.1:notaport/{key}/v1",
        "http://user:{key}@[::1/v1",
        "http://127.0.0.1:1/v1/{key} x",
        "ftp://127.0.0.1/{key}/v1",
    ],
)
def test_an_invalid_url_error_has_no_key_in_its_chain(api_base: str) -> None:
    provider = type("KeyInBadUrl", (OpenaiTemplate,), {"api_base": api_base.format(key=SECRET)})
    _, error = collect_error(provider, model="m", api_key=SECRET)
    assert isinstance(error, ValueError)
    assert_no_key_in_chain(error)


def test_a_key_echoed_in_another_letter_case_is_redacted(server: ScriptedServer) -> None:
    # aiohttp lower-cases the content type, and the provider quotes it
    server.script(Reply(headers=[("Content-Type", f"text/x-{SECRET}")], writes=[b"?"], body_mode="length"))
    _, error = collect_error(make_provider(server), api_key=SECRET)
    assert isinstance(error, ResponseError)
    assert_no_key_in_chain(error)
    server.script(json_reply({"error": {"message": f"bad key {SECRET.upper()}"}}, 401))
    _, error = collect_error(make_provider(server), api_key=SECRET)
    assert_no_key_in_chain(error)


def test_redaction_is_case_insensitive_and_walks_the_chain() -> None:
    assert redact(f"a {SECRET.lower()} b {SECRET.upper()} c {SECRET}", [SECRET]) == "a *** b *** c ***"
    error = ResponseError(f"x {SECRET.swapcase()}")
    try:
        try:
            raise OSError(f"raw {SECRET.lower()}")
        except OSError:
            raise error from None
    except ResponseError:
        pass
    assert error.__context__ is not None
    redact_error(error, [SECRET])
    assert_no_key_in_chain(error)


# ------------------------------------------------------------ 11. a garbled answer is not "cannot reach"


GARBLED = [
    b"HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ndata\r\n",
    b"HTTP/1.1 200 OK\r\nContent Type: text/event-stream\r\n\r\n",
]


@pytest.mark.parametrize("raw", GARBLED)
def test_a_garbled_answer_is_a_response_error_and_not_sent_again(server: ScriptedServer, raw: bytes) -> None:
    server.script(Reply(raw=raw), json_reply(completion("must not be reached")), json_reply(completion("nor this")))
    sleeps = Sleeps()

    async def main() -> BaseException:
        client = AsyncClient(make_provider(server), max_retries=2, sleep=sleeps)
        try:
            await client.chat.completions.create(model="", messages=MESSAGES)
        except Exception as error:
            return error
        raise AssertionError("no error")

    error = run(main())
    assert type(error) is ResponseError, repr(error)
    assert "not valid HTTP" in str(error)
    assert error.status is None  # aiohttp's own 400 is not the server's status
    assert len(server.requests) == 1 and sleeps.delays == []


@pytest.mark.parametrize("raw", [b"HTTP/1.1 200", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: text/pl"])
def test_a_head_cut_short_is_a_stream_error_and_never_resent_on_a_pooled_connection(
    server: ScriptedServer, raw: bytes
) -> None:
    # The second request goes out on the pooled connection; the server reads it and starts to answer:
    # that is not the stale keep-alive case, so the transport must not send the POST again.
    server.script(json_reply(completion("first")), Reply(raw=raw), json_reply(completion("must not be reached")))
    provider = make_provider(server)

    async def main() -> BaseException:
        assert text_of(await acollect(provider)) == "first"
        try:
            await acollect(provider)
        except Exception as error:
            return error
        raise AssertionError("no error")

    error = run(main())
    assert type(error) is StreamIncompleteError and error.partial_text == ""
    assert "RawResponseMessage" not in str(error)
    assert [request.connection for request in server.requests] == [1, 1]


def test_connection_refused_is_still_a_connect_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = type("Refused", (OpenaiTemplate,), {"api_base": f"http://127.0.0.1:{port}/v1"})
    _, error = collect_error(provider, model="m")
    assert type(error) is ConnectError


# ------------------------------------------------------------ 6, 7. URLs, headers and keys checked up front


def test_check_api_base_accepts_and_normalises() -> None:
    assert check_api_base("https://host/v1/") == "https://host/v1"
    assert check_api_base("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert check_api_base("HTTPS://host") == "HTTPS://host"
    assert (
        check_api_base("https://h/openai/deployments/x/?api-version=1")
        == "https://h/openai/deployments/x?api-version=1"
    )


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (12345, TypeError, "api_base must be a string"),
        (b"http://h/v1", TypeError, "api_base must be a string"),
        ("127.0.0.1:8080/v1", ValueError, "no scheme"),
        ("ftp://host/v1", ValueError, "unsupported scheme"),
        ("http://host/v1 ", ValueError, "surrounding spaces"),
        (" http://host/v1", ValueError, "surrounding spaces"),
        ("http://host/v1\r\n", ValueError, "api_base"),
        ("http://ho st/v1", ValueError, "space"),
        ("http://host/v1#x", ValueError, "fragment"),
        ("http:///v1", ValueError, "no host"),
        ("http://host:99999/v1", ValueError, "not a valid URL"),
    ],
)
def test_check_api_base_refuses(value: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match="api_base") as caught:
        check_api_base(value)
    assert words in str(caught.value)


def test_join_url_keeps_the_query_after_the_path() -> None:
    assert join_url("https://h/v1", "chat/completions") == "https://h/v1/chat/completions"
    assert join_url("https://h/v1/", "/models") == "https://h/v1/models"
    assert join_url("https://h/d/x?api-version=1", "chat/completions") == "https://h/d/x/chat/completions?api-version=1"
    assert join_url("https://h/v1?a=1", "models?b=2") == "https://h/v1/models?a=1&b=2"
    assert join_url("https://h/v1", "") == "https://h/v1"
    with pytest.raises(ValueError, match="fragment"):
        join_url("https://h/v1#x", "models")


def test_a_joined_azure_style_url_reaches_the_server_with_its_query(server: ScriptedServer) -> None:
    server.script(json_reply(completion("ok")))

    async def main() -> bytes:
        url = join_url(check_api_base(server.base + "/?api-version=2024-06-01"), "chat/completions")
        response = await open_response("POST", url, headers={"Content-Type": "application/json"}, body=b"{}")
        try:
            return await response.read()
        finally:
            await response.release()

    assert b"ok" in run(main())
    assert server.requests[0].path == "/v1/chat/completions?api-version=2024-06-01"


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (["X: 1"], TypeError),
        ("X: 1", TypeError),
        ({"X:A": "1"}, ValueError),
        ({"X A": "1"}, ValueError),
        ({"X\r\nY": "1"}, ValueError),
        ({"X": "1\r\nY: 2"}, ValueError),
        ({"X": 1}, TypeError),
        ({1: "x"}, TypeError),
    ],
)
def test_bad_headers_are_refused_before_any_request(server: ScriptedServer, headers: Any, error: type) -> None:
    with pytest.raises(error, match="headers"):
        check_headers(headers)

    async def main() -> None:
        await open_response("POST", server.base + "/chat/completions", headers=headers, body=b"{}")

    with pytest.raises(error, match="headers"):
        run(main())
    assert server.requests == []


def test_check_headers_accepts_none_values_and_tabs(server: ScriptedServer) -> None:
    check_headers({"X-Remove": None, "X-Unicode": "café"})  # no error: None (a provider's "remove") is allowed
    headers = {"X-Tab": "a\tb", "X-Plain": "value"}
    check_headers(headers)
    server.script(json_reply(completion("ok")))

    async def main() -> None:
        response = await open_response("POST", server.base + "/chat/completions", headers=headers, body=b"{}")
        await response.release()

    run(main())
    (request,) = server.requests
    sent = {name.lower(): value for name, value in request.raw_headers}
    assert sent["x-tab"] == "a\tb" and sent["x-plain"] == "value"  # a tab inside a value goes out as it is


@pytest.mark.parametrize(
    ("value", "error"), [(12345, TypeError), (b"sk-x", TypeError), ("sk-x\n", ValueError), (" sk", ValueError)]
)
def test_check_api_key_refuses_and_never_quotes_the_key(value: Any, error: type) -> None:
    with pytest.raises(error) as caught:
        check_api_key(value)
    assert "api_key" in str(caught.value)
    assert str(value).strip() not in str(caught.value) or isinstance(value, int)
    assert check_api_key("sk-good") == "sk-good" and check_api_key(None) is None


def test_a_non_string_secret_is_a_type_error_naming_api_key(server: ScriptedServer) -> None:
    async def main() -> None:
        await open_response("GET", server.base + "/models", headers={}, secrets=(12345,))  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="api_key"):
        run(main())
    assert server.requests == []
