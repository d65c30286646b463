"""Tests of the scripted test server itself, using only stdlib clients."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time

import pytest
from scripted_server import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    chunk,
    completion,
    fragment,
    json_reply,
    sse,
    sse_reply,
    text_reply,
    tool_call_delta,
    usage,
)

GET = b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n"


def connect(server: ScriptedServer, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def recv_until(sock: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"EOF before {marker!r}; got {buf!r}")
        buf += data
    return buf


def recv_to_eof(sock: socket.socket) -> bytes:
    buf = b""
    while data := sock.recv(65536):
        buf += data
    return buf


def split_head(data: bytes) -> tuple[list[str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


def http_conn(server: ScriptedServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)


# --------------------------------------------------------------------------- framing


def test_chunked_framing_is_one_chunk_per_write(server: ScriptedServer) -> None:
    server.script(Reply(headers=[("X-A", "1"), ("x-b", "two")], writes=[b"ab", b"c", b"", b"defg"]))
    with connect(server) as sock:
        sock.sendall(GET)
        lines, body = split_head(recv_until(sock, b"0\r\n\r\n"))
    # Status line, given headers verbatim and in order, framing added, no Content-Type invented.
    assert lines == ["HTTP/1.1 200 OK", "X-A: 1", "x-b: two", "Transfer-Encoding: chunked"]
    assert body == b"2\r\nab\r\n1\r\nc\r\n4\r\ndefg\r\n0\r\n\r\n"


def test_writes_are_separate_and_honour_sleeps(server: ScriptedServer) -> None:
    server.script(Reply(writes=[b"first", 0.25, b"second"], reason="Fine"))
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(GET)
        first = recv_until(sock, b"5\r\nfirst\r\n")
        # The second write is 250 ms away, so it cannot have arrived with the first one.
        assert b"second" not in first
        rest = recv_until(sock, b"0\r\n\r\n", first)
        elapsed = time.monotonic() - start
    assert rest.startswith(b"HTTP/1.1 200 Fine\r\n")
    assert rest.endswith(b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n")
    assert elapsed >= 0.24


def test_length_mode(server: ScriptedServer) -> None:
    server.script(Reply(writes=[b"abc", 0.01, b"de"], body_mode="length"), json_reply({"a": [1, 2]}))
    with connect(server) as sock:
        sock.sendall(GET)
        lines, body = split_head(recv_until(sock, b"abcde"))
        assert lines == ["HTTP/1.1 200 OK", "Content-Length: 5"]
        assert body == b"abcde"
        sock.sendall(GET)  # same connection serves the next request
        lines, body = split_head(recv_until(sock, b"}"))
    assert lines == ["HTTP/1.1 200 OK", "Content-Type: application/json", "Content-Length: 11"]
    assert body == b'{"a":[1,2]}'
    assert server.connections == 1


def test_close_mode(server: ScriptedServer) -> None:
    server.script(Reply(status=201, writes=[b"abc", b"def"], body_mode="close"))
    with connect(server) as sock:
        sock.sendall(GET)
        lines, body = split_head(recv_to_eof(sock))
    assert lines == ["HTTP/1.1 201 Created", "Connection: close"]
    assert body == b"abcdef"


def test_raw_reply_is_verbatim_then_closed(server: ScriptedServer) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    server.script(Reply(raw=raw))
    with connect(server) as sock:
        sock.sendall(GET)
        assert recv_to_eof(sock) == raw


# --------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection(server: ScriptedServer) -> None:
    server.script(
        json_reply({"n": 1}),
        sse_reply(chunk("hi"), "[DONE]"),
        text_reply("three"),
    )
    conn = http_conn(server)
    bodies = []
    for _ in range(3):
        conn.request("GET", "/v1/models")
        bodies.append(conn.getresponse().read())
    conn.close()
    assert bodies[0] == b'{"n":1}'
    assert bodies[1] == sse(chunk("hi"), "[DONE]")
    assert bodies[2] == b"three"
    assert server.connections == 1
    assert [r.connection for r in server.requests] == [1, 1, 1]

    other = http_conn(server)
    server.script(text_reply("again"))
    other.request("GET", "/")
    assert other.getresponse().read() == b"again"
    other.close()
    assert server.connections == 2
    assert server.requests[-1].connection == 2


def test_pipelined_requests_each_get_their_reply(server: ScriptedServer) -> None:
    server.script(text_reply("one"), text_reply("two"))
    with connect(server) as sock:
        sock.sendall(GET + GET.replace(b"/v1/models", b"/second"))
        data = recv_until(sock, b"two")
    assert data.index(b"one") < data.index(b"two")
    assert [r.path for r in server.requests] == ["/v1/models", "/second"]
    assert server.connections == 1


def test_client_connection_close_is_honoured(server: ScriptedServer) -> None:
    server.script(text_reply("bye"))
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert recv_to_eof(sock).endswith(b"\r\n\r\nbye")


# --------------------------------------------------------------------------- recording


def test_request_recording(server: ScriptedServer) -> None:
    server.script(json_reply({}), json_reply({}))
    conn = http_conn(server)
    conn.putrequest("POST", "/v1/chat/completions?api-version=2&x=", skip_accept_encoding=True)
    conn.putheader("Authorization", "Bearer sk-test")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("X-Dup", "a")
    conn.putheader("X-Dup", "b")
    payload = json.dumps({"model": "m", "stream": True}).encode()
    conn.putheader("Content-Length", str(len(payload)))
    conn.endheaders(payload)
    assert conn.getresponse().read() == b"{}"

    # A chunked request body is de-chunked.
    conn.request(
        "PUT", "/up", body=iter([b"he", b"llo"]), encode_chunked=True, headers={"Transfer-Encoding": "chunked"}
    )
    assert conn.getresponse().status == 200
    conn.close()

    req, up = server.requests
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.path, req.route_path) == (
        "POST",
        "/v1/chat/completions?api-version=2&x=",
        "/v1/chat/completions",
    )
    assert req.query == {"api-version": ["2"], "x": [""]}
    assert req.headers["authorization"] == req.headers["AUTHORIZATION"] == "Bearer sk-test"
    assert req.headers.count("authorization") == 1
    assert req.headers.get_all("x-dup") == ["a", "b"] and req.headers["x-dup"] == "a, b"
    assert ("X-Dup", "a") in req.raw_headers and "x-dup" in req.headers
    assert req.body == payload and req.json() == {"model": "m", "stream": True}
    assert req.connection == 1 and req.version == "HTTP/1.1"
    assert up.method == "PUT" and up.body == b"hello"
    assert server.errors == []


def test_expect_100_continue(server: ScriptedServer) -> None:
    server.script(text_reply("ok"))
    with connect(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert recv_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert recv_until(sock, b"ok").startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.requests[0].body == b"abc"


# --------------------------------------------------------------------------- choosing replies


def test_fifo_queue_order(server: ScriptedServer) -> None:
    server.script(text_reply("one"), text_reply("two"))
    server.script(text_reply("three", status=404))
    assert server.pending == 3
    conn = http_conn(server)
    got = []
    for _ in range(3):
        conn.request("GET", "/any")
        resp = conn.getresponse()
        got.append((resp.status, resp.read()))
    conn.close()
    assert got == [(200, b"one"), (200, b"two"), (404, b"three")]
    assert server.pending == 0


def test_route_callable_beats_queue(server: ScriptedServer) -> None:
    attempts: list[int] = []

    def handler(req: RecordedRequest) -> Reply:
        attempts.append(req.connection)
        if len(attempts) == 1:
            return json_reply({"error": {"message": "busy"}}, status=503)
        return json_reply(completion(req.json()["messages"][0]["content"]))

    server.route("post", "/v1/chat/completions", handler)
    server.script(text_reply("queued"))
    conn = http_conn(server)
    results = []
    for _ in range(2):
        body = json.dumps({"messages": [{"role": "user", "content": "echo me"}]})
        conn.request("POST", "/v1/chat/completions?q=1", body=body)
        resp = conn.getresponse()
        results.append((resp.status, json.loads(resp.read())))
    conn.request("GET", "/v1/chat/completions")  # other method: falls through to the queue
    assert conn.getresponse().read() == b"queued"
    conn.close()
    assert results[0] == (503, {"error": {"message": "busy"}})
    assert results[1][0] == 200
    assert results[1][1]["choices"][0]["message"]["content"] == "echo me"
    assert attempts == [1, 1]
    assert server.pending == 0


def test_unscripted_request_gets_500_and_is_recorded(server: ScriptedServer) -> None:
    conn = http_conn(server)
    conn.request("GET", "/v1/nothing")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (500, b"no scripted reply")
    conn.close()
    assert [r.path for r in server.requests] == ["/v1/nothing"]
    assert server.errors == ["no scripted reply for GET /v1/nothing"]


def test_handler_exception_gives_500_and_error(server: ScriptedServer) -> None:
    def broken(req: RecordedRequest) -> Reply:
        raise ValueError("boom")

    server.route("GET", "/broken", broken)
    conn = http_conn(server)
    conn.request("GET", "/broken")
    resp = conn.getresponse()
    assert resp.status == 500 and b"boom" in resp.read()
    conn.request("GET", "/broken")  # the connection survives
    assert conn.getresponse().status == 500
    conn.close()
    assert len(server.errors) == 2 and "ValueError: boom" in server.errors[0]


def test_bad_request_gets_400(server: ScriptedServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data = recv_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert server.requests == [] and len(server.errors) == 1


def test_reset_clears_everything(server: ScriptedServer) -> None:
    server.script(text_reply("a"), text_reply("b"))
    server.route("GET", "/r", text_reply("route"))
    conn = http_conn(server)
    conn.request("GET", "/x")
    conn.getresponse().read()
    server.reset()
    assert (server.pending, server.requests, server.errors, server.connections) == (0, [], [], 0)
    conn.close()
    conn = http_conn(server)
    conn.request("GET", "/r")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (500, b"no scripted reply")
    conn.close()
    assert server.connections == 1 and server.requests[0].connection == 1


# --------------------------------------------------------------------------- endings


def test_keep_open_records_client_disconnect(server: ScriptedServer) -> None:
    server.script(sse_reply(chunk("Hi"), chunk(" there"), end="keep_open"))
    with connect(server) as sock:
        sock.sendall(GET)
        data = recv_until(sock, b" there")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # no terminating chunk, no close
            sock.recv(65536)
    assert data.endswith(b"\n\n\r\n") and b"0\r\n\r\n" not in data
    req = server.requests[0]
    assert server.wait_for(lambda: req.client_disconnected)
    assert server.errors == []


def test_keep_open_timeout_closes(server: ScriptedServer) -> None:
    server.script(Reply(writes=[b"x"], end="keep_open", keep_open_timeout=0.1))
    with connect(server) as sock:
        sock.sendall(GET)
        assert recv_to_eof(sock).endswith(b"1\r\nx\r\n")
    assert server.requests[0].client_disconnected is False


def test_abrupt_end_leaves_chunked_body_incomplete(server: ScriptedServer) -> None:
    server.script(Reply(writes=[b"partial"], end="abrupt"))
    conn = http_conn(server)
    conn.request("GET", "/v1/models")
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    assert info.value.partial == b"partial"


def test_head_delay_holds_back_the_status_line(server: ScriptedServer) -> None:
    server.script(Reply(head_delay=0.15, writes=[b"late"]))
    with connect(server) as sock:
        sock.sendall(GET)
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(2)
        assert recv_until(sock, b"0\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")


def test_reset_end_sends_rst(server: ScriptedServer) -> None:
    server.script(Reply(writes=[b"x"], end="reset"))
    with connect(server) as sock:
        sock.sendall(GET)
        with pytest.raises(ConnectionResetError):
            recv_to_eof(sock)


def test_client_vanishing_mid_response_is_quiet(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    writes: list[bytes | float] = [b"start"]
    for _ in range(30):
        writes += [0.01, b"y" * 4096]
    server.script(Reply(writes=writes), text_reply("still here"))
    with connect(server) as sock:
        sock.sendall(GET)
        recv_until(sock, b"start")
    assert server.wait_for(lambda: server.requests[0].client_disconnected)
    conn = http_conn(server)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"still here"
    conn.close()
    assert server.errors == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --------------------------------------------------------------------------- other loops, lifecycle


def test_usable_from_a_test_running_its_own_loop(server: ScriptedServer) -> None:
    server.script(sse_reply(*fragment(b"data: [DONE]\n\n", 4)))

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(GET)
        await writer.drain()
        data = await reader.readuntil(b"0\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        assert await server.wait_for_async(lambda: len(server.requests) == 1)
        return data

    data = asyncio.run(main())
    assert data.endswith(b"4\r\ndata\r\n4\r\n: [D\r\n4\r\nONE]\r\n2\r\n\n\n\r\n0\r\n\r\n")


def test_stop_closes_held_connections() -> None:
    with ScriptedServer() as srv:
        assert srv.base == f"http://127.0.0.1:{srv.port}/v1" and srv.port > 0
        srv.script(Reply(writes=[b"x"], end="keep_open"))
        sock = connect(srv)
        sock.sendall(GET)
        recv_until(sock, b"x\r\n")
        start = time.monotonic()
    assert time.monotonic() - start < 1.0
    with sock:
        assert recv_to_eof(sock) == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=0.5).close()


# --------------------------------------------------------------------------- helpers


def test_body_helpers() -> None:
    assert sse({"a": "é"}, "[DONE]", b": comment\n\n") == ('data: {"a":"é"}\n\ndata: [DONE]\n\n: comment\n\n'.encode())
    assert sse("x", end="\r\n\r\n") == b"data: x\r\n\r\n"
    assert fragment(b"abc") == [b"a", b"b", b"c"]
    assert fragment(b"abcde", 2, delay=0.5) == [b"ab", 0.5, b"cd", 0.5, b"e"]

    c = chunk("hi", role="assistant", usage=usage(2, 3), system_fingerprint="fp")
    assert c["object"] == "chat.completion.chunk" and c["model"] == "test-model"
    assert c["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]
    assert c["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert c["system_fingerprint"] == "fp"
    assert "choices" not in chunk(choices=False)
    assert chunk(choices=None)["choices"] is None
    assert chunk(choices=[])["choices"] == []
    tc = chunk(tool_calls=[tool_call_delta(0, id="call_1", name="f", arguments="")])
    assert tc["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]

    full = completion("done", reasoning_content="think")
    assert full["object"] == "chat.completion"
    assert full["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "done", "reasoning_content": "think"},
        "finish_reason": "stop",
    }

    reply = sse_reply({"a": 1}, "[DONE]", delay=0.1, headers={"X-Req": "1"})
    assert reply.header_list() == [("Content-Type", "text/event-stream"), ("X-Req", "1")]
    assert reply.writes == [b'data: {"a":1}\n\n', 0.1, b"data: [DONE]\n\n"]
    assert reply.body == b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert text_reply("t", content_type="text/html").header_list() == [("Content-Type", "text/html")]
    with pytest.raises(ValueError):
        Reply(end="later")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Reply(writes=["text"])  # type: ignore[list-item]
