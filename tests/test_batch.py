"""``llmrelay batch`` (SPEC 10.1–10.7): the installed command against a scripted upstream over real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_support import (
    CHAT,
    batch_args,
    chat_line,
    clean_env,
    ids_once,
    numbered,
    output_of,
    read_output,
    run_batch,
    start_batch,
    status_of,
    write_input,
)
from batch_upstream import Answer, BatchUpstream


@pytest.fixture
def upstream() -> Iterator[BatchUpstream]:
    server = BatchUpstream().start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_lines(path: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


# ------------------------------------------------------------------------------- 10.1 command line


def test_default_output_path_and_summary_json(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "jobs.jsonl", 12)
    result = run_batch(source, upstream.base, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total"] == 12 and summary["succeeded"] == 12 and summary["failed"] == 0
    assert summary["skipped"] == 0 and summary["prompt_tokens"] == 36 and summary["completion_tokens"] == 24
    assert set(summary) == {
        "total", "succeeded", "failed", "skipped", "retries", "elapsed_s", "prompt_tokens", "completion_tokens"
    }  # fmt: skip
    assert "batch done: 12 lines, 12 succeeded" in result.stderr
    records = read_output(tmp_path / "jobs.output.jsonl")
    assert sorted(ids_once(records).values()) == [1] * 12


def test_provider_prefix_in_the_body_picks_the_provider(upstream: BatchUpstream, tmp_path: Path) -> None:
    """Without -p / --api-base, ``custom/MODEL`` goes to the catalog's Custom provider as MODEL; with --api-base
    the model is sent as written (an llmrelay gateway routes it)."""
    source = write_input(tmp_path / "in.jsonl", [chat_line("a", model="custom/small-1")])
    env = clean_env(LLMRELAY_API_BASE=upstream.base)
    command = [sys.executable, "-m", "llmrelay", "batch", str(source)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert [seen.model for seen in upstream.seen] == ["small-1"]
    second = write_input(tmp_path / "gw.jsonl", [chat_line("b", model="custom/small-1")])
    assert run_batch(second, upstream.base).returncode == 0
    assert upstream.seen[-1].model == "custom/small-1"


def test_usage_errors_exit_2(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "in.jsonl", 2)
    missing = run_batch(tmp_path / "absent.jsonl", upstream.base)
    assert missing.returncode == 2 and "absent.jsonl: no such file" in missing.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "llmrelay", "batch", str(source), "-p", "no-such-provider"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert unknown.returncode == 2 and "unknown provider 'no-such-provider'" in unknown.stderr
    keyless = subprocess.run(
        [sys.executable, "-m", "llmrelay", "batch", str(source), "-p", "groq"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert keyless.returncode == 2 and "GROQ_API_KEY" in keyless.stderr
    assert run_batch(source, upstream.base, "--ray-address", "auto").returncode == 2
    assert upstream.seen == []


# ------------------------------------------------------------------------------- 10.2 input checking


def test_bad_input_lists_problems_with_line_numbers_and_sends_nothing(upstream: BatchUpstream, tmp_path: Path) -> None:
    good = chat_line("ok-1")
    lines: list[object] = [
        good,
        "{not json",
        '["a list"]',
        {"method": "POST", "url": CHAT, "body": good["body"]},
        {**chat_line("x"), "custom_id": 7},
        {**chat_line("y"), "method": "GET"},
        {**chat_line("z"), "url": "/v1/completions"},
        {**chat_line("w"), "body": "text"},
        {**chat_line("s"), "body": {**good["body"], "stream": True}},
        {**chat_line("v"), "body": {"model": "m"}},
        chat_line("ok-1"),
        {**chat_line("r"), "url": "/v1/responses", "body": {"model": "m", "input": "hi", "previous_response_id": "x"}},
        {**chat_line("e"), "extra": 1},
    ]
    source = write_input(tmp_path / "bad.jsonl", lines)
    result = run_batch(source, upstream.base)
    assert result.returncode == 2
    problems = result.stderr.strip().splitlines()
    prefix = f"{source}:"
    assert all(problem.startswith(prefix) for problem in problems), problems
    by_line = {int(problem[len(prefix) :].split(":")[0]): problem for problem in problems}
    assert sorted(by_line) == list(range(2, 14)), problems
    assert "invalid JSON" in by_line[2]
    assert "must be a JSON object" in by_line[3]
    assert "missing 'custom_id'" in by_line[4]
    assert "'custom_id' must be a non-empty string" in by_line[5]
    assert "'method' must be \"POST\"" in by_line[6]
    assert "'url' must be one of" in by_line[7]
    assert "'body' must be a JSON object" in by_line[8]
    assert '"stream": true' in by_line[9]
    assert "'messages' is required" in by_line[10]
    assert "duplicate custom_id 'ok-1' (first on line 1)" in by_line[11]
    assert "'previous_response_id' needs stored responses" in by_line[12]
    assert "unknown field 'extra'" in by_line[13]
    assert upstream.seen == []
    assert not output_of(source).exists()


def test_at_most_20_problems_are_listed(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = write_input(tmp_path / "many.jsonl", ["{"] * 50)
    result = run_batch(source, upstream.base)
    assert result.returncode == 2
    listed = [line for line in result.stderr.splitlines() if line.startswith(f"{source}:")]
    assert len(listed) == 20 and "stopped after 20 problems" in result.stderr
    assert upstream.seen == []


# ------------------------------------------------------------------------------- 10.3 output


def test_output_shapes_and_every_line_answered_once(upstream: BatchUpstream, tmp_path: Path) -> None:
    limited = {"429s": 0}

    def plan(index: int, content: str) -> Answer:
        if content == "bad":
            return Answer(400)
        if content == "down":
            return Answer(503)
        if content == "limited" and limited["429s"] < 2:
            limited["429s"] += 1
            return Answer(429, {"Retry-After": "0"})
        return Answer(delay=0.01)

    upstream.plan = plan
    lines = [chat_line(f"ok-{index}") for index in range(20)]
    lines += [chat_line("bad"), chat_line("down"), chat_line("limited")]
    source = write_input(tmp_path / "mix.jsonl", lines)
    result = run_batch(source, upstream.base, "--max-attempts", "3")
    assert result.returncode == 1, result.stderr
    records = read_output(output_of(source))
    assert sorted(ids_once(records).values()) == [1] * 23
    by_id = {record["custom_id"]: record for record in records}
    request_ids = {seen.request_id for seen in upstream.seen}
    ok = by_id["ok-3"]
    assert ok["id"].startswith("batch_req_") and ok["error"] is None
    assert ok["response"]["status_code"] == 200 and ok["response"]["request_id"] in request_ids
    body = ok["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "echo: ok-3"
    assert body["usage"]["total_tokens"] == 5
    bad = by_id["bad"]["response"]
    assert bad["status_code"] == 400 and bad["body"]["error"]["message"].endswith("scripted 400")
    assert set(bad["body"]["error"]) == {"message", "type", "param", "code"}
    assert upstream.contents().count("bad") == 1  # a 400 is final at once
    down = by_id["down"]["response"]
    assert down["status_code"] == 502 and down["body"]["error"]["code"] == "upstream_error"
    assert upstream.contents().count("down") == 3  # --max-attempts 3
    assert status_of(by_id["limited"]) == 200 and upstream.contents().count("limited") == 3


def test_responses_lines_answer_response_objects(upstream: BatchUpstream, tmp_path: Path) -> None:
    """``/v1/responses`` lines go through the gateway's Responses translator (SPEC 9.2) to the same chat call."""
    body = {"model": "m", "instructions": "Be brief.", "input": "Say hi", "max_output_tokens": 20}
    line = {"custom_id": "r-1", "method": "POST", "url": "/v1/responses", "body": body}
    bad = {"custom_id": "r-2", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "fail"}}
    upstream.plan = lambda index, content: Answer(400) if content == "fail" else Answer()
    source = write_input(tmp_path / "resp.jsonl", [line, bad])
    result = run_batch(source, upstream.base)
    assert result.returncode == 1, result.stderr
    by_id = {record["custom_id"]: record for record in read_output(output_of(source))}
    response = by_id["r-1"]["response"]
    assert response["status_code"] == 200
    answer = response["body"]
    assert answer["object"] == "response" and answer["status"] == "completed"
    assert answer["output"][0]["type"] == "message"
    assert answer["output"][0]["content"][0]["text"] == "echo: Say hi"
    assert answer["usage"]["input_tokens"] == 3 and answer["usage"]["output_tokens"] == 2
    assert upstream.seen[0].content == "Say hi" or upstream.seen[1].content == "Say hi"
    assert by_id["r-2"]["response"]["status_code"] == 400


