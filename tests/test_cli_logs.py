"""``llmrelay logs`` and conversations (-c / --cid), through the installed command against the scripted server.

Every test points LLMRELAY_LOGS at its own temp file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from scripted_server import chunk, completion, json_reply, sse_reply, usage
from test_cli import clean_env, run
from test_cli_defects import Terminal


def env_for(server: Any, db: Path, **extra: str) -> dict[str, str]:
    return clean_env(LLMRELAY_API_BASE=server.base, LLMRELAY_LOGS=str(db), **extra)


def logs(db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = run(["logs", *args], env=clean_env(LLMRELAY_LOGS=str(db)))
    assert result.returncode == 0, result.stderr
    return result


def logged(db: Path, *args: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(logs(db, "--json", "-n", "0", *args).stdout)
    return entries


def test_an_exchange_is_logged_with_everything(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(
        sse_reply(
            chunk(reasoning_content="hmm"),
            chunk("Blue."),
            chunk(finish_reason="stop", model="served"),
            chunk(choices=[], usage=usage(4, 2)),
            "[DONE]",
            delay=0.1,  # 0.4 s from the first event to the last: the durations below cannot be shorter
        )
    )
    result = run(["chat", "-m", "m", "-s", "Be brief.", "-t", "0.2", "Sky colour?"], env=env_for(server, db))
    assert result.returncode == 0, result.stderr
    (entry,) = logged(db)
    assert entry["prompt"] == "Sky colour?"
    assert entry["system"] == "Be brief."
    assert entry["response"] == "Blue."
    assert entry["reasoning"] == "hmm"
    assert entry["provider"] == "Custom"
    assert entry["model"] == "test-model"
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["total_tokens"]) == (4, 2, 6)
    assert entry["finish_reason"] == "stop"
    assert entry["error"] is None
    assert entry["options"]["temperature"] == 0.2
    # The first token (the reasoning) came with the first event; the last event 4 x 0.1 s later.
    assert 0 <= entry["first_token_ms"] and entry["duration_ms"] - entry["first_token_ms"] >= 399
    assert len(entry["conversation_id"]) == 32
    text = logs(db).stdout.decode()
    assert "## Prompt\n\nSky colour?" in text
    assert "## Response\n\nBlue." in text


def test_a_failed_exchange_is_logged_with_its_error(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(json_reply({"error": {"message": "boom"}}, status=500))
    result = run(["chat", "--retries", "0", "-m", "m", "Hi"], env=env_for(server, db))
    assert result.returncode == 1
    (entry,) = logged(db)
    assert "boom" in entry["error"]


def test_no_log_and_logs_off(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(*[json_reply(completion("ok")) for _ in range(3)])
    assert run(["chat", "-n", "-m", "m", "one"], env=env_for(server, db)).returncode == 0
    assert not db.exists()
    logs(db, "off")
    assert run(["chat", "-m", "m", "two"], env=env_for(server, db)).returncode == 0
    assert not db.exists()
    logs(db, "on")
    assert run(["chat", "-m", "m", "three"], env=env_for(server, db)).returncode == 0
    assert [entry["prompt"] for entry in logged(db)] == ["three"]
    assert logs(db, "path").stdout.decode() == f"{db}\n"


def test_search_and_filters(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(
        json_reply(completion("Pelicans fish.", model="alpha", usage=usage(1, 2))),
        json_reply(completion("Otters swim.", model="beta", usage=usage(3, 4))),
        json_reply(completion("Pelicans fly.", model="beta", usage=usage(5, 6))),
    )
    for question in ("What do pelicans eat?", "What do otters do?", "Can pelicans fly? It's odd"):
        assert run(["chat", "--no-stream", "-m", "m", question], env=env_for(server, db)).returncode == 0
    assert [e["response"] for e in logged(db, "-q", "pelicans")] == ["Pelicans fish.", "Pelicans fly."]
    assert [e["response"] for e in logged(db, "-q", "it's odd")] == ["Pelicans fly."]  # quotes do not break FTS
    assert [e["response"] for e in logged(db, "--model", "beta")] == ["Otters swim.", "Pelicans fly."]
    assert logged(db, "--provider", "groq") == []
    assert len(json.loads(logs(db, "--json").stdout)) == 3
    assert len(json.loads(logs(db, "--json", "-n", "1").stdout)) == 1
    usage_rows = json.loads(logs(db, "usage", "--json").stdout)
    assert [(row["model"], row["responses"], row["total_tokens"]) for row in usage_rows] == [
        ("alpha", 1, 3),
        ("beta", 2, 18),
    ]
    table = logs(db, "usage").stdout.decode()
    assert "beta" in table and "18" in table


def test_continue_the_last_conversation_and_a_given_one(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(*[json_reply(completion(text)) for text in ("A1", "B1", "A2", "B2")])
    env = env_for(server, db)
    assert run(["chat", "-m", "m", "-s", "sys", "question A1"], env=env).returncode == 0
    first_cid = logged(db)[0]["conversation_id"]
    assert run(["chat", "-m", "m", "question B1"], env=env).returncode == 0
    assert run(["chat", "-m", "m", "--cid", first_cid, "question A2"], env=env).returncode == 0
    assert run(["chat", "-m", "m", "-c", "question B2"], env=env).returncode == 0
    assert server.requests[2].json()["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "question A1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "question A2"},
    ]
    # -c continues the newest exchange's conversation: A's, just continued
    assert [m["content"] for m in server.requests[3].json()["messages"]] == [
        "sys",
        "question A1",
        "A1",
        "question A2",
        "A2",
        "question B2",
    ]
    assert [e["prompt"] for e in logged(db, "--conversation", first_cid)] == [
        "question A1",
        "question A2",
        "question B2",
    ]


def test_continue_with_an_empty_log_is_a_usage_error(server, tmp_path: Path) -> None:
    result = run(["chat", "-c", "-m", "m", "Hi"], env=env_for(server, tmp_path / "none.db"))
    assert result.returncode == 2
    assert b"no logged conversation" in result.stderr
    result = run(["chat", "--cid", "nope", "-m", "m", "Hi"], env=env_for(server, tmp_path / "none.db"))
    assert result.returncode == 2
    assert server.requests == []


def test_the_interactive_chat_logs_each_turn_under_one_conversation(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(*[json_reply(completion(text)) for text in ("First.", "Second.", "Third.")])
    terminal = Terminal(["chat", "--no-stream", "-m", "m"], env_for(server, db))
    try:
        for question, answer in ((b"one", b"First."), (b"two", b"Second.")):
            terminal.read_until(b"> ")
            terminal.write(question + b"\n")
            terminal.read_until(answer)
        terminal.read_until(b"> ")
        terminal.write(b"/reset\n")
        terminal.read_until(b"> ")
        terminal.write(b"three\n")
        terminal.read_until(b"Third.")
        terminal.read_until(b"> ")
        terminal.write(b"exit\n")
        assert terminal.process.wait(timeout=15) == 0
    finally:
        terminal.close()
    entries = logged(db)
    assert [e["prompt"] for e in entries] == ["one", "two", "three"]
    assert entries[0]["conversation_id"] == entries[1]["conversation_id"] != entries[2]["conversation_id"]
    assert server.requests[2].json()["messages"] == [{"role": "user", "content": "three"}]  # /reset cleared it


def test_a_locked_log_warns_once_and_the_chat_goes_on(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    server.script(json_reply(completion("Before.")), json_reply(completion("Locked.")))
    assert run(["chat", "-m", "m", "create the log"], env=env_for(server, db)).returncode == 0
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run(["chat", "-m", "m", "while locked"], env=env_for(server, db))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Locked.\n"
    stderr = result.stderr.decode()
    assert stderr.count("warning: could not write the log") == 1
    assert [e["prompt"] for e in logged(db)] == ["create the log"]


def test_a_log_that_is_not_a_database_never_breaks_a_chat(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    db.write_bytes(b"this is not SQLite" * 100)
    server.script(json_reply(completion("Fine.")))
    result = run(["chat", "-m", "m", "Hi"], env=env_for(server, db))
    assert result.returncode == 0
    assert result.stdout == b"Fine.\n"
    assert b"warning: could not write the log" in result.stderr


# ------------------------------------------------------------------- llmrelay.logs itself


def test_search_without_fts5_falls_back_to_like(tmp_path: Path) -> None:
    from llmrelay.logs import Log, new_conversation_id, utc_now

    log = Log(tmp_path / "logs.db")
    cid = new_conversation_id()
    for prompt, response in (("about pelicans", "They fish."), ("about otters", "They swim.")):
        log.record({"conversation_id": cid, "datetime_utc": utc_now(), "prompt": prompt, "response": response})
    with sqlite3.connect(log.path) as connection:  # as if this SQLite had no FTS5
        connection.executescript("DROP TRIGGER responses_fts_insert; DROP TABLE responses_fts;")
    assert [entry["response"] for entry in log.entries(None, query="swim")] == ["They swim."]
    assert [entry["prompt"] for entry in log.conversation(cid)] == ["about pelicans", "about otters"]


def test_history_rebuilds_the_messages_with_the_logged_system_message() -> None:
    from llmrelay.logs import history

    entries = [
        {"prompt": "q1", "response": "a1", "system": "old"},
        {"prompt": "q2", "response": "a2", "system": "newer"},
    ]
    assert history(entries) == [
        {"role": "system", "content": "newer"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert history(entries, "given")[0] == {"role": "system", "content": "given"}


def test_continuing_from_a_log_that_is_not_a_database_is_a_usage_error(server, tmp_path: Path) -> None:
    db = tmp_path / "logs.db"
    db.write_bytes(b"this is not SQLite" * 100)
    result = run(["chat", "-c", "-m", "m", "Hi"], env=env_for(server, db))
    assert result.returncode == 2
    assert f"cannot read the log {db}".encode() in result.stderr
    assert server.requests == []
