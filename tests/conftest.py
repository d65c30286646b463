from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make tests/scripted_server.py importable as `scripted_server` whatever the import mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from redis_server import RedisServer  # noqa: E402
from scripted_server import ScriptedServer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _logs_outside_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI logs every exchange under XDG_DATA_HOME: point it (and LLMRELAY_LOGS) at a temp dir, never home."""
    data_home = tmp_path_factory.mktemp("xdg-data")
    saved = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "LLMRELAY_LOGS")}
    os.environ["XDG_DATA_HOME"] = str(data_home)
    os.environ["LLMRELAY_LOGS"] = str(data_home / "llmrelay" / "logs.db")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def server_session() -> Iterator[ScriptedServer]:
    """One scripted server for the whole test session (prefer the `server` fixture)."""
    srv = ScriptedServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(server_session: ScriptedServer) -> Iterator[ScriptedServer]:
    """The session's scripted server, reset: no connections, replies, routes or records."""
    server_session.reset()
    yield server_session


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Iterator[None]:
    """Model listings are cached per (api_base, key), and every test shares one server address: start empty."""
    from llmrelay.providers.listing import clear_model_cache

    clear_model_cache()
    yield
    clear_model_cache()


# ------------------------------------------------------------------ Redis (the scale-out tests, SPEC 8.8)


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real redis-server (free port, no persistence) for the session; stopped at the end."""
    with RedisServer() as redis_server:
        yield redis_server


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    """The session's redis-server, emptied."""
    redis_session.flush()
    return redis_session