def test_embeddings_lines_answer_embedding_lists(upstream: BatchUpstream, tmp_path: Path) -> None:
    """``/v1/embeddings`` lines use the providers' embeddings operation (SPEC 9.4), checked as the gateway does."""

    def line(custom_id: str, body: dict) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}

    bad = write_input(tmp_path / "bad.jsonl", [line("x", {"model": "e", "input": []})])
    refused = run_batch(bad, upstream.base)
    assert refused.returncode == 2 and f"{bad}:1: body: " in refused.stderr and "input" in refused.stderr
    upstream.plan = lambda index, content: Answer(400) if content == "fail" else Answer()
    lines = [
        line("e-1", {"model": "custom/e", "input": "hello"}),
        line("e-2", {"model": "e", "input": ["a", "bb"], "encoding_format": "base64"}),
        line("e-3", {"model": "e", "input": "fail"}),
    ]
    source = write_input(tmp_path / "emb.jsonl", lines)
    result = run_batch(source, upstream.base, "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["prompt_tokens"] == 8
    by_id = {record["custom_id"]: record["response"] for record in read_output(output_of(source))}
    first = by_id["e-1"]
    assert first["status_code"] == 200 and first["body"]["object"] == "list"
    assert first["body"]["data"] == [{"object": "embedding", "index": 0, "embedding": [5.0, 1.0, 0.0]}]
    second = by_id["e-2"]["body"]["data"]
    assert [item["index"] for item in second] == [0, 1]
    assert all(isinstance(item["embedding"], str) for item in second)  # base64 of little-endian float32
    assert by_id["e-3"]["status_code"] == 400
    assert sorted(seen.model for seen in upstream.seen) == ["custom/e", "e", "e"]  # --api-base: sent as written


def test_no_http_answer_gives_a_null_response_and_an_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = numbered(tmp_path / "down.jsonl", 2)
    result = run_batch(source, f"http://127.0.0.1:{port}/v1", "--max-attempts", "2")
    assert result.returncode == 1
    records = read_output(output_of(source))
    assert len(records) == 2
    for record in records:
        assert record["response"] is None
        assert record["error"]["code"] == "upstream_error" and record["error"]["message"]


# ------------------------------------------------------------------------------- 10.4 resume


def test_rerun_replaces_retryable_failures_and_keeps_done_lines(upstream: BatchUpstream, tmp_path: Path) -> None:
    healthy = {"on": False}

    def plan(index: int, content: str) -> Answer:
        if content == "flaky" and not healthy["on"]:
            return Answer(503)
        if content == "bad":
            return Answer(400)
        return Answer()

    upstream.plan = plan
    source = write_input(
        tmp_path / "r.jsonl", [*(chat_line(f"ok-{i}") for i in range(5)), chat_line("flaky"), chat_line("bad")]
    )
    first = run_batch(source, upstream.base, "--max-attempts", "2")
    assert first.returncode == 1
    before = {record["custom_id"]: status_of(record) for record in read_output(output_of(source))}
    assert before["flaky"] == 502 and before["bad"] == 400
    healthy["on"] = True
    upstream.reset()
    second = run_batch(source, upstream.base, "--json")
    summary = json.loads(second.stdout)
    assert upstream.contents() == ["flaky"]  # only the retryable failure is sent again
    assert summary["skipped"] == 6 and summary["succeeded"] == 1 and summary["failed"] == 0
    assert second.returncode == 1  # the 400 line is still a failure of the batch
    records = read_output(output_of(source))
    assert sorted(ids_once(records).values()) == [1] * 7
    assert {record["custom_id"]: status_of(record) for record in records}["flaky"] == 200


def test_torn_last_line_is_dropped_and_sent_again(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "t.jsonl", 6)
    assert run_batch(source, upstream.base).returncode == 0
    output = output_of(source)
    lines = output.read_bytes().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["custom_id"]
    output.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a write cut by a crash
    upstream.reset()
    assert run_batch(source, upstream.base).returncode == 0
    assert upstream.contents() == [torn_id]
    assert sorted(ids_once(read_output(output)).values()) == [1] * 6


def test_kill_9_at_random_moments_then_rerun_sends_only_in_flight_requests_again(
    upstream: BatchUpstream, tmp_path: Path
) -> None:
    """Seeded random kill moments; after the final run every custom_id has exactly one line, and a request that
    got a 200 was sent again only if it was in flight when the process was killed."""
    import random

    rng = random.Random(18)

    def plan(index: int, content: str) -> Answer:
        return Answer(delay=0.02 + (hash(content) % 5) * 0.01)

    upstream.plan = plan
    count = 300
    source = numbered(tmp_path / "k.jsonl", count)
    output = output_of(source)
    kills: list[tuple[float, set[str]]] = []  # (when, the ids written by then)
    for _ in range(4):
        written = output.read_bytes().count(b"\n") if output.exists() else 0
        if written >= count:
            break
        process = start_batch(source, upstream.base, "--max-concurrency", "16")
        wait_for_lines(output, min(count, written + 1))
        time.sleep(rng.uniform(0.0, 0.6))
        process.kill()
        process.wait(10)
        kills.append((time.monotonic(), written_ids(output)))
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
    final = run_batch(source, upstream.base, "--max-concurrency", "16")
    assert final.returncode == 0, final.stderr
    records = read_output(output)
    assert sorted(ids_once(records).values()) == [1] * count
    by_content: dict[str, list] = {}
    for seen in upstream.seen:
        by_content.setdefault(seen.content, []).append(seen)
    repeated = 0
    for content, requests in by_content.items():
        for when, done in kills:  # a line on disk at a kill is never sent again
            assert not (content in done and any(request.start > when for request in requests)), content
        for earlier in requests[:-1]:  # every request but the last of a line was lost to a kill: in flight then
            repeated += 1
            assert any(earlier.start < when + 0.5 and content not in done for when, done in kills), content
    assert len(kills) >= 2 and repeated <= 16 * len(kills)


def written_ids(output: Path) -> set[str]:
    """The custom_ids of the complete lines of an output file (a torn last line does not count)."""
    text = output.read_bytes().decode()
    return {json.loads(line)["custom_id"] for line in text.split("\n")[:-1]}


def test_sigint_exits_130_and_the_same_command_continues(upstream: BatchUpstream, tmp_path: Path) -> None:
    upstream.plan = lambda index, content: Answer(delay=0.2)
    source = numbered(tmp_path / "c.jsonl", 60)
    output = output_of(source)
    process = start_batch(source, upstream.base, "--max-concurrency", "4")
    wait_for_lines(output, 4)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted (run the same command to continue)" in stderr
    done_before = len(read_output(output))
    assert 4 <= done_before < 60
    sent_before = len(upstream.seen)
    assert sent_before == done_before  # requests in flight at Ctrl-C were let finish and written
    result = run_batch(source, upstream.base, "--json", "--max-concurrency", "8")
    assert result.returncode == 0
    assert json.loads(result.stdout)["skipped"] == done_before
    assert len(upstream.seen) == 60
    assert sorted(ids_once(read_output(output)).values()) == [1] * 60


# ------------------------------------------------------------------------------- 10.5 rate limits


def test_concurrency_starts_at_4_and_grows_to_the_maximum(upstream: BatchUpstream, tmp_path: Path) -> None:
    upstream.plan = lambda index, content: Answer(delay=0.03)
    source = numbered(tmp_path / "g.jsonl", 400)
    assert run_batch(source, upstream.base, "--max-concurrency", "12").returncode == 0
    first = upstream.seen[:8]
    assert max(seen.in_flight for seen in first) <= 4
    # Grew by one per `concurrency` successes, capped by --max-concurrency (on a busy machine the client may not
    # keep every slot filled at the same instant, so the upstream may see a little less than the cap).
    assert 9 <= upstream.max_in_flight <= 12


def test_throttling_halves_concurrency_and_429s_stay_a_small_fraction(upstream: BatchUpstream, tmp_path: Path) -> None:
    """An upstream that takes at most 6 requests at once and answers the rest 429: AIMD settles below it."""

    def plan(index: int, content: str) -> Answer:
        return Answer(delay=0.02)

    upstream.plan = plan
    limit = 6

    def limited(index: int, content: str) -> Answer:
        if upstream.in_flight > limit:
            return Answer(429)
        return plan(index, content)

    upstream.plan = limited
    source = numbered(tmp_path / "h.jsonl", 400)
    result = run_batch(source, upstream.base, "--max-concurrency", "64", "--json")
    assert result.returncode == 0, result.stderr
    statuses = [seen.status for seen in upstream.seen]
    throttled = statuses.count(429)
    assert throttled >= 1  # the limit was found ...
    assert throttled / len(statuses) < 0.15  # ... and respected: 429s are a small fraction
    assert upstream.max_in_flight <= 2 * (limit + 1)
    assert sorted(ids_once(read_output(output_of(source))).values()) == [1] * 400


@pytest.mark.parametrize(("header", "value", "pause"), [("Retry-After", "2", 2.0), ("retry-after-ms", "1500", 1.5)])
def test_retry_after_pauses_every_new_start(
    upstream: BatchUpstream, tmp_path: Path, header: str, value: str, pause: float
) -> None:
    def plan(index: int, content: str) -> Answer:
        if index == 30:
            return Answer(429, {header: value})
        return Answer(delay=0.02)

    upstream.plan = plan
    source = numbered(tmp_path / "p.jsonl", 120)
    assert run_batch(source, upstream.base, "--max-concurrency", "8").returncode == 0
    throttle = next(seen for seen in upstream.seen if seen.status == 429)
    after = [seen.start - throttle.end for seen in upstream.seen if seen.start > throttle.end]
    # Requests the client started before it read the 429 may arrive just after it (at most one per slot, within
    # the client's reaction time); then nothing until the pause ends.
    reacting = [delay for delay in after if delay < 0.5]
    assert len(reacting) < 8, reacting
    assert [delay for delay in after if 0.5 <= delay < pause - 0.05] == []
    assert any(delay >= pause - 0.05 for delay in after)
    assert sorted(ids_once(read_output(output_of(source))).values()) == [1] * 120


def test_rpm_spreads_starts_evenly(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "rpm.jsonl", 14)
    assert run_batch(source, upstream.base, "--rpm", "360").returncode == 0  # 6 a second, bursts of at most 6
    starts = sorted(seen.start for seen in upstream.seen)
    assert len(starts) == 14
    for index in range(6, 14):
        assert starts[index] - starts[0] >= (index - 5) / 6 - 0.05, index
    for index in range(len(starts)):
        in_one_second = [start for start in starts if starts[index] <= start < starts[index] + 1.0]
        assert len(in_one_second) <= 6 + 6


def test_tpm_holds_new_starts_once_the_minute_budget_is_used(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "tpm.jsonl", 5)
    process = start_batch(source, upstream.base, "--tpm", "10", "--max-concurrency", "1")
    wait_for_lines(output_of(source), 2)
    time.sleep(1.5)
    assert len(upstream.seen) == 2  # each answer reports 5 tokens: 10 reached, nothing more starts this minute
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 130


# ------------------------------------------------------------------------------- 10.6 exit codes


def test_help_does_not_import_the_batch_runner_or_progress_bar() -> None:
    code = (
        "import sys; from llmrelay.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('tqdm', 'ray', 'aiohttp', 'llmrelay.batch.runner') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_summary_line_and_exit_0(upstream: BatchUpstream, tmp_path: Path) -> None:
    source = numbered(tmp_path / "q.jsonl", 3)
    result = run_batch(source, upstream.base)
    assert result.returncode == 0
    assert result.stderr.splitlines()[-1].startswith("batch done: 3 lines, 3 succeeded, 0 failed, 0 skipped")


def test_progress_bar_on_a_terminal(upstream: BatchUpstream, tmp_path: Path) -> None:
    """stderr on a terminal: a bar (done / total, failed, concurrency, requests/s) redrawn in place."""
    import pty

    upstream.plan = lambda index, content: Answer(delay=0.05)
    source = numbered(tmp_path / "tty.jsonl", 40)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        batch_args(source, upstream.base, "--max-concurrency", "2"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=clean_env(),
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        shown += data
    os.close(leader)
    assert process.wait(30) == 0
    text = shown.decode(errors="replace")
    assert "40/40" in text and "failed 0" in text and "concurrency 2" in text and "req/s" in text
    assert "\r" in text  # redrawn in place
    assert "batch done: 40 lines, 40 succeeded" in text


def test_one_progress_line_every_10_s_off_a_terminal(upstream: BatchUpstream, tmp_path: Path) -> None:
    """stderr not a terminal: plain lines (no bar, no carriage return), the first one 10 s into the run."""
    upstream.plan = lambda index, content: Answer(delay=0.5)
    source = numbered(tmp_path / "slow.jsonl", 24)  # one at a time: at least 12 s
    result = run_batch(source, upstream.base, "--max-concurrency", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("batch: ")]
    assert 1 <= len(progress) <= 3, result.stderr  # a run of 12-13 s: one line, not one per answer
    for line in progress:
        done = int(line.split()[1].split("/")[0])
        assert 0 < done < 24, line  # written during the run, about 20 answers in
        assert ", 0 failed, concurrency 1, " in line and " requests/s, ETA " in line, line
    assert "\r" not in result.stderr
    assert lines[-1].startswith("batch done: 24 lines, 24 succeeded")
