"""Fixtures for the gateway tests: a gateway in front of the scripted server, in this process or as a subprocess.

* ``make_gateway(toml)`` (``gateway_class=`` for a subclass, e.g. with one more door) runs :class:`llmrelay.server.app.Gateway` on its own event loop in a thread (port 0),
  configured by the TOML text, where ``{upstream}`` stands for the scripted server's base URL. The provider
  ``up`` (and ``up2``) point at the scripted server by default.
* ``spawn_gateway(toml, *args)`` starts the installed ``llmrelay serve`` command, reads the port from its startup
  line and stops it (SIGTERM) at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gateway_support import STARTUP, Address, Lines, Running, llmrelay_command
from scripted_server import ScriptedServer

from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config

BASE_CONFIG = """
[server]
keepalive_s = {keepalive}
read_timeout_s = {read_timeout}
{server}
[providers.up]
api_base = "{upstream}"
default_model = "test-model"

[providers.up2]
api_base = "{upstream}/second"
default_model = "test-model"
"""


def render(
    server: ScriptedServer, toml: str, keepalive: float = 15.0, read_timeout: float = 30.0, settings: str = ""
) -> str:
    """The test configuration: ``settings`` are more ``[server]`` lines."""
    text = BASE_CONFIG.replace("{server}", settings) + toml
    text = text.replace("{upstream}", server.base).replace("{keepalive}", repr(keepalive))
    return text.replace("{read_timeout}", repr(read_timeout))


@pytest.fixture
def make_gateway(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def make(
        toml: str = "",
        keepalive: float = 15.0,
        log_format: str = "text",
        settings: str = "",
        gateway_class: type[Gateway] = Gateway,
        **environ: str,
    ) -> Running:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / f"gateway{len(running)}.toml"
        path.write_text(render(server, toml, keepalive, settings=settings))
        config = load_config(str(path))
        log: list[str] = []
        gateway = gateway_class(config, log_format=log_format, log_stream=Lines(log, lambda line: None))
        instance = Running(gateway, log)
        running.append(instance)
        return instance.start()

    yield make
    for instance in running:
        instance.stop()


class Spawned(Address):
    def __init__(self, process: subprocess.Popen[str], port: int, lines: list[str]) -> None:
        self.process = process
        self.port = port
        self.lines = lines
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def terminate(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def start_command(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str], int]:
    """Start ``llmrelay <args>``; wait for the startup line; (process, stderr lines so far, port)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CI_FAIL", None)
    process = subprocess.Popen(
        [llmrelay_command(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    lines: list[str] = []
    assert process.stderr is not None
    while True:
        line = process.stderr.readline()
        if not line:
            process.wait(10)
            raise AssertionError(f"the gateway exited ({process.returncode}) before starting: {lines}")
        lines.append(line.rstrip("\n"))
        match = STARTUP.search(line)
        if match:
            return process, lines, int(match.group(2))


@pytest.fixture
def spawn_gateway(server: ScriptedServer, tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    spawned: list[Spawned] = []

    def spawn(
        toml: str = "",
        *args: str,
        keepalive: float = 15.0,
        read_timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> Spawned:
        path = tmp_path / f"spawned{len(spawned)}.toml"
        path.write_text(render(server, toml, keepalive, read_timeout))
        process, lines, port = start_command(["serve", "--port", "0", "--config", str(path), *args], env)
        instance = Spawned(process, port, lines)
        spawned.append(instance)
        return instance

    yield spawn
    for instance in spawned:
        if instance.process.poll() is None:
            instance.process.kill()
            instance.process.wait(10)
        for pipe in (instance.process.stdout, instance.process.stderr):
            if pipe is not None:
                pipe.close()
