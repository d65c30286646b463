"""Codex CLI (a real Responses API client, SPEC 9.5) against the gateway, with the scripted server playing the
model: a shell-tool round trip and an ``apply_patch`` (custom tool) round trip that creates a file.

Codex is the npm package ``@openai/codex`` that ``.ci/run`` installs into ``.clients/`` (or ``LLMRELAY_CODEX``
names its binary). Its ``[model_providers]`` entry points at the gateway with ``wire_api = "responses"``; the
model is a route named ``gpt-5.5`` (a model Codex knows, so it sends its full tool set, ``apply_patch`` as a
free-form custom tool among them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scripted_server import ScriptedServer, chunk, sse_reply, tool_call_delta, usage

ROOT = Path(__file__).resolve().parents[2]
ROUTE = '[routes."gpt-5.5"]\ntargets = ["up/test-model"]\n'


def codex_binary() -> str:
    given = os.environ.get("LLMRELAY_CODEX") or str(ROOT / ".clients" / "node_modules" / ".bin" / "codex")
    if not Path(given).exists():
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and Codex CLI is not installed at {given} (.ci/run installs it)", pytrace=False)
        pytest.skip(f"Codex CLI is not installed at {given}: npm install --prefix .clients @openai/codex")
    return given


def run_codex(gateway_base: str, home: Path, work: Path, prompt: str) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(
        'model = "gpt-5.5"\nmodel_provider = "llmrelay"\n\n'
        "[model_providers.llmrelay]\n"
        'name = "llmrelay"\n'
        f'base_url = "{gateway_base}"\n'
        'wire_api = "responses"\n'
    )
    environ = {**os.environ, "CODEX_HOME": str(home)}
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_API_KEY"):
        environ.pop(name, None)
    command = [codex_binary(), "exec", "--skip-git-repo-check", "-s", "danger-full-access", prompt]
    return subprocess.run(
        command, cwd=work, env=environ, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def tool_call_reply(call_id: str, name: str, arguments: str) -> Any:
    half = len(arguments) // 2
    return sse_reply(
        chunk(role="assistant", content=None),
        chunk(tool_calls=[tool_call_delta(0, id=call_id, name=name, arguments="")]),
        chunk(tool_calls=[tool_call_delta(0, arguments=arguments[:half])]),
        chunk(tool_calls=[tool_call_delta(0, arguments=arguments[half:])]),
        chunk(finish_reason="tool_calls"),
        chunk(choices=[], usage=usage(100, 10)),
        "[DONE]",
    )


def text_reply(text: str) -> Any:
    return sse_reply(chunk(role="assistant", content=""), chunk(text), chunk(finish_reason="stop"), "[DONE]")


def tool_message(request: Any, call_id: str) -> dict[str, Any]:
    messages = request.json()["messages"]
    found = [message for message in messages if message.get("role") == "tool" and message["tool_call_id"] == call_id]
    assert len(found) == 1, messages[-3:]
    return found[0]


def test_codex_shell_tool_round_trip(server: ScriptedServer, make_gateway, tmp_path: Path) -> None:
    gw = make_gateway(ROUTE)
    command = "echo shell-ran-$((6*7)) > made-by-shell.txt && cat made-by-shell.txt"
    server.script(tool_call_reply("call_shell", "exec_command", json.dumps({"cmd": command})))
    server.script(text_reply("The shell said shell-ran-42."))
    result = run_codex(gw.base, tmp_path / "home", tmp_path / "work", "Run the shell command.")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "The shell said shell-ran-42." in result.stdout
    assert (tmp_path / "work" / "made-by-shell.txt").read_text() == "shell-ran-42\n"
    first, second = server.requests[:2]
    sent = first.json()
    assert sent["stream"] is True and sent["model"] == "test-model"
    names = [tool["function"]["name"] for tool in sent["tools"]]
    assert "exec_command" in names and "apply_patch" in names
    assert "shell-ran-42" in tool_message(second, "call_shell")["content"]
    calls = [message for message in second.json()["messages"] if message.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"] == {"name": "exec_command", "arguments": json.dumps({"cmd": command})}
    assert len(server.requests) == 2


def test_codex_apply_patch_round_trip_creates_a_file(server: ScriptedServer, make_gateway, tmp_path: Path) -> None:
    gw = make_gateway(ROUTE)
    patch = '*** Begin Patch\n*** Add File: hello.txt\n+Hello from apply_patch, "quoted" \\ ü\n*** End Patch\n'
    server.script(tool_call_reply("call_patch", "apply_patch", json.dumps({"input": patch})))
    server.script(text_reply("Created hello.txt."))
    result = run_codex(gw.base, tmp_path / "home", tmp_path / "work", "Create hello.txt.")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "work" / "hello.txt").read_text() == 'Hello from apply_patch, "quoted" \\ ü\n'
    assert "Created hello.txt." in result.stdout
    first, second = server.requests[:2]
    [apply_patch] = [tool for tool in first.json()["tools"] if tool["function"]["name"] == "apply_patch"]
    assert apply_patch["function"]["parameters"]["required"] == ["input"]
    assert "*** Begin Patch" in apply_patch["function"]["description"]  # the grammar travels in the description
    # Codex sends the custom call back (store: false, whole history): the function standing for it, same input.
    calls = [message for message in second.json()["messages"] if message.get("tool_calls")]
    arguments = calls[-1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"input": patch}
    assert tool_message(second, "call_patch")["content"]
