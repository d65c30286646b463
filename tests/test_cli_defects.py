"""The defects a newcomer met in the ``llmrelay`` command (issue 12), each through the installed command.

Runs against the scripted server; the interactive ones drive the chat through a pty.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Reply, chunk, completion, json_reply, sse_reply
from test_cli import LLMRELAY, PNG, SECRET, clean_env, one_error_line, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _take_the_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty on stdin (so Ctrl-C sends SIGINT)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # As in a user's terminal: Ctrl-C is not ignored (a test run started in the background inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler in the child).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """``llmrelay ARGS`` with stdin and stdout (and stderr, if asked) on a pty that is its controlling terminal."""

    def __init__(self, args: list[str], env: dict[str, str], stderr_on_pty: bool = False) -> None:
        self.primary, secondary = os.openpty()
        self.process = subprocess.Popen(
            [str(LLMRELAY), *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary if stderr_on_pty else subprocess.PIPE,
            env=env,
            preexec_fn=_take_the_terminal,
        )
        os.close(secondary)
        self.output = b""

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            assert time.monotonic() < deadline, f"{marker!r} did not come: {self.output!r}"
            ready, _, _ = select.select([self.primary], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.primary, 4096)
                except OSError:
                    break
        assert marker in self.output, self.output
        position = self.output.index(marker) + len(marker)
        seen, self.output = self.output[:position], self.output[position:]
        return seen

    def write(self, data: bytes) -> None:
        os.write(self.primary, data)

    def stderr(self) -> bytes:
        return self.process.stderr.read() if self.process.stderr else b""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.primary)
        if self.process.stderr:
            self.process.stderr.close()


# ---------------------------------------------------------------- 2. stdin and a prompt


def test_piped_text_follows_the_prompt(server) -> None:
    server.script(json_reply(completion("A summary.")))
    result = run(["chat", "-m", "m", "Summarise this"], server, input=b"The file's text.\nLine two.\n")
    assert result.returncode == 0, result.stderr
    content = server.requests[0].json()["messages"][-1]["content"]
    assert content == "Summarise this\n\nThe file's text.\nLine two.\n"


def test_help_says_how_stdin_and_prompt_combine() -> None:
    result = run(["chat", "--help"])
    assert b"followed by the piped" in result.stdout


# ------------------------------------------------------------------ 5. bad --api-base


@pytest.mark.parametrize("value", ["localhost:8000", "not a url", "ftp://example.com/v1", ""])
def test_bad_api_base_is_a_usage_error(value: str) -> None:
    result = run(["chat", "--api-base", value, "Hi"])
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "--api-base" in stderr
    assert "http://" in stderr
    assert "is the server running" not in stderr


def test_404_without_v1_shows_the_url_and_suggests_v1(server) -> None:
    server.script(Reply(status=404, headers={"Content-Type": "text/plain"}, writes=[b"Not Found"]))
    base = server.url  # no /v1
    result = run(["chat", "--api-base", base, "-m", "m", "Hi"])
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"{base}/chat/completions" in line
    assert f"--api-base {base}/v1" in line


# ----------------------------------------------------------------- 6. numbers checked


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "nan"],
        ["--timeout", "-inf"],
        ["--timeout", "0"],
        ["-t", "nan"],
        ["-t", "-1"],
        ["--max-tokens", "0"],
        ["--max-tokens", "lots"],
    ],
)
def test_bad_numbers_are_usage_errors_before_any_request(server, args: list[str]) -> None:
    result = run(["chat", "-m", "m", *args, "Hi"], server)
    assert result.returncode == 2
    assert args[0] in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert server.requests == []


# ------------------------------------------------------- 7. image output checked first


def test_image_output_in_a_missing_directory_fails_before_the_request(server, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.png"
    result = run(["image", "a cat", "-o", str(target), "-m", "img"], server)
    assert result.returncode == 2
    assert "does not exist" in one_error_line(result)
    assert server.requests == []


# ---------------------------------------------------------- 8. a final newline on pipes


def test_piped_answers_end_with_a_newline(server) -> None:
    server.script(json_reply(completion("no newline at the end")), json_reply(completion("ends with one\n")))
    first = run(["chat", "-m", "m", "one"], server)
    second = run(["chat", "-m", "m", "two"], server)
    assert first.stdout == b"no newline at the end\n"
    assert second.stdout == b"ends with one\n"  # not doubled


# ------------------------------------------------------------ 10. binary stdin


@pytest.mark.parametrize("data", [b"\xff\xfe bad utf-8", PNG])
def test_binary_or_invalid_stdin_is_a_usage_error_before_any_request(server, data: bytes) -> None:
    result = run(["chat", "-m", "m"], server, input=data)
    assert result.returncode == 2
    assert "stdin" in one_error_line(result)
    assert server.requests == []


# ------------------------------------------------------------- 11. NO_COLOR


def test_no_color_turns_off_the_dimmed_reasoning(server) -> None:
    def reply() -> Reply:
        return sse_reply(chunk(reasoning_content="think"), chunk("Answer."), chunk(finish_reason="stop"), "[DONE]")

    server.script(reply(), reply())
    outputs = []
    for extra in ({}, {"NO_COLOR": "1"}):
        terminal = Terminal(["chat", "-m", "m", "Why?"], clean_env(LLMRELAY_API_BASE=server.base, **extra), True)
        try:
            outputs.append(terminal.read_until(b"Answer."))
            assert terminal.process.wait(timeout=30) == 0
        finally:
            terminal.close()
    coloured, plain = outputs
    assert b"\x1b[2m" in coloured
    assert b"\x1b[" not in plain
    assert b"think" in plain


# ------------------------------------------------------------- 13. -i checks


def test_attaching_a_directory_says_so(server, tmp_path: Path) -> None:
    result = run(["chat", "-m", "m", "-i", str(tmp_path), "Hi"], server)
    assert result.returncode == 2
    assert "is a directory" in one_error_line(result)


def test_attaching_a_text_file_says_it_is_not_an_image(server, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = run(["chat", "-m", "m", "-i", str(notes), "Hi"], server)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "not an image or audio file" in line
    assert "media" not in line
    assert server.requests == []


# ------------------------------------------------------- 14. why a provider was chosen


def test_a_stray_key_is_named_when_its_provider_cannot_be_reached() -> None:
    env = clean_env(OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    result = run(["chat", "--retries", "0", "Hi"], env=env)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "chosen because OPENAI_API_KEY is set" in line
    assert "-p local" in line
    assert SECRET not in line


# ------------------------------------------------ 15. Ctrl-C stops an answer, not the chat


def test_ctrl_c_in_the_interactive_chat_returns_to_the_prompt(server) -> None:
    server.script(
        Reply(status=200, headers={"Content-Type": "text/event-stream"}, writes=[], head_delay=20),
        json_reply(completion("Second answer.")),
    )
    terminal = Terminal(["chat", "--no-stream", "-m", "m"], clean_env(LLMRELAY_API_BASE=server.base))
    try:
        terminal.read_until(b"> ")
        terminal.write(b"slow question\n")
        assert server.wait_for(lambda: len(server.requests) == 1, timeout=15)
        terminal.write(b"\x03")  # Ctrl-C on the terminal: SIGINT to the chat
        terminal.read_until(b"> ")
        terminal.write(b"second question\n")
        terminal.read_until(b"Second answer.")
        terminal.read_until(b"> ")
        terminal.write(b"\x04")  # Ctrl-D quits
        assert terminal.process.wait(timeout=15) == 0
        stderr = terminal.stderr()
    finally:
        terminal.close()
    assert b"answer stopped" in stderr
    assert b"Traceback" not in stderr
    # the stopped question is not part of the history
    assert server.requests[1].json()["messages"] == [{"role": "user", "content": "second question"}]


def test_ctrl_c_at_the_prompt_quits(server) -> None:
    terminal = Terminal(["chat", "-m", "m"], clean_env(LLMRELAY_API_BASE=server.base))
    try:
        terminal.read_until(b"> ")
        # A user's pause: CPython's readline misses a SIGINT that lands between printing the prompt and
        # waiting for a key (it only checks signals when that wait is interrupted).
        time.sleep(0.5)
        terminal.write(b"\x03")
        assert terminal.process.wait(timeout=15) == 130
    finally:
        terminal.close()


# --------------------------------------------------------- 16. providers and a bad default


def test_providers_warns_about_an_invalid_llmrelay_provider() -> None:
    result = run(["providers"], env=clean_env(LLMRELAY_PROVIDER="nope"))
    assert result.returncode == 0
    assert b"LLMRELAY_PROVIDER" in result.stderr
    assert b"'nope'" in result.stderr


# -------------------------------------------------- 17. a connection dropped mid-answer


def broken_stream() -> Reply:
    return sse_reply(chunk(role="assistant", content=""), chunk("Half an "), chunk("answer"), end="abrupt")


def test_a_dropped_connection_is_one_plain_line(server) -> None:
    server.script(broken_stream())
    result = run(["chat", "-m", "m", "Hi"], server)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "closed after 14 characters" in line
    assert "400" not in line
    assert "aiohttp" not in line.lower()
    assert result.stdout == b"Half an answer\n"


def test_json_keeps_the_partial_text_with_the_error(server) -> None:
    server.script(broken_stream())
    result = run(["chat", "--json", "-m", "m", "Hi"], server)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["text"] == "Half an answer"
    assert "closed after 14 characters" in data["error"]


# ------------------------------------------------------------ 18. small wording items


def test_auth_error_names_the_provider_once(server) -> None:
    server.script(json_reply({"error": {"message": "Invalid API Key"}}, status=401))
    env = clean_env(GROQ_API_KEY=SECRET)
    result = run(["chat", "-p", "groq", "--api-base", server.base, "Hi"], env=env)
    line = one_error_line(result)
    assert line.count("Groq") == 1, line


def test_temperature_and_max_tokens_have_help() -> None:
    text = run(["chat", "--help"]).stdout.decode()
    assert "sampling temperature" in text
    assert "the most tokens" in text


def test_providers_json_has_key_status_fields() -> None:
    result = run(["providers", "--json"], env=clean_env(GROQ_API_KEY=SECRET))
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["groq"]["key_env"] == "GROQ_API_KEY"
    assert rows["groq"]["key_set"] is True
    assert rows["groq"]["needs_key"] is True
    assert rows["openai"]["key_set"] is False
    assert rows["ollama"]["needs_key"] is False
    assert SECRET not in result.stdout.decode()


# ------------------------------------------------------------ llm-style conveniences


def test_options_seed_and_env_model_reach_the_request(server) -> None:
    server.script(json_reply(completion("ok")))
    env = clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_MODEL="env-model")
    args = ["chat", "--seed", "7", "-o", "top_p", "0.5", "-o", "stop", '["END"]', "-o", "user", "ada", "Hi"]
    result = run(args, env=env)
    assert result.returncode == 0, result.stderr
    body = server.requests[0].json()
    assert body["model"] == "env-model"
    assert body["seed"] == 7
    assert body["top_p"] == 0.5
    assert body["stop"] == ["END"]
    assert body["user"] == "ada"


def test_a_prompt_without_a_subcommand_means_chat(server) -> None:
    server.script(json_reply(completion("ok")), json_reply(completion("ok")))
    assert run(["Hello there", "-m", "m"], server).returncode == 0
    assert run(["-m", "m", "Second"], server).returncode == 0
    assert [request.json()["messages"][-1]["content"] for request in server.requests] == ["Hello there", "Second"]
    assert run(["providers", "--json"], server).returncode == 0  # a known command still wins


def test_stdin_as_an_attachment(server) -> None:
    server.script(json_reply(completion("A picture.")))
    result = run(["chat", "-m", "m", "-a", "-", "What is this?"], server, input=PNG)
    assert result.returncode == 0, result.stderr
    content: list[dict[str, Any]] = server.requests[0].json()["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_spinner_waits_for_the_first_token_on_a_terminal(server) -> None:
    late = sse_reply(chunk("Late."), chunk(finish_reason="stop"), "[DONE]")
    late.head_delay = 1.5
    server.script(late)
    terminal = Terminal(["chat", "-m", "m", "Hi"], clean_env(LLMRELAY_API_BASE=server.base), stderr_on_pty=True)
    try:
        seen = terminal.read_until(b"Late.")
        assert terminal.process.wait(timeout=30) == 0
    finally:
        terminal.close()
    assert b"Waiting for Custom" in seen


# ------------------------------------------- 3. the interactive history outgrows the context


def context_error() -> Reply:
    return json_reply(
        {"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}},
        status=400,
    )


def test_the_interactive_chat_drops_the_oldest_turns_to_fit_the_context(server) -> None:
    server.script(
        json_reply(completion("A1")),
        json_reply(completion("A2")),
        context_error(),
        context_error(),
        json_reply(completion("A3")),
    )
    terminal = Terminal(["chat", "--no-stream", "-m", "m", "-s", "sys"], clean_env(LLMRELAY_API_BASE=server.base))
    try:
        for question, answer in ((b"one", b"A1"), (b"two", b"A2"), (b"three", b"A3")):
            terminal.read_until(b"> ")
            terminal.write(question + b"\n")
            terminal.read_until(answer)
        terminal.read_until(b"> ")
        terminal.write(b"exit\n")
        assert terminal.process.wait(timeout=15) == 0
        stderr = terminal.stderr().decode()
    finally:
        terminal.close()
    assert "the oldest 2 exchanges left the history" in stderr
    assert "error" not in stderr
    assert [[m["content"] for m in request.json()["messages"]] for request in server.requests[2:]] == [
        ["sys", "one", "A1", "two", "A2", "three"],
        ["sys", "two", "A2", "three"],
        ["sys", "three"],
    ]


# ------------------------------------------------ 4. an image for a model that cannot see


def test_an_image_refused_by_a_remote_model_suggests_a_vision_model(server, tmp_path: Path) -> None:
    picture = tmp_path / "pic.png"
    picture.write_bytes(PNG)
    server.script(
        json_reply({"error": {"message": "image input is not supported"}}, status=400),
        sse_reply(end="abrupt"),
    )
    for args in (["--no-stream"], []):
        result = run(["chat", *args, "--retries", "0", "-m", "text-only", "-i", str(picture), "What is this?"], server)
        assert result.returncode == 1
        assert "may not read images" in one_error_line(result)


# ---------------------------------------- 9. temp files of dead runs are swept by the next


def test_the_next_local_start_removes_files_of_dead_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from llmrelay.providers import local

    finished = subprocess.Popen(["true"])
    finished.wait()
    dead_pid = finished.pid  # reaped: no process has this pid now
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = [tmp_path / f"llmrelay-local-{dead_pid}-abc.json", tmp_path / f"llmrelay-local-{dead_pid}-abc.log"]
    alive = tmp_path / f"llmrelay-local-{os.getpid()}-def.json"
    other = tmp_path / "llmrelay-local-notes.txt"
    for path in (*stale, alive, other):
        path.write_text("{}")
    local._sweep_stale_files()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_every_subcommand_wins_over_a_prompt_of_the_same_name() -> None:
    # `llmrelay WORD` is a chat prompt unless WORD is a command: serve and keys included.
    for command in ("models", "providers", "logs", "serve", "keys"):
        result = run([command, "--help"])
        assert result.returncode == 0, result.stderr
        assert f"usage: llmrelay {command}".encode() in result.stdout
