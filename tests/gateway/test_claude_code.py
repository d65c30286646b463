"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``) through the gateway's ``/v1/messages`` (SPEC 9.5):
``claude -p`` with ``ANTHROPIC_BASE_URL`` at the gateway runs a ``Bash`` tool round trip, the scripted server
playing the model. ``.ci/run`` installs the CLI into ``.clients/``; elsewhere set ``LLMRELAY_CLAUDE`` to its path.
Skipped on a developer machine without the CLI, failed in CI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scripted_server import RecordedRequest, Reply, ScriptedServer, chunk, completion, json_reply, sse_reply, usage
from scripted_server import tool_call_delta as delta

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-llmrelay-claude-code-test-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
PROOF = "llmrelay-proof-7d1"
COMMAND = f"echo {PROOF} > proof.txt && cat proof.txt"
# No network here: no update checks, telemetry, error reports or other traffic besides the model's.
QUIET = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}


def claude_binary() -> str:
    found = os.environ.get("LLMRELAY_CLAUDE") or str(ROOT / ".clients" / "node_modules" / ".bin" / "claude")
    if Path(found).exists() or shutil.which(found):
        return found
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and Claude Code is not installed at {found} (.ci/run installs it)", pytrace=False)
    pytest.skip("Claude Code is not installed (npm install --prefix .clients @anthropic-ai/claude-code)")


def play_the_model(request: RecordedRequest) -> Reply:
    """Call Bash once; once the tool result is there, answer with it."""
    body = request.json()
    tools = [tool["function"]["name"] for tool in body.get("tools", [])]
    results = [message for message in body["messages"] if message.get("role") == "tool"]
    if "Bash" in tools and not results:
        arguments = json.dumps({"command": COMMAND, "description": "Write the proof file"})
        if body.get("stream"):
            return sse_reply(
                chunk(role="assistant", content="Running it."),
                chunk(tool_calls=[delta(0, id="call_bash_1", name="Bash", arguments=arguments[:20])]),
                chunk(tool_calls=[delta(0, arguments=arguments[20:])]),
                chunk(finish_reason="tool_calls"),
                chunk(choices=[], usage=usage(100, 20)),
                "[DONE]",
            )
        call = {"id": "call_bash_1", "type": "function", "function": {"name": "Bash", "arguments": arguments}}
        return json_reply(completion("Running it.", tool_calls=[call], finish_reason="tool_calls"))
    text = "Tool said: " + (str(results[-1]["content"]).strip() if results else "nothing")
    if body.get("stream"):
        return sse_reply(
            chunk(role="assistant", content=text),
            chunk(finish_reason="stop"),
            chunk(choices=[], usage=usage(9, 3)),
            "[DONE]",
        )
    return json_reply(completion(text))


def test_claude_code_runs_a_bash_tool_round_trip(server: ScriptedServer, make_gateway, tmp_path: Path) -> None:
    binary = claude_binary()
    server.route("POST", "/v1/chat/completions", play_the_model)
    gw = make_gateway(
        f'[routes.fast]\ntargets = ["up/test-model"]\n\n[aliases]\n"claude-*" = "fast"\n\n'
        f'[[keys]]\nname = "cc"\nsha256 = "{DIGEST}"\n'
    )
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env: dict[str, Any] = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_AUTH_TOKEN": KEY,
        **QUIET,
    }
    done = subprocess.run(
        [binary, "-p", "Write the proof file with the Bash tool.", "--allowedTools", "Bash", "--output-format", "json"],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], gw.access_lines)
    result = json.loads(done.stdout)
    assert result["is_error"] is False and result["result"] == f"Tool said: {PROOF}"
    assert (work / "proof.txt").read_text().strip() == PROOF  # the tool really ran
    chats = [request.json() for request in server.requests if request.route_path == "/v1/chat/completions"]
    tool_turn = next(body for body in chats if any(message.get("role") == "tool" for message in body["messages"]))
    messages = tool_turn["messages"]
    calls = [message for message in messages if message.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["id"] == "call_bash_1"
    assert json.loads(calls[-1]["tool_calls"][0]["function"]["arguments"])["command"] == COMMAND
    result_message = messages[messages.index(calls[-1]) + 1]
    assert result_message["role"] == "tool" and result_message["tool_call_id"] == "call_bash_1"
    assert PROOF in str(result_message["content"])
    messages_lines = [line for line in gw.access_lines if "POST /v1/messages" in line]
    assert messages_lines and all(" 200 " in line and "route=fast" in line for line in messages_lines)
    assert all(body["model"] == "test-model" for body in chats)  # claude-… ids reached the route by the alias
