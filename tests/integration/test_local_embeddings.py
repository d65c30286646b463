"""Embeddings from the real llama.cpp server (SPEC 9.4.3): ``local`` serves ``smollm2-embed`` in llama.cpp's
embedding mode with mean pooling (576 floats per text), through the provider, the client and the command."""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from llmrelay.client import Client
from llmrelay.errors import ModelNotFoundError, UnsupportedParameterError
from llmrelay.providers.local import EMBED_ALIAS, EMBEDDING_DIMENSIONS, Local, embedding_support

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_server")]

LLMRELAY = Path(sys.executable).with_name("llmrelay")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_this_machine_can_embed() -> None:
    assert embedding_support() is None  # the subprocess test ran llama.cpp's embedding mode without crashing


def test_local_embeds_texts_with_576_dimensions_in_order() -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Quarterly revenue rose by 4 percent."]
    answer = Local.create_embeddings(texts)
    assert answer["model"] == EMBED_ALIAS
    vectors = [item["embedding"] for item in answer["data"]]
    assert [item["index"] for item in answer["data"]] == [0, 1, 2]
    assert all(len(vector) == EMBEDDING_DIMENSIONS for vector in vectors)
    assert all(math.isfinite(value) for vector in vectors for value in vector)
    assert vectors[0] != vectors[2]
    assert answer["usage"]["prompt_tokens"] > 0
    again = Local.create_embeddings(texts[0])["data"][0]["embedding"]
    assert cosine(again, vectors[0]) > 0.9999  # the same text, the same vector


def test_client_base64_and_what_local_refuses() -> None:
    with Client("local") as client:
        answer = client.embeddings.create(input="hello", encoding_format="base64")
        raw = base64.b64decode(answer.data[0].embedding)
        assert len(raw) == 4 * EMBEDDING_DIMENSIONS
        floats = client.embeddings.create(input="hello").data[0].embedding
        assert list(struct.unpack(f"<{EMBEDDING_DIMENSIONS}f", raw)) == pytest.approx(floats, abs=1e-6)
        with pytest.raises(UnsupportedParameterError, match="text only"):
            client.embeddings.create(input=[1, 2, 3])
        with pytest.raises(UnsupportedParameterError, match="576 dimensions"):
            client.embeddings.create(input="hello", dimensions=64)
        with pytest.raises(ModelNotFoundError):
            client.embeddings.create(input="hello", model="smollm2")


def test_embed_command_with_the_local_model(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(LLMRELAY), "embed", "-p", "local", "-i", "-"],
        input="first line\nsecond line\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(vector) for vector in vectors] == [EMBEDDING_DIMENSIONS, EMBEDDING_DIMENSIONS]


def test_a_machine_that_cannot_embed_gets_a_400_saying_why(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    result = subprocess.run(
        [str(LLMRELAY), "embed", "-p", "local", "hello"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LLMRELAY_LOCAL_MODEL": str(bad)},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot make embeddings here" in result.stderr and "broken.gguf" in result.stderr
