"""``llmrelay batch --api-base`` at an llmrelay gateway: the gateway's keys and limits hold for every batch that
uses it (SPEC 10.1: "an llmrelay gateway's URL brings its routes, keys and shared limits")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from batch_support import ids_once, numbered, output_of, read_output, start_batch, status_of
from batch_upstream import Answer, BatchUpstream
from gateway_support import Lines, Running

from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config

KEY = "sk-llmrelay-batch-test-key-0123456789"


def test_two_batches_through_one_gateway_share_its_key_limit(tmp_path: Path) -> None:
    with BatchUpstream(lambda index, content: Answer(delay=0.05)) as upstream:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[providers.up]\napi_base = "{upstream.base}"\ndefault_model = "m"\n\n'
            f'[[keys]]\nname = "batch"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\nmax_concurrent = 3\n'
        )
        log: list[str] = []
        gateway = Running(Gateway(load_config(str(config)), log_stream=Lines(log, lambda line: None)), log).start()
        try:
            sources = [numbered(tmp_path / f"part-{n}.jsonl", 30, prefix=f"p{n}") for n in (1, 2)]
            for source in sources:  # route the lines' model to the gateway's provider
                lines = [json.loads(line) for line in source.read_text().splitlines()]
                for line in lines:
                    line["body"]["model"] = "up/m"
                source.write_text("".join(json.dumps(line) + "\n" for line in lines))
            processes = [
                start_batch(source, gateway.base, "--api-key", KEY, "--max-concurrency", "4", "--max-attempts", "50")
                for source in sources
            ]
            for process in processes:
                _, stderr = process.communicate(timeout=120)
                assert process.returncode == 0, stderr
        finally:
            gateway.stop()
        for source in sources:
            records = read_output(output_of(source))
            assert sorted(ids_once(records).values()) == [1] * 30
            assert all(status_of(record) == 200 for record in records)
        assert upstream.max_in_flight <= 3  # two batches of up to 4 each, one key limit of 3
        assert len(upstream.seen) == 60  # the gateway's 429s were retried by the batches, never sent upstream
        assert any(" 429 " in line for line in log)  # the limit was reached, and the batches backed off
