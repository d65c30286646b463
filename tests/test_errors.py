"""HTTP errors → the typed error family of SPEC section 4 (classes, body shapes, headers, redaction)."""

from __future__ import annotations

import builtins
import logging
import pickle
import socket
import sys
import time
from email.utils import formatdate

import pytest
from helpers import SECRET, assert_no_secret, collect, collect_error, make_provider
from scripted_server import Reply, chunk, json_reply, sse_reply, text_reply

from llmrelay import OpenaiTemplate
from llmrelay.errors import (
    AllProvidersFailedError,
    BadRequestError,
    CloudflareError,
    ConnectError,
    ContextLengthError,
    MissingAuthError,
    MissingRequirementsError,
    ModelNotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RelayError,
    ResponseError,
    ServerError,
    StreamIncompleteError,
    TimeoutError,
)
from llmrelay.http.status import error_from_data, error_from_response

# ------------------------------------------------------------------ the table of SPEC 4


def openai_error(message: str, type_: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


STATUS_TABLE = [
    (401, openai_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"), MissingAuthError),
    (401, {"detail": "Not authenticated"}, MissingAuthError),
    (403, openai_error("Invalid API key for this project"), MissingAuthError),
    (403, openai_error("You are not authorized to use this endpoint"), MissingAuthError),
    (403, openai_error("Country, region, or territory not supported", "request_forbidden"), ResponseError),
    (400, openai_error("'messages' must be a non-empty array", "invalid_request_error"), BadRequestError),
    (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}, BadRequestError),
    (
        400,
        openai_error(
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        ContextLengthError,
    ),
    (400, {"object": "error", "message": "prompt is too long: 300000 tokens > 200000 maximum"}, ContextLengthError),
    (402, openai_error("Insufficient credits", None, 402), PaymentRequiredError),
    (
        404,
        openai_error("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"),
        ModelNotFoundError,
    ),
    (
        404,
        {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404},
        ModelNotFoundError,
    ),
    (404, {"detail": "Not Found"}, ResponseError),
    (429, openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"), RateLimitError),
    (500, openai_error("The server had an error", "server_error"), ServerError),
    (502, {"error": "upstream failed"}, ServerError),
    (503, {"message": "Service Unavailable"}, ServerError),
    (418, {"message": "I'm a teapot"}, ResponseError),
]


@pytest.mark.parametrize(("status", "body", "expected"), STATUS_TABLE)
def test_status_table(server, status: int, body: dict, expected: type) -> None:
    server.script(json_reply(body, status=status))
    items, error = collect_error(make_provider(server), stream=True)
    assert items == []
    assert type(error) is expected, repr(error)
    assert error.status == status
    assert error.provider is not None and error.provider.startswith("Scripted")
    assert str(status) in str(error)


def test_gemini_api_key_not_valid_400_is_missing_auth(server) -> None:
    body = [
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
            }
        }
    ]
    server.script(json_reply(body, status=400))
    _, error = collect_error(make_provider(server))
    assert type(error) is MissingAuthError
    assert error.message == "API key not valid. Please pass a valid API key."
    assert error.code == 400
    assert error.type == "INVALID_ARGUMENT"


def test_cloudflare_403_challenge_page(server) -> None:
    page = (
        "<!DOCTYPE html><html lang='en-US'><head><title>Just a moment...</title>"
        "<script src='/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1'></script></head>"
        "<body>" + "<div>Checking your browser before accessing.</div>" * 200 + "</body></html>"
    )
    server.script(text_reply(page, 403, "text/html; charset=UTF-8", headers=[("cf-mitigated", "challenge")]))
    _, error = collect_error(make_provider(server))
    assert type(error) is CloudflareError
    assert error.message == "Just a moment..."
    assert len(str(error)) < 200


def test_html_502_page_message_is_the_title(server) -> None:
    page = (
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n" + "<!-- padding -->\r\n" * 300 + "<hr><center>nginx</center>"
        "\r\n</body>\r\n</html>\r\n"
    )
    server.script(text_reply(page, 502, "text/html"))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.message == "502 Bad Gateway"
    assert "<" not in str(error)
    assert error.body is not None and len(error.body) <= 1000


def test_html_page_without_title_gives_short_text_excerpt(server) -> None:
    page = "<html><body><h1>Service down</h1><p>" + "maintenance " * 500 + "</p></body></html>"
    server.script(text_reply(page, 503, "text/html"))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.message.startswith("Service down maintenance")
    assert "<" not in error.message
    assert len(error.message) <= 500


# ------------------------------------------------------------------ body shapes


BODY_SHAPES = [
    (openai_error("numeric code", "invalid_request_error", 1234), "numeric code", 1234, "invalid_request_error"),
    (
        openai_error("string code", "invalid_request_error", "bad_thing"),
        "string code",
        "bad_thing",
        "invalid_request_error",
    ),
    ({"error": "just text"}, "just text", None, None),
    ({"message": "top-level message", "code": "E1"}, "top-level message", "E1", None),
    ({"message": {"reason": "object message"}}, '{"reason":"object message"}', None, None),
    ({"detail": "detail string"}, "detail string", None, None),
    ({"detail": {"message": "detail object"}}, "detail object", None, None),
    (
        {"detail": [{"loc": ["body", "temperature"], "msg": "must be <= 2", "type": "less_than_equal"}, {"msg": "x"}]},
        "body.temperature: must be <= 2; x",
        None,
        None,
    ),
    (
        {"object": "error", "message": "vllm says no", "type": "BadRequestError", "code": 400},
        "vllm says no",
        400,
        "BadRequestError",
    ),
    (
        [{"error": {"code": 400, "message": "gemini array", "status": "INVALID_ARGUMENT"}}],
        "gemini array",
        400,
        "INVALID_ARGUMENT",
    ),
    ({"error_message": "error_message field"}, "error_message field", None, None),
]


@pytest.mark.parametrize(("body", "message", "code", "type_"), BODY_SHAPES)
def test_body_shapes(server, body, message: str, code, type_) -> None:
    server.script(json_reply(body, status=400))
    _, error = collect_error(make_provider(server))
    assert isinstance(error, BadRequestError)
    assert error.message == message
    assert error.code == code
    assert error.type == type_
    assert error.body is not None and error.body.startswith(("{", "["))


def test_error_null_in_an_http_error_body(server) -> None:
    server.script(json_reply({"error": None, "message": "still an error"}, status=500))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.message == "still an error"


def test_event_stream_error_body(server) -> None:
    body = b': hi\n\ndata: {"error": {"message": "quota exhausted", "type": "rate_limit_error"}}\n\n'
    server.script(Reply(status=429, headers=[("Content-Type", "text/event-stream")], writes=[body]))
    _, error = collect_error(make_provider(server), stream=True)
    assert type(error) is RateLimitError
    assert error.message == "quota exhausted"
    assert error.type == "rate_limit_error"


def test_plain_text_error_body(server) -> None:
    server.script(text_reply("upstream connect error or disconnect/reset before headers\n", 503))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.message == "upstream connect error or disconnect/reset before headers"


def test_empty_error_body_uses_the_status_phrase(server) -> None:
    server.script(Reply(status=429, body_mode="length"))
    _, error = collect_error(make_provider(server))
    assert type(error) is RateLimitError
    assert error.message == "Too Many Requests"
    assert error.body is None


def test_invalid_json_error_body_is_quoted_as_text(server) -> None:
    server.script(text_reply('{"error": {"message": "trunc', 500, "application/json"))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.message == '{"error": {"message": "trunc'


def test_error_body_is_bounded(server) -> None:
    big = "x" * 2_000_000
    server.script(json_reply({"error": {"message": big}}, status=400))
    _, error = collect_error(make_provider(server))
    assert isinstance(error, BadRequestError)
    assert len(error.message) <= 500
    assert error.body is not None and len(error.body) <= 1000
    assert len(str(error)) < 700
    assert len(repr(error)) < 700


# ------------------------------------------------------------------ headers


def test_retry_after_ms_wins(server) -> None:
    server.script(
        json_reply(openai_error("slow down"), 429, headers=[("retry-after-ms", "1500"), ("retry-after", "7")])
    )
    _, error = collect_error(make_provider(server))
    assert type(error) is RateLimitError
    assert error.retry_after == 1.5
    assert "retry after 1.5 s" in str(error)


def test_retry_after_seconds(server) -> None:
    server.script(json_reply(openai_error("slow down"), 429, headers=[("Retry-After", "7")]))
    _, error = collect_error(make_provider(server))
    assert error.retry_after == 7.0


def test_retry_after_http_date(server) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    server.script(json_reply(openai_error("slow down"), 503, headers=[("Retry-After", when)]))
    _, error = collect_error(make_provider(server))
    assert type(error) is ServerError
    assert error.retry_after is not None and 25 <= error.retry_after <= 31


def test_retry_after_garbage_is_none(server) -> None:
    server.script(json_reply(openai_error("slow down"), 429, headers=[("Retry-After", "soon")]))
    _, error = collect_error(make_provider(server))
    assert error.retry_after is None


def test_request_id(server) -> None:
    server.script(json_reply(openai_error("boom", "server_error"), 500, headers=[("x-request-id", "req_abc123")]))
    _, error = collect_error(make_provider(server))
    assert error.request_id == "req_abc123"
    assert "req_abc123" in str(error)
    assert "req_abc123" in repr(error)


# ------------------------------------------------------------------ the key never leaks


def echo_key(status: int, shape: str):
    def handler(request):
        auth = request.headers["authorization"]
        key = auth.removeprefix("Bearer ")
        if shape == "json":
            return json_reply(
                openai_error(f"Incorrect API key provided: {key}. Header was {auth}", None, "invalid"), status
            )
        if shape == "html":
            return text_reply(f"<html><head><title>Bad key {key}</title></head></html>", status, "text/html")
        return text_reply(f"denied for key={key}", status)

    return handler


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
@pytest.mark.parametrize("shape", ["json", "html", "text"])
def test_key_echoed_in_error_body_is_redacted(server, status: int, shape: str) -> None:
    server.script(echo_key(status, shape))
    _, error = collect_error(make_provider(server), api_key=SECRET)
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert isinstance(error, RelayError)
    assert_no_secret(error)
    assert_no_secret(pickle.loads(pickle.dumps(error)))
    assert "***" in (error.body or "")


def test_key_echoed_in_stream_error_is_redacted(server) -> None:
    server.script(
        lambda request: sse_reply(chunk("a"), openai_error(f"key {request.headers['authorization']} revoked"))
    )
    items, error = collect_error(make_provider(server), api_key=SECRET, stream=True)
    assert items[1] == "a"
    assert_no_secret(error)
    assert "***" in str(error)


def test_key_echoed_in_error_event_and_bad_data_is_redacted(server) -> None:
    server.script(lambda request: sse_reply(chunk("a"), f"not json {SECRET}"))
    _, error = collect_error(make_provider(server), api_key=SECRET, stream=True)
    assert isinstance(error, ResponseError)
    assert_no_secret(error)
    server.script(
        lambda request: Reply(
            headers=[("Content-Type", "text/event-stream")],
            writes=[f"event: error\ndata: bad key {SECRET}\n\n".encode()],
        )
    )
    _, error = collect_error(make_provider(server), api_key=SECRET, stream=True)
    assert_no_secret(error)


def test_key_echoed_in_200_json_error_is_redacted(server) -> None:
    server.script(json_reply({"error": {"message": f"bad key {SECRET}"}}))
    _, error = collect_error(make_provider(server), api_key=SECRET)
    assert_no_secret(error)
    server.script(json_reply({"unexpected": SECRET}))
    _, error = collect_error(make_provider(server), api_key=SECRET)
    assert_no_secret(error)


def test_key_in_url_is_redacted_from_connect_error() -> None:
    port = closed_port()
    provider = type("KeyInUrl", (OpenaiTemplate,), {"api_base": f"http://127.0.0.1:{port}/v1?key={SECRET}"})
    _, error = collect_error(provider, model="m", api_key=SECRET)
    assert isinstance(error, ConnectError)
    assert_no_secret(error)


def test_key_never_logged_by_model_listing_fallback(server, caplog) -> None:
    server.script(echo_key(500, "json"))
    provider = make_provider(server, fallback_models=["fallback-a"])
    with caplog.at_level(logging.DEBUG, logger="llmrelay"):
        assert provider.get_models(api_key=SECRET) == ["fallback-a"]
    assert caplog.records
    assert all(SECRET not in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ transport errors


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_connect_error() -> None:
    provider = type("Refused", (OpenaiTemplate,), {"api_base": f"http://127.0.0.1:{closed_port()}/v1"})
    started = time.monotonic()
    _, error = collect_error(provider, model="m")
    assert time.monotonic() - started < 3
    assert type(error) is ConnectError
    assert "127.0.0.1" in str(error)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux dropping SYNs past a full backlog")
def test_connect_timeout_is_connect_error_and_timeout_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue: the next SYN is dropped and the connect hangs
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        provider = type("Blackhole", (OpenaiTemplate,), {"api_base": f"http://127.0.0.1:{port}/v1"})
        started = time.monotonic()
        _, error = collect_error(provider, model="m", timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert isinstance(error, ConnectError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, builtins.TimeoutError)
    assert "0.3" in str(error)


def test_no_answer_within_timeout_is_timeout_error(server) -> None:
    server.script(Reply(head_delay=1.5, headers=[("Content-Type", "application/json")], writes=[b"{}"]))
    started = time.monotonic()
    _, error = collect_error(make_provider(server), timeout=0.3)
    assert time.monotonic() - started < 1.4
    assert isinstance(error, TimeoutError)
    assert isinstance(error, builtins.TimeoutError)
    assert isinstance(error, RelayError)


def test_impersonate_without_curl_cffi_is_missing_requirements(server, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "curl_cffi", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "curl_cffi.requests", None)
    _, error = collect_error(make_provider(server), impersonate="chrome")
    assert type(error) is MissingRequirementsError
    assert "pip install 'llmrelay[impersonate]'" in str(error)
    assert server.requests == []


def test_socks_proxy_without_aiohttp_socks_is_missing_requirements(server, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp_socks", None)
    _, error = collect_error(make_provider(server), proxy="socks5://127.0.0.1:1")
    assert type(error) is MissingRequirementsError
    assert "socks" in str(error)


# ------------------------------------------------------------------ the family


def test_hierarchy() -> None:
    for cls in (
        BadRequestError,
        PaymentRequiredError,
        CloudflareError,
        ModelNotFoundError,
        RateLimitError,
        ServerError,
    ):
        assert issubclass(cls, ResponseError)
    assert issubclass(ContextLengthError, BadRequestError)
    for cls in (
        ResponseError,
        MissingAuthError,
        ConnectError,
        TimeoutError,
        StreamIncompleteError,
        MissingRequirementsError,
        AllProvidersFailedError,
    ):
        assert issubclass(cls, RelayError)
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert not issubclass(MissingAuthError, ResponseError)
    import llmrelay

    assert llmrelay.TimeoutError is TimeoutError
    assert llmrelay.ContextLengthError is ContextLengthError


def test_error_fields_and_repr() -> None:
    error = RateLimitError("slow", status=429, code="rl", type="requests", provider="P", request_id="r1", retry_after=2)
    assert str(error) == "P: HTTP 429: slow (retry after 2 s) [request id r1]"
    assert (
        repr(error)
        == "RateLimitError('slow', status=429, code='rl', type='requests', provider='P', request_id='r1', retry_after=2)"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError and copy.__dict__ == error.__dict__
    incomplete = StreamIncompleteError("cut", partial_text="abc")
    assert pickle.loads(pickle.dumps(incomplete)).partial_text == "abc"
    failed = AllProvidersFailedError([("A", ServerError("down", status=500)), ("B", ConnectError("refused"))])
    assert "A: HTTP 500: down" in str(failed) and "B: refused" in str(failed)
    assert len(failed.errors) == 2


def test_error_from_data_and_raise_error() -> None:
    assert error_from_data({"error": None}) is None
    assert error_from_data({"choices": []}) is None
    assert type(error_from_data({"error": {"message": "x", "type": "server_error"}})) is ServerError
    assert type(error_from_data({"error": {"message": "x"}}, 401)) is MissingAuthError
    assert type(error_from_data({"whatever": 1}, 429)) is RateLimitError
    with pytest.raises(RateLimitError):
        OpenaiTemplate.raise_error({"error": {"message": "slow", "code": 429}})
    with pytest.raises(ServerError):
        OpenaiTemplate.raise_error({"unknown": "shape"}, 500)
    assert OpenaiTemplate.raise_error({"error": None}) is None
    error = error_from_response(401, {}, b"nope key=" + SECRET.encode(), secrets=[SECRET])
    assert type(error) is MissingAuthError
    assert_no_secret(error)


def test_success_after_errors_on_same_provider(server) -> None:
    provider = make_provider(server)
    server.script(
        json_reply(openai_error("boom", "server_error"), 500),
        sse_reply(chunk("ok"), chunk(finish_reason="stop"), "[DONE]"),
    )
    _, error = collect_error(provider, stream=True)
    assert isinstance(error, ServerError)
    assert collect(provider, stream=True)[1] == "ok"
