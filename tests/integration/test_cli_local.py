"""The installed ``llmrelay`` command with no provider key: it falls back to the embedded local model.

Each ``chat`` / ``models`` run is a fresh process that starts its own llama.cpp
server (~1 s) and stops it at exit, so the runs here are few and ask for few tokens.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_requirements")]

LLMRELAY = Path(sys.executable).with_name("llmrelay")
TIMEOUT = 120


def keyless_env() -> dict[str, str]:
    """The environment without any provider key or llmrelay setting, so the default provider is Local."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.endswith("_API_KEY") and not name.startswith("LLMRELAY_")
    }


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, status: int = 0
) -> subprocess.CompletedProcess[str]:
    if not LLMRELAY.exists():
        pytest.fail(f"the llmrelay command is not installed next to {sys.executable} (pip install -e .)")
    result = subprocess.run(
        [str(LLMRELAY), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env or keyless_env(),
        timeout=TIMEOUT,
    )
    assert result.returncode == status, f"llmrelay {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
    return result


def test_chat_prompt_argument_streams_an_answer_from_the_local_model() -> None:
    result = run("chat", "Hello", "--max-tokens", "24")
    assert result.stdout.strip()
    assert "error" not in result.stderr.lower()


def test_chat_reads_the_prompt_from_stdin() -> None:
    result = run("chat", "--max-tokens", "16", stdin="Hello\n")
    assert result.stdout.strip()


def test_chat_json_non_stream_with_options() -> None:
    result = run(
        "chat",
        "--json",
        "--no-stream",
        "-p",
        "local",
        "-m",
        "smollm2",
        "-s",
        "You are a terse assistant.",
        "--max-tokens",
        "8",
        "Name a colour.",
    )
    data = json.loads(result.stdout)
    assert data["provider"] == "Local"
    assert data["model"] == "smollm2"
    assert isinstance(data["text"], str) and data["text"].strip()
    assert data["finish_reason"] in ("stop", "length")
    assert data["tool_calls"] is None
    usage = data["usage"]  # non-streaming answers from llama.cpp carry usage
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_models_of_the_local_provider() -> None:
    result = run("models", "-p", "local")
    assert result.stdout.split() == ["smollm2", "smollm2-embed", "smollm2-tools"]


def test_providers_marks_local_as_the_default_without_keys() -> None:
    # Starts no server: the table is static. Without any key, the local model is the default.
    rows = json.loads(run("providers", "--json").stdout)
    assert [row["name"] for row in rows if row["default"]] == ["local"]
    (local,) = [row for row in rows if row["name"] == "local"]
    assert local["default_model"] == "smollm2"
    assert local["key"] == "not needed"


# ------------------------------------------------------------------ issue 12: the defects


def read_until(fd: int, marker: bytes, output: bytearray, timeout: float = TIMEOUT) -> None:
    """Read the pty into ``output`` until ``marker`` arrives after what was consumed; then consume it."""
    deadline = time.monotonic() + timeout
    while marker not in output:
        assert time.monotonic() < deadline, f"{marker!r} did not come: {bytes(output)!r}"
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            output += os.read(fd, 4096)
    del output[: output.index(marker) + len(marker)]


def test_interactive_chat_survives_pauses_longer_than_the_servers_keep_alive() -> None:
    # llama.cpp's server closes an idle keep-alive connection after 5 s: the question after a
    # 6 s pause must not fail on the stale pooled connection ("Can not write request body").
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [str(LLMRELAY), "chat", "--max-tokens", "4", "-n"],
        stdin=secondary,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=keyless_env(),
    )
    os.close(secondary)
    output = bytearray()
    try:
        for question in (b"Hi\n", b"Hello again\n", b"And again\n"):
            read_until(primary, b"> ", output)
            os.write(primary, question)
            time.sleep(6)  # the pause a user takes; not a timed assertion
        read_until(primary, b"> ", output)
        os.write(primary, b"\x04")
        assert process.wait(timeout=TIMEOUT) == 0
        stderr = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
        if process.stderr:
            process.stderr.close()
    assert "error" not in stderr, stderr


def test_a_prompt_longer_than_the_context_says_so_when_streaming() -> None:
    long_text = "The quick brown fox jumps over the lazy dog. " * 4000  # ~40,000 tokens > 8,192
    result = run("chat", "-n", "--max-tokens", "4", "Summarise this", stdin=long_text, status=1)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    assert "context" in line
    assert "exceed context window of 8192" in line
    assert "after 0 characters" not in line


