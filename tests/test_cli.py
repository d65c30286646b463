"""The ``llmrelay`` command, run as a subprocess against the scripted server.

Exit codes checked here: 0 success, 1 a failed request (missing key, HTTP error, server
down), 2 a usage error (unknown provider, empty prompt, missing -i file), 130 Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripted_server import Reply, chunk, completion, json_reply, sse_reply, tool_call_delta, usage

LLMRELAY = Path(sys.executable).with_name("llmrelay")
SECRET = "sk-cli-SECRET-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without provider keys, base URLs or LLMRELAY_* settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name.startswith("LLMRELAY_"))
    }
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def run(
    args: list[str],
    server: Any = None,
    *,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``llmrelay ARGS``; with ``server``, the default provider is Custom aimed at it."""
    environment = env if env is not None else clean_env()
    if server is not None:
        environment.setdefault("LLMRELAY_API_BASE", server.base)
    return subprocess.run(
        [str(LLMRELAY), *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=environment,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def hello_stream() -> Reply:
    return sse_reply(
        chunk(role="assistant", content=""),
        chunk("Hel"),
        chunk("lo, wörld"),
        chunk(" \n  end "),
        chunk(finish_reason="stop"),
        chunk(choices=[], usage=usage(3, 4)),
        "[DONE]",
    )


# ----------------------------------------------------------------------------- chat


def test_chat_streams_the_exact_text_to_stdout(server) -> None:
    server.script(hello_stream())
    result = run(["chat", "-m", "test-model", "Hi"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, wörld \n  end \n".encode()  # a final line break: `| tee` keeps answers apart
    assert result.stderr == b""
    body = server.requests[0].json()
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["stream"] is True
    assert body["model"] == "test-model"


def test_chat_without_model_uses_the_first_listed_model(server) -> None:
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "zeta"}, {"id": "alpha"}]}))
    server.script(hello_stream())
    result = run(["chat", "Hi"], server, env=clean_env(LLMRELAY_API_KEY=f"{SECRET}-listing"))
    assert result.returncode == 0, result.stderr
    assert server.requests[-1].json()["model"] == "alpha"


