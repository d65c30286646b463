"""The installed ``llmrelay`` command with no provider key: it falls back to the embedded local model.

Each ``chat`` / ``models`` run is a fresh process that starts its own llama.cpp
server (~1 s) and stops it at exit, so the runs here are few and ask for few tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if not LLMRELAY.exists():
        pytest.fail(f"the llmrelay command is not installed next to {sys.executable} (pip install -e .)")
    result = subprocess.run(
        [str(LLMRELAY), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=keyless_env(),
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"llmrelay {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}"
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
    assert result.stdout.split() == ["smollm2", "smollm2-tools"]


def test_providers_marks_local_as_the_default_without_keys() -> None:
    # Starts no server: the table is static. Without any key, the local model is the default.
    rows = json.loads(run("providers", "--json").stdout)
    assert [row["name"] for row in rows if row["default"]] == ["local"]
    (local,) = [row for row in rows if row["name"] == "local"]
    assert local["default_model"] == "smollm2"
    assert local["key"] == "not needed"
