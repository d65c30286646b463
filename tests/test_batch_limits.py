"""The arithmetic of SPEC 10.5 on :class:`llmrelay.batch.limits.Limits` (pure state, explicit clock), and the
input/output helpers that must stay exact whatever the file size. The socket-level behaviour is in
test_batch.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llmrelay.batch.inputs import InputError, SortedHashes, check_input
from llmrelay.batch.limits import Gate, Limits, Outcome, Stopped
from llmrelay.batch.operations import check_body
from llmrelay.batch.output import is_done, prepare

OK = Outcome(success=True)
THROTTLED = Outcome(throttled=True)


def start(limits: Limits, now: float = 0.0) -> int:
    assert limits.wait_time(now) == 0.0
    return limits.start(now)


def test_starts_at_4_grows_by_one_after_concurrency_successes_in_a_row() -> None:
    limits = Limits(max_concurrency=6)
    assert limits.concurrency == 4
    tickets = [start(limits) for _ in range(4)]
    assert limits.wait_time(0.0) is None  # full
    for ticket in tickets[:3]:
        limits.finish(ticket, OK, 0.0)
    assert limits.concurrency == 4
    limits.finish(tickets[3], OK, 0.0)
    assert limits.concurrency == 5  # 4 successes in a row at concurrency 4
    for _ in range(5):
        limits.finish(start(limits), OK, 0.0)
    assert limits.concurrency == 6
    for _ in range(20):
        limits.finish(start(limits), OK, 0.0)
    assert limits.concurrency == 6  # capped by max_concurrency
    assert Limits(max_concurrency=2).concurrency == 2


def test_a_throttle_halves_once_per_window_and_breaks_the_streak() -> None:
    limits = Limits(max_concurrency=64)
    limits.concurrency = 16
    burst = [start(limits) for _ in range(16)]
    limits.finish(burst[0], THROTTLED, 0.0)
    assert limits.concurrency == 8
    for ticket in burst[1:]:  # the rest of the same burst: already counted
        limits.finish(ticket, THROTTLED, 0.0)
    assert limits.concurrency == 8
    later = start(limits)
    limits.finish(later, THROTTLED, 0.0)  # a request started after the cut: a new window
    assert limits.concurrency == 4
    for _ in range(3):
        limits.finish(start(limits), OK, 0.0)
    limits.finish(start(limits), THROTTLED, 0.0)
    assert limits.concurrency == 2 and limits.streak == 0
    one = Limits(max_concurrency=1)
    one.finish(start(one), THROTTLED, 0.0)
    assert one.concurrency == 1  # never below one


def test_retry_after_is_one_shared_pause_that_only_grows() -> None:
    limits = Limits(max_concurrency=8)
    first, second = start(limits, 10.0), start(limits, 10.0)
    limits.finish(first, Outcome(throttled=True, retry_after=2.0), 10.0)
    assert limits.wait_time(10.5) == pytest.approx(1.5)
    limits.finish(second, Outcome(retry_after=0.5), 10.5)  # would end sooner: the pause stays
    assert limits.wait_time(11.0) == pytest.approx(1.0)
    assert limits.wait_time(12.0) == 0.0


def test_rpm_is_a_bucket_of_max_1_or_rpm_over_60() -> None:
    limits = Limits(max_concurrency=100, rpm=120)  # 2 a second, bursts of 2
    start(limits, 0.0)
    start(limits, 0.0)
    assert limits.wait_time(0.0) == pytest.approx(0.5)
    assert limits.wait_time(0.25) == pytest.approx(0.25)
    start(limits, 0.5)
    assert limits.wait_time(0.5) == pytest.approx(0.5)
    slow = Limits(max_concurrency=100, rpm=30)  # one every 2 s, burst of 1
    start(slow, 0.0)
    assert slow.wait_time(0.0) == pytest.approx(2.0)


def test_tpm_holds_starts_while_the_last_minute_reached_the_budget() -> None:
    limits = Limits(max_concurrency=100, tpm=100)
    limits.finish(start(limits, 0.0), Outcome(success=True, tokens=60), 1.0)
    assert limits.wait_time(1.0) == 0.0
    limits.finish(start(limits, 2.0), Outcome(success=True, tokens=40), 3.0)
    assert limits.wait_time(3.0) == pytest.approx(58.0)  # until the first 60 tokens are a minute old
    assert limits.wait_time(61.0) == 0.0


def test_gate_wakes_waiters_on_release_and_on_the_pause_timer_and_stops() -> None:
    async def scenario() -> list[str]:
        events: list[str] = []
        gate = Gate(Limits(max_concurrency=1))
        ticket = await gate.acquire()

        async def second() -> None:
            await gate.acquire()
            events.append("second started")

        waiter = asyncio.ensure_future(second())
        await asyncio.sleep(0.01)
        assert events == []
        gate.release(ticket, Outcome(success=True, retry_after=0.05))
        await asyncio.sleep(0.01)
        assert events == []  # a free slot, but the pause holds it
        await asyncio.wait_for(waiter, 2)
        blocked = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        gate.close()
        with pytest.raises(Stopped):
            await blocked
        return events

    assert asyncio.run(scenario()) == ["second started"]


def test_gate_with_free_slots_still_holds_starts_for_rpm_a_pause_and_a_close() -> None:
    """A free slot alone does not start a request at once: the rpm bucket, a pause and a closed gate still hold."""

    async def scenario() -> None:
        gate = Gate(Limits(max_concurrency=8, rpm=6))  # a bucket of 1, refilled every 10 s
        await gate.acquire()
        held = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.05)
        assert not held.done() and gate.limits.in_flight == 1
        gate.close()
        with pytest.raises(Stopped):
            await held
        paused = Gate(Limits(max_concurrency=8))
        ticket = await paused.acquire()
        paused.release(ticket, Outcome(success=True, retry_after=30.0))
        waiting = asyncio.ensure_future(paused.acquire())
        await asyncio.sleep(0.05)
        assert not waiting.done() and paused.limits.in_flight == 0
        paused.close()
        with pytest.raises(Stopped):
            await waiting
        closed = Gate(Limits(max_concurrency=8))
        closed.close()
        with pytest.raises(Stopped):
            await closed.acquire()

    asyncio.run(scenario())


def test_sorted_hashes_membership_and_repeats() -> None:
    hashes = SortedHashes()
    for value in [5, 3, 9, 3, *range(100, 70000)]:
        hashes.add(value)
    hashes.freeze()
    assert len(hashes.runs) == 1 and 9 in hashes and 4 not in hashes and 69999 in hashes
    assert hashes.repeated() == {3}
    other = SortedHashes()
    for value in (1, 9, 70001, 150):
        other.add(value)
    assert hashes.common(other.freeze()) == {9, 150}


def test_duplicates_are_confirmed_on_the_ids_not_only_their_hashes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [{"custom_id": f"id-{i}", "method": "POST", "url": "/v1/chat/completions"} for i in range(3)]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    path.write_text("".join(json.dumps({**line, "body": body}) + "\n" for line in [*lines, lines[1]]))
    with pytest.raises(InputError) as caught:
        check_input(path, check_body, "in.jsonl")
    assert caught.value.problems == ["in.jsonl:4: duplicate custom_id 'id-1' (first on line 2)"]
    assert check_input(_unique(tmp_path), check_body).lines == 3


def _unique(tmp_path: Path) -> Path:
    path = tmp_path / "u.jsonl"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    path.write_text(
        "".join(
            json.dumps({"custom_id": f"u{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
            for i in range(3)
        )
        + "\n"  # a blank line is skipped
    )
    return path


@pytest.mark.parametrize(
    ("status", "done"),
    [
        *((status, True) for status in (200, 201, 400, 404, 422)),
        *((status, False) for status in (408, 409, 429, 500, 502, 504, None)),
    ],
)
def test_which_lines_are_done(status: int | None, done: bool) -> None:
    assert is_done(status) is done


def test_prepare_keeps_the_first_done_line_per_id_and_drops_the_rest(tmp_path: Path) -> None:
    def record(custom_id: str, status: int | None) -> bytes:
        response = None if status is None else {"status_code": status, "request_id": "r", "body": {}}
        return json.dumps({"id": "b", "custom_id": custom_id, "response": response, "error": None}).encode() + b"\n"

    output = tmp_path / "out.jsonl"
    kept = [record("a", 200), record("b", 400)]
    lines = [kept[0], record("c", 502), kept[1], record("a", 200), record("d", None), record("b", 200)]
    output.write_bytes(b"".join(lines) + b'{"id": "x", "cus')
    previous = prepare(output)
    assert output.read_bytes() == b"".join(kept)
    assert previous.status_of("a") is True and previous.status_of("b") is False  # the first line of b is kept
    assert previous.status_of("c") is None and previous.status_of("d") is None
    assert previous.torn and previous.dropped == 5
    assert list(tmp_path.iterdir()) == [output]  # the temporary file was renamed, nothing left behind