def test_reasoning_goes_to_stderr_not_stdout(server) -> None:
    server.script(
        sse_reply(
            chunk(reasoning_content="Let me "),
            chunk(reasoning_content="think."),
            chunk("The answer."),
            chunk(finish_reason="stop"),
            "[DONE]",
        )
    )
    result = run(["chat", "-m", "m", "Why?"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"The answer.\n"
    assert result.stderr == b"Let me think.\n"  # not a terminal: no colour codes


def test_prompt_from_stdin(server) -> None:
    server.script(json_reply(completion("ok")))
    result = run(["chat", "-m", "m"], server, input="from stdin — ünïcode\nsecond line\n".encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ok\n"
    assert server.requests[0].json()["messages"][-1]["content"] == "from stdin — ünïcode\nsecond line\n"


def test_dash_reads_stdin(server) -> None:
    server.script(json_reply(completion("ok")))
    result = run(["chat", "-m", "m", "-"], server, input=b"dash prompt")
    assert result.returncode == 0, result.stderr
    assert server.requests[0].json()["messages"] == [{"role": "user", "content": "dash prompt"}]


def test_empty_stdin_is_a_usage_error(server) -> None:
    result = run(["chat", "-m", "m"], server, input=b"  \n")
    assert result.returncode == 2
    assert "empty" in one_error_line(result)
    assert server.requests == []


def test_json_output(server) -> None:
    server.script(
        sse_reply(
            chunk(reasoning_content="hmm"),
            chunk("Calling."),
            chunk(tool_calls=[tool_call_delta(0, id="call_9", name="get_time", arguments='{"tz":')]),
            chunk(tool_calls=[tool_call_delta(0, arguments='"UTC"}')]),
            chunk(finish_reason="tool_calls", model="served-model"),
            chunk(choices=[], usage=usage(5, 6)),
            "[DONE]",
        )
    )
    result = run(["chat", "--json", "-m", "m", "What time is it?"], server)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    data = json.loads(result.stdout)
    assert data["text"] == "Calling."
    assert data["reasoning"] == "hmm"
    assert data["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"UTC"}'}}
    ]
    assert data["usage"]["prompt_tokens"] == 5
    assert data["usage"]["completion_tokens"] == 6
    assert data["usage"]["total_tokens"] == 11
    assert data["finish_reason"] == "tool_calls"
    assert data["provider"] == "Custom"
    assert data["model"] == "test-model"  # the model the server reported first


def test_json_output_without_extras(server) -> None:
    server.script(json_reply(completion("plain", model="m")))
    result = run(["chat", "--json", "--no-stream", "-m", "m", "Hi"], server)
    data = json.loads(result.stdout)
    assert data == {
        "text": "plain",
        "reasoning": None,
        "tool_calls": None,
        "usage": None,
        "finish_reason": "stop",
        "provider": "Custom",
        "model": "m",
    }


def test_no_stream(server) -> None:
    server.script(json_reply(completion("Whole answer.", usage=usage(2, 3))))
    result = run(["chat", "--no-stream", "-m", "m", "Hi"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Whole answer.\n"
    body = server.requests[0].json()
    assert body["stream"] is False
    assert "stream_options" not in body
    assert server.requests[0].headers["accept"] == "application/json"


def test_options_reach_the_request(server) -> None:
    server.script(json_reply(completion("ok")))
    result = run(
        ["chat", "-m", "m", "-s", "Be brief.", "-t", "0", "--max-tokens", "33", "--api-key", SECRET, "Hi"], server
    )
    assert result.returncode == 0, result.stderr
    request = server.requests[0]
    body = request.json()
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body["temperature"] == 0
    assert body["max_tokens"] == 33
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_image_is_sent_as_a_data_uri(server, tmp_path: Path) -> None:
    picture = tmp_path / "pic.png"
    picture.write_bytes(PNG)
    server.script(json_reply(completion("A picture.")))
    result = run(["chat", "-m", "m", "-i", str(picture), "What is this?"], server)
    assert result.returncode == 0, result.stderr
    content = server.requests[0].json()["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
    ]


def test_missing_image_file_is_a_usage_error(server, tmp_path: Path) -> None:
    result = run(["chat", "-m", "m", "-i", str(tmp_path / "nope.png"), "Hi"], server)
    assert result.returncode == 2
    assert "nope.png" in one_error_line(result)
    assert server.requests == []


def test_usage_on_stderr(server) -> None:
    server.script(hello_stream())
    result = run(["chat", "-u", "-m", "m", "Hi"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, wörld \n  end \n".encode()  # a final line break: `| tee` keeps answers apart
    assert result.stderr.decode() == "tokens: 3 prompt + 4 completion = 7 total\n"


def test_ad_hoc_server_with_api_base(server) -> None:
    server.script(json_reply(completion("ok")))
    result = run(["chat", "--api-base", server.base, "--api-key", SECRET, "-m", "m", "Hi"], env=clean_env())
    assert result.returncode == 0, result.stderr
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_catalog_provider_with_its_key_variable(server) -> None:
    server.script(json_reply(completion("ok")))
    env = clean_env(GROQ_API_KEY=SECRET)
    result = run(["chat", "-p", "GROQ", "--api-base", server.base, "Hi"], env=env)
    assert result.returncode == 0, result.stderr
    request = server.requests[0]
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json()["model"] == "llama-3.3-70b-versatile"


def test_interactive_chat_keeps_the_history(server) -> None:
    server.script(json_reply(completion("First answer.")), json_reply(completion("Second answer.")))
    primary, secondary = os.openpty()
    env = clean_env(LLMRELAY_API_BASE=server.base)
    process = subprocess.Popen(
        [str(LLMRELAY), "chat", "--no-stream", "-m", "m", "-s", "sys"],
        stdin=secondary,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(secondary)
    output = b""

    def read_until(marker: bytes, timeout: float = 15) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output:
            assert time.monotonic() < deadline, output
            ready, _, _ = select.select([primary], [], [], 0.1)
            if ready:
                output += os.read(primary, 4096)

    try:
        read_until(b"> ")
        os.write(primary, b"one\n")
        read_until(b"First answer.")
        read_until(b"> ")
        os.write(primary, b"two\n")
        read_until(b"Second answer.")
        read_until(b"> ")
        os.write(primary, b"exit\n")
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
        process.stderr.close()
    assert [request.json()["messages"] for request in server.requests] == [
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "one"}],
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "two"},
        ],
    ]


# --------------------------------------------------------------------------- errors


def test_unknown_provider_is_a_usage_error() -> None:
    result = run(["chat", "-p", "nope", "Hi"])
    assert result.returncode == 2
    line = one_error_line(result)
    assert "'nope'" in line
    assert "groq" in line
    assert "local" in line


def test_unknown_llmrelay_provider_is_a_usage_error() -> None:
    result = run(["chat", "Hi"], env=clean_env(LLMRELAY_PROVIDER="nope"))
    assert result.returncode == 2
    assert "LLMRELAY_PROVIDER" in one_error_line(result)


def test_missing_key_names_the_variable() -> None:
    result = run(["chat", "-p", "groq", "Hi"])
    assert result.returncode == 1
    assert one_error_line(result) == "error: Groq needs an API key: set GROQ_API_KEY (or pass --api-key)"
    assert result.stdout == b""


def test_missing_key_for_models_too() -> None:
    result = run(["models", "-p", "mistral"])
    assert result.returncode == 1
    assert "MISTRAL_API_KEY" in one_error_line(result)


def test_debug_shows_the_traceback() -> None:
    result = run(["chat", "--debug", "-p", "groq", "Hi"])
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith("error: Groq needs an API key")


def test_server_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(["chat", "--retries", "0", "--api-base", f"http://127.0.0.1:{port}/v1", "-m", "m", "Hi"], timeout=30)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"127.0.0.1:{port}" in line
    assert "cannot reach" in line


def test_rate_limit_is_one_line_without_the_key(server) -> None:
    server.script(
        json_reply(
            {
                "error": {
                    "message": "Rate limit reached for requests",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            status=429,
            headers={"retry-after": "7"},
        )
    )
    result = run(["chat", "--retries", "0", "--api-key", SECRET, "-m", "m", "Hi"], server)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "429" in line
    assert "Rate limit reached" in line
    assert "retry after 7" in line
    assert SECRET not in result.stderr.decode()
    assert result.stdout == b""


def test_unauthorized_names_the_variable(server) -> None:
    server.script(json_reply({"error": {"message": "Invalid API Key"}}, status=401))
    result = run(["chat", "-m", "m", "Hi"], server, env=clean_env(LLMRELAY_API_KEY=SECRET))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "Invalid API Key" in line
    assert "LLMRELAY_API_KEY" in line
    assert SECRET not in line


def test_ctrl_c_exits_130_without_a_traceback(server) -> None:
    server.script(Reply(status=200, headers={"Content-Type": "text/event-stream"}, writes=[], head_delay=10))
    env = clean_env(LLMRELAY_API_BASE=server.base)
    process = subprocess.Popen(
        [str(LLMRELAY), "chat", "-m", "m", "Hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, as in a user's terminal
    )
    try:
        assert server.wait_for(lambda: len(server.requests) == 1, timeout=15)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert b"Traceback" not in stderr


def test_no_command_is_a_usage_error() -> None:
    result = run([])
    assert result.returncode == 2
    assert b"usage:" in result.stderr


def test_help_works_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay", "--help"], capture_output=True, env=clean_env(), timeout=30
    )
    assert result.returncode == 0
    for command in (b"chat", b"models", b"image", b"providers", b"logs", b"serve", b"keys"):
        assert command in result.stdout


def test_help_does_not_import_the_http_stack() -> None:
    code = (
        "import sys\nfrom llmrelay import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('aiohttp', 'asyncio', 'llmrelay.providers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=30)
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- models


def test_models(server) -> None:
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "b-model"}, {"id": "a-model"}]}))
    result = run(["models", "--api-key", f"{SECRET}-models"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"a-model\nb-model\n"


def test_models_json(server) -> None:
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "b-model"}, {"id": "a-model"}]}))
    result = run(["models", "--json", "--api-key", f"{SECRET}-models-json"], server)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["a-model", "b-model"]
    assert server.requests[0].path == "/v1/models"


