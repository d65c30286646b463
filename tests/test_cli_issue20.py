"""Issue 20 through the installed ``llmrelay`` command: the defects (-c, retries, SIGTERM, logs, bad values,
``keys new``) and what ``llm`` users reach for next (-x, --schema, embed, models --all)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from scripted_server import (
    Reply,
    ScriptedServer,
    chunk,
    completion,
    embedding_vector,
    embeddings_handler,
    json_reply,
    sse_event,
    sse_reply,
)
from test_cli import LLMRELAY, clean_env, run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def logged(db: Path) -> list[dict[str, Any]]:
    result = run(["logs", "--json", "-n", "0"], env=clean_env(LLMRELAY_LOGS=str(db)))
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def answer(text: str, model: str = "m1") -> Any:
    return json_reply(completion(text, model=model))


def error_reply(status: int, headers: dict[str, str] | None = None) -> Any:
    return json_reply({"error": {"message": f"status {status}", "type": "server_error"}}, status, headers)


# ------------------------------------------------------------------ defect 1: -c continues where it was


def test_continue_uses_the_conversations_provider_and_model(server, tmp_path: Path) -> None:
    env = clean_env(VLLM_API_BASE=server.base, LLMRELAY_LOGS=str(tmp_path / "logs.db"))
    server.script(answer("One."), answer("Two."))
    assert run(["-p", "vllm", "-m", "m1", "--no-stream", "first"], env=env).returncode == 0
    second = run(["-c", "--no-stream", "continue"], env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == b"Two.\n"
    body = server.requests[1].json()
    assert body["model"] == "m1"
    assert body["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "continue"},
    ]
    assert [entry["provider"] for entry in logged(tmp_path / "logs.db")] == ["vLLM", "vLLM"]


def test_continue_reuses_an_api_base_conversation_and_an_explicit_one_wins(server, tmp_path: Path) -> None:
    env = clean_env(LLMRELAY_LOGS=str(tmp_path / "logs.db"))
    server.script(answer("One."), answer("Two."))
    assert run(["--api-base", server.base, "-m", "m1", "--no-stream", "first"], env=env).returncode == 0
    second = run(["-c", "--no-stream", "again"], env=env)
    assert second.returncode == 0, second.stderr
    assert len(server.requests) == 2 and server.requests[1].json()["model"] == "m1"
    with ScriptedServer() as other:
        other.script(answer("Three.", model="m2"))
        third = run(["-c", "--api-base", other.base, "-m", "m2", "--no-stream", "elsewhere"], env=env)
        assert third.returncode == 0, third.stderr
        assert other.requests[0].json()["model"] == "m2"
        assert len(other.requests[0].json()["messages"]) == 5
    assert len(server.requests) == 2
    assert all("key" not in name for name in logged(tmp_path / "logs.db")[0])  # no key column, ever


# ------------------------------------------------------------------ defect 2: -c after a failed first turn


def test_continue_after_a_failed_first_turn(server, tmp_path: Path) -> None:
    env = clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_LOGS=str(tmp_path / "logs.db"))
    server.script(json_reply({"error": {"message": "bad"}}, 400), answer("Fine."))
    assert run(["-m", "m1", "--no-stream", "first"], env=env).returncode == 1
    second = run(["-c", "--no-stream", "second"], env=env)
    assert second.returncode == 0, second.stderr
    assert server.requests[1].json()["messages"] == [{"role": "user", "content": "second"}]
    entries = logged(tmp_path / "logs.db")
    assert entries[0]["conversation_id"] == entries[1]["conversation_id"]


# ------------------------------------------------------------------ defect 3: the CLI retries like the client


def test_retries_a_500_and_a_429_with_retry_after_then_answers(server) -> None:
    server.script(error_reply(500), error_reply(429, {"Retry-After": "0"}), answer("Done."))
    result = run(["-m", "m1", "--no-stream", "go"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Done.\n"
    assert len(server.requests) == 3
    notes = result.stderr.decode().splitlines()
    assert len(notes) == 2
    assert "retry 1 of 2" in notes[0] and "HTTP 500" in notes[0]
    assert "retry 2 of 2 in 0.0 s" in notes[1] and "HTTP 429" in notes[1]


def test_retries_option_and_its_limit(server) -> None:
    server.script(error_reply(503))
    result = run(["-m", "m1", "--retries", "0", "go"], server)
    assert result.returncode == 1 and len(server.requests) == 1
    server.reset()
    server.script(error_reply(502), error_reply(502))
    result = run(["-m", "m1", "--retries", "1", "go"], server)
    assert result.returncode == 1 and len(server.requests) == 2
    server.reset()
    server.script(error_reply(400))
    assert run(["-m", "m1", "go"], server).returncode == 1
    assert len(server.requests) == 1  # a 400 is never retried


def test_no_retry_after_output(server) -> None:
    server.script(sse_reply(chunk("partial "), end="abrupt"), answer("never"))
    result = run(["-m", "m1", "go"], server)
    assert result.returncode == 1
    assert result.stdout == b"partial \n"
    assert len(server.requests) == 1


# ------------------------------------------------------------------ defect 4: SIGTERM mid-answer


def test_sigterm_mid_answer_ends_the_line_and_logs_it_as_interrupted(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    events = [sse_event(chunk("partial")), 30.0, sse_event(chunk(finish_reason="stop")), sse_event("[DONE]")]
    server.script(Reply(headers={"Content-Type": "text/event-stream"}, writes=events))
    process = subprocess.Popen(
        [str(LLMRELAY), "-m", "m1", "go"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_LOGS=str(db)),
    )
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + 30
    while b"partial" not in seen and time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.1)[0]:
            seen += os.read(process.stdout.fileno(), 100)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    assert seen + out == b"partial\n"
    assert err == b"\n"
    (entry,) = logged(db)
    assert entry["response"] == "partial" and entry["error"] == "interrupted"


# ------------------------------------------------------------------ defect 5: logs


def test_failed_rows_name_the_model_and_do_not_count_as_responses(tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    env = clean_env(LLMRELAY_LOGS=str(db), LLMRELAY_LOCAL_MODEL=str(tmp_path / "missing.gguf"))
    assert run(["-p", "local", "hi"], env=env).returncode == 1
    (entry,) = logged(db)
    assert (entry["provider"], entry["model"]) == ("Local", "smollm2")
    usage = json.loads(run(["logs", "usage", "--json"], env=env).stdout)
    assert [(row["model"], row["responses"], row["errors"]) for row in usage] == [("smollm2", 0, 1)]
    table = run(["logs", "usage"], env=env).stdout.decode()
    assert "RESPONSES" in table and "ANSWERS" not in table


def test_logs_response_and_short(server, tmp_path: Path) -> None:
    env = clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_LOGS=str(tmp_path / "logs.db"))
    server.script(answer("First answer."), answer("Last answer."))
    for prompt in ("one", "two"):
        assert run(["-m", "m1", "--no-stream", prompt], env=env).returncode == 0
    for flag in ("-r", "--response"):
        assert run(["logs", flag], env=env).stdout == b"Last answer.\n"
    short = run(["logs", "--short"], env=env).stdout.decode()
    assert "prompt: one" in short and "response: Last answer." in short
    assert "## Prompt" not in short


# ------------------------------------------------------------------ defect 6: values


def test_an_endpoint_given_as_base_url_says_to_drop_the_suffix(server) -> None:
    result = run(["--api-base", server.base + "/chat/completions", "-m", "m", "hi"])
    assert result.returncode == 2
    assert f"drop /chat/completions and give --api-base {server.base}" in result.stderr.decode()
    assert server.requests == []


def test_a_fragment_in_the_base_url_is_a_usage_error() -> None:
    result = run(["--api-base", "http://h/v1#x", "-m", "m", "hi"])
    assert result.returncode == 2
    assert "fragment" in result.stderr.decode()


def test_serve_help_cites_no_spec() -> None:
    result = run(["serve", "--help"])
    assert result.returncode == 0 and b"SPEC" not in result.stdout


def test_timeout_inf_means_no_limit(server) -> None:
    server.script(answer("Fine."))
    result = run(["-m", "m1", "--timeout", "inf", "--no-stream", "hi"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Fine.\n"


def test_option_n_above_one_is_refused_before_sending(server) -> None:
    result = run(["-m", "m1", "-o", "n", "2", "hi"], server)
    assert result.returncode == 2
    assert "n must be 1" in result.stderr.decode()
    assert server.requests == []


# ------------------------------------------------------------------ defect 7: keys new >> gateway.toml


def test_keys_new_appends_valid_toml(tmp_path: Path) -> None:
    result = run(["keys", "new", "alice"])
    assert result.returncode == 0
    config = tomllib.loads(result.stdout.decode())
    assert config["keys"][0]["name"] == "alice"
    key = result.stderr.decode().split()[0]
    assert key.startswith("sk-") and key.encode() not in result.stdout


# ------------------------------------------------------------------ -x / --xl


FENCED = "Here:\n```python\nprint(1)\n```\nand\n~~~\necho 2\n~~~\n"


@pytest.mark.parametrize(("flag", "printed"), [("-x", b"print(1)\n"), ("--xl", b"echo 2\n")])
def test_extract_prints_one_code_block_and_logs_the_whole(server, tmp_path: Path, flag: str, printed: bytes) -> None:
    db = tmp_path / "logs.db"
    server.script(sse_reply(chunk(FENCED[:12]), chunk(FENCED[12:]), chunk(finish_reason="stop"), "[DONE]"))
    result = run(["-m", "m1", flag, "code?"], env=clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_LOGS=str(db)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
    assert logged(db)[0]["response"] == FENCED


def test_extract_without_a_block_prints_the_answer(server) -> None:
    server.script(answer("no code"))
    assert run(["-m", "m1", "-x", "--no-stream", "hi"], server).stdout == b"no code\n"


# ------------------------------------------------------------------ --schema


def test_schema_concise_syntax_becomes_a_json_schema(server) -> None:
    server.script(answer('{"name": "Rex", "age": 3}'))
    result = run(["-m", "m1", "--no-stream", "--schema", "name str, age int: in years", "a dog"], server)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'{"name": "Rex", "age": 3}\n'
    assert result.stderr == b""
    assert server.requests[0].json()["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "description": "in years"}},
                "required": ["name", "age"],
            },
        },
    }


def test_schema_from_a_file_and_a_warning_for_an_answer_that_is_not_json(server, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "number"}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    server.script(answer("x is 3"))
    result = run(["-m", "m1", "--no-stream", "--schema", str(path), "x?"], server)
    assert result.returncode == 0
    assert result.stdout == b"x is 3\n"
    assert result.stderr.decode().startswith("warning: the answer is not valid JSON")
    assert server.requests[0].json()["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("value", ["{not json", "name strange", ", ,"])
def test_a_bad_schema_is_a_usage_error(server, value: str) -> None:
    result = run(["-m", "m1", "--schema", value, "x?"], server)
    assert result.returncode == 2 and result.stderr.startswith(b"error: --schema")
    assert server.requests == []


# ------------------------------------------------------------------ embed


def test_embed_text_prints_one_vector(server) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=3))
    result = run(["embed", "-m", "e1", "hello"], server)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [embedding_vector("hello", 3)]
    assert server.requests[0].json() == {"model": "e1", "input": ["hello"]}


def test_embed_a_file_of_lines_and_json_lines(server, tmp_path: Path) -> None:
    server.route("POST", "/v1/embeddings", embeddings_handler(dimensions=2))
    path = tmp_path / "texts.jsonl"
    path.write_text('plain text\n\n{"id": 7, "text": "from json"}\n"a json string"\n')
    result = run(["embed", "-m", "e1", "-i", str(path), "--dimensions", "2"], server)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        embedding_vector("plain text", 2),
        {"id": 7, "embedding": embedding_vector("from json", 2)},
        embedding_vector("a json string", 2),
    ]
    assert server.requests[0].json()["input"] == ["plain text", "from json", "a json string"]
    assert server.requests[0].json()["dimensions"] == 2


def test_embed_reads_stdin_and_retries(server) -> None:
    server.script(error_reply(500), embeddings_handler(dimensions=1))
    result = run(["embed", "-m", "e1", "-i", "-"], server, input=b"one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2 and len(server.requests) == 2


def test_embed_404_names_the_embeddings_url_and_suggests_v1(server) -> None:
    server.script(json_reply({"detail": "Not Found"}, 404))
    result = run(["embed", "--retries", "0", "--api-base", server.url, "-m", "e1", "hi"])
    assert result.returncode == 1
    message = result.stderr.decode()
    assert f"tried {server.url}/embeddings" in message and f"try --api-base {server.url}/v1" in message


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["embed", "hi"], "no default embedding model: pass -m MODEL"),
        (["embed", "-m", "e1"], "give TEXT or -i FILE"),
        (["embed", "-m", "e1", ""], "the text is empty"),
        (["embed", "-m", "e1", "-i", "/nonexistent/file"], "-i /nonexistent/file"),
    ],
)
def test_embed_usage_errors(server, args: list[str], says: str) -> None:
    result = run(args, server)
    assert result.returncode == 2
    assert says in result.stderr.decode()
    assert server.requests == []


# ------------------------------------------------------------------ models --all


def test_models_all_lists_every_configured_provider_and_shows_failures(server, tmp_path: Path) -> None:
    server.route("GET", "/v1/models", json_reply({"data": [{"id": "b-model"}, {"id": "a-model"}]}))
    env = clean_env(
        VLLM_API_BASE=server.base,
        OLLAMA_API_BASE="http://127.0.0.1:9/v1",
        LLMRELAY_LOCAL_MODEL=str(tmp_path / "missing.gguf"),
    )
    result = run(["models", "--all", "--json", "--timeout", "5"], env=env)
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["vllm"] == {"models": ["a-model", "b-model"]}
    assert "cannot reach" in table["ollama"]["error"]
    local_error = table["local"]["error"]  # the model file, or llama-cpp-python where it is not installed
    assert "missing.gguf" in local_error or "llama-cpp-python" in local_error
    assert "openai" not in table  # not configured: no key
    text = run(["models", "--all", "--timeout", "5"], env=env).stdout.decode()
    assert "vllm: 2 models\n  a-model\n  b-model\n" in text and "ollama: error: " in text
