"""``llmrelay batch --backend ray`` (SPEC 10.8) on a local Ray cluster started by the command.

Starting Ray takes ~15 s on 2 cores, so this is one test. In CI (``CI=true``) a missing ``ray`` fails it: the
``[ray]`` extra is part of the CI install."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path

import pytest
from batch_support import ids_once, numbered, output_of, read_output, run_batch, status_of
from batch_upstream import Answer, BatchUpstream


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: CI installs the [ray] extra (pip install '.[ray]')")
        pytest.skip("ray is not installed (pip install '.[ray]')")


def test_ray_backend_shares_one_limit_and_answers_every_line_once(tmp_path: Path) -> None:
    _require_ray()
    lock = threading.Lock()
    throttled = {"count": 0}

    def plan(index: int, content: str) -> Answer:
        # The same schedule as the local tests: a 429 with retry-after-ms every 25th request, a 400 line.
        if content == "line-7":
            return Answer(400)
        if index % 25 == 24:
            with lock:
                throttled["count"] += 1
            return Answer(429, {"retry-after-ms": "300"})
        return Answer(delay=0.02)

    with BatchUpstream(plan) as upstream:
        source = numbered(tmp_path / "ray.jsonl", 150)
        result = run_batch(
            source,
            upstream.base,
            "--backend",
            "ray",
            "--ray-actors",
            "3",
            "--max-concurrency",
            "6",
            "--json",
            timeout=300,
        )
        assert result.returncode == 1, result.stderr[-3000:]  # line-7 got a 400
        summary = json.loads(result.stdout)
        assert summary["succeeded"] == 149 and summary["failed"] == 1 and summary["retries"] == throttled["count"]
        records = read_output(output_of(source))
        assert sorted(ids_once(records).values()) == [1] * 150
        assert {record["custom_id"]: status_of(record) for record in records}["line-7"] == 400
        assert upstream.max_in_flight <= 6  # three actors, one coordinator: never above --max-concurrency
        assert throttled["count"] >= 5
        assert len(upstream.seen) == 150 + throttled["count"]  # each 429 was retried once, nothing else twice