# -------------------------------------------------------------------------- providers


def test_providers_table_never_prints_a_key() -> None:
    result = run(["providers"], env=clean_env(GROQ_API_KEY=SECRET))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert SECRET not in out
    rows = {line[2:].split()[0]: line for line in out.splitlines() if line[2:].strip() and line[0] in " *"}
    for name in ("openai", "groq", "mistral", "ollama", "custom", "local"):
        assert name in rows, out
    assert rows["groq"].startswith("* ")  # the default: the only provider with a key
    assert "https://api.groq.com/openai/v1" in rows["groq"]
    assert "GROQ_API_KEY set" in rows["groq"]
    assert "llama-3.3-70b-versatile" in rows["groq"]
    assert "OPENAI_API_KEY not set" in rows["openai"]
    assert "http://localhost:11434/v1" in rows["ollama"]
    assert "not needed" in rows["ollama"]


def test_providers_json() -> None:
    result = run(["providers", "--json"], env=clean_env(LLMRELAY_PROVIDER="mistral"))
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["mistral"]["default"] is True
    assert rows["mistral"]["base_url"] == "https://api.mistral.ai/v1"
    assert rows["mistral"]["key"] == "MISTRAL_API_KEY not set"
    assert sum(row["default"] for row in rows.values()) == 1


