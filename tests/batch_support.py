"""Helpers for the ``llmrelay batch`` tests: input files, running the installed command, reading the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

LLMRELAY = Path(sys.executable).with_name("llmrelay")
CHAT = "/v1/chat/completions"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without provider keys, base URLs or LLMRELAY_* settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name.startswith("LLMRELAY_"))
    }
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def chat_line(custom_id: str, content: str | None = None, model: str = "m") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content or custom_id}]}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def write_input(path: Path, lines: list[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as file:
        for line in lines:
            file.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def numbered(path: Path, count: int, prefix: str = "line") -> Path:
    """An input of ``count`` chat lines: custom_id ``{prefix}-{i}``, content the same string."""
    return write_input(path, [chat_line(f"{prefix}-{index}") for index in range(count)])


def batch_args(input_path: Path, base: str, *extra: str) -> list[str]:
    return [str(LLMRELAY), "batch", str(input_path), "--api-base", base, *extra]


def run_batch(input_path: Path, base: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batch_args(input_path, base, *extra),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_batch(input_path: Path, base: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        batch_args(input_path, base, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def output_of(input_path: Path) -> Path:
    return input_path.with_name(input_path.name.replace(".jsonl", ".output.jsonl"))


def read_output(path: Path) -> list[dict[str, Any]]:
    """Every line of an output file, parsed (a line that does not parse fails the test)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the output must end with a complete line"
    return [json.loads(line) for line in text.splitlines()]


def ids_once(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(record["custom_id"] for record in records)


def status_of(record: dict[str, Any]) -> int | None:
    response = record["response"]
    return None if response is None else response["status_code"]