def test_the_local_model_gets_its_trained_context_length() -> None:
    from llmrelay.providers import local

    path = local.find_model_path()
    assert local.context_length(path) == 8192  # SmolLM2-135M: llama.context_length in the GGUF metadata
    assert local.build_config(path, 1)["models"][0]["n_ctx"] == 8192


def test_an_image_for_the_local_model_is_refused_with_a_reason(tmp_path: Path) -> None:
    picture = tmp_path / "pic.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    result = run("chat", "-n", "-i", str(picture), "What is this?", status=2)
    line = result.stderr.strip().splitlines()[-1]
    assert "cannot read images" in line
    assert "openai (gpt-4.1-mini)" in line
    assert "stream ended" not in line


def test_a_bad_local_model_file_leads_with_the_reason(tmp_path: Path) -> None:
    not_a_model = tmp_path / "model.gguf"
    not_a_model.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 50)
    cut_short = tmp_path / "short.gguf"
    cut_short.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 5) + b"\x10")
    no_tensors = tmp_path / "empty.gguf"  # a valid header that llama.cpp cannot load: the server fails
    no_tensors.write_bytes(
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 20)
        + b"general.architecture"
        + struct.pack("<IQ", 8, 5)
        + b"llama"
    )
    cases = (
        (not_a_model, "is not a GGUF model file"),
        (cut_short, "header is cut short"),
        (no_tensors, "could not start: ValueError: Failed to load model"),
    )
    for path, reason in cases:
        env = {**keyless_env(), "LLMRELAY_LOCAL_MODEL": str(path)}
        result = run("chat", "-n", "Hi", env=env, status=1)
        line = result.stderr.strip().splitlines()[-1]
        assert reason in line[:200], line


def temp_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("llmrelay-local-*"))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_temp_files_are_left_after_the_command_is_killed(tmp_path: Path, how: signal.Signals) -> None:
    env = {**keyless_env(), "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [str(LLMRELAY), "chat", "-n", "--max-tokens", "200", "Tell me a long story"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(temp_files(tmp_path)) < 2:  # the server's config and log: it is starting
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(how)
        process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if how == signal.SIGTERM:
        assert process.returncode == 143
    deadline = time.monotonic() + 30  # the server notices its parent is gone within a second or so
    while temp_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert temp_files(tmp_path) == []


def test_a_seed_repeats_an_answer_and_every_exchange_is_logged(tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    env = {**keyless_env(), "LLMRELAY_LOGS": str(db)}
    args = ("chat", "-t", "1.5", "--max-tokens", "12", "--seed", "42", "Name three fruits.")
    first = run(*args, env=env)
    second = run(*args, env=env)
    assert first.stdout == second.stdout
    entries = json.loads(run("logs", "--json", env=env).stdout)
    assert [(entry["provider"], entry["model"], entry["options"]["seed"]) for entry in entries] == [
        ("Local", "smollm2", 42),
        ("Local", "smollm2", 42),
    ]
    assert entries[0]["response"].rstrip("\n") == first.stdout.rstrip("\n")
    assert entries[0]["error"] is None


def test_without_a_seed_each_request_gets_a_random_one() -> None:
    from llmrelay.providers.local import Local

    seeds = {Local.prepare_body({"model": "smollm2", "messages": []})["seed"] for _ in range(3)}
    assert len(seeds) == 3
    assert Local.prepare_body({"model": "smollm2", "messages": [], "seed": 7})["seed"] == 7


def test_schema_with_the_local_model_gives_json_that_follows_it() -> None:
    # llama.cpp knows only {"type": "json_object", "schema": …}: Local translates json_schema into it (a grammar).
    # A seed: without one a long enough name is sometimes cut at the token limit, which no grammar can prevent.
    result = run("-p", "local", "--max-tokens", "200", "--seed", "1", "--schema", "name str, age int", "Invent a dog.")
    data = json.loads(result.stdout)
    assert set(data) == {"name", "age"} and isinstance(data["name"], str) and isinstance(data["age"], int)
    assert "warning" not in result.stderr


def test_embed_with_the_local_model() -> None:
    result = run("embed", "-p", "local", "a small test sentence")
    (vector,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(vector) == 576 and all(isinstance(value, float) for value in vector)