# ------------------------------------------------------------------------------ image


def test_image_b64_result_writes_the_exact_bytes(server, tmp_path: Path) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"b64_json": base64.b64encode(PNG).decode()}]}))
    target = tmp_path / "cat.png"
    result = run(["image", "a cat", "-o", str(target), "-m", "img-1", "--size", "256x256"], server)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == PNG
    assert result.stdout.decode() == f"{target}\n"
    assert server.requests[0].json() == {"model": "img-1", "prompt": "a cat", "size": "256x256"}


def test_image_url_result_is_downloaded_without_the_key(server, tmp_path: Path) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": f"{server.url}/files/cat.png"}]}))
    server.route(
        "GET", "/files/cat.png", Reply(headers={"Content-Type": "image/png"}, writes=[PNG], body_mode="length")
    )
    target = tmp_path / "downloaded.png"
    result = run(["image", "a cat", "-o", str(target), "-m", "img-1", "--api-key", SECRET], server)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == PNG
    post, get = server.requests
    assert post.headers["authorization"] == f"Bearer {SECRET}"
    assert get.path == "/files/cat.png"
    assert "authorization" not in get.headers


def test_image_bad_size_is_a_usage_error(server, tmp_path: Path) -> None:
    result = run(["image", "a cat", "-o", str(tmp_path / "x.png"), "-m", "img", "--size", "big"], server)
    assert result.returncode == 2
    assert "--size" in one_error_line(result)


def test_image_needs_a_model_when_the_provider_has_no_default(server, tmp_path: Path) -> None:
    result = run(["image", "a cat", "-o", str(tmp_path / "x.png")], server)
    assert result.returncode == 2
    assert "-m MODEL" in one_error_line(result)
    assert not (tmp_path / "x.png").exists()


def test_image_server_error_leaves_no_file(server, tmp_path: Path) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"error": {"message": "boom"}}, status=500))
    target = tmp_path / "x.png"
    result = run(["image", "a cat", "-o", str(target), "-m", "img"], server)
    assert result.returncode == 1
    assert "boom" in one_error_line(result)
    assert not target.exists()
