"""``llmrelay serve --workers N`` as the installed command: signals reach every worker at any moment, start-up
included, and no worker outlives its supervisor.

To catch the workers while they are still starting, a ``sitecustomize`` module (on PYTHONPATH) holds every worker
process at interpreter start-up: it writes a marker file, then sleeps. The supervisor is not held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from gateway_support import llmrelay_command

from llmrelay.server.workers import READY_FD_ENV

HOLD = f"""
import os, pathlib, time
if {READY_FD_ENV!r} in os.environ:
    pathlib.Path(os.environ["HOLD_DIR"], str(os.getpid())).write_text("starting")
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_held(tmp_path: Path, workers: int) -> tuple[subprocess.Popen[str], list[int]]:
    """``llmrelay serve --workers N`` whose workers are all held in start-up; (supervisor, worker pids)."""
    hold = tmp_path / "hold"
    hold.mkdir()
    (tmp_path / "sitecustomize.py").write_text(HOLD)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HOLD_DIR": str(hold)}
    process = subprocess.Popen(
        [llmrelay_command(), "serve", "--port", "0", "--workers", str(workers)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    if not wait_until(lambda: len(list(hold.iterdir())) == workers):
        process.kill()
        raise AssertionError(f"the workers did not start: {process.communicate(timeout=10)[1]}")
    return process, [int(path.name) for path in hold.iterdir()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_workers_start_stops_them_all(tmp_path: Path, signum: int) -> None:
    supervisor, pids = start_held(tmp_path, 2)
    try:
        assert all(alive(pid) for pid in pids)
        supervisor.send_signal(signum)
        code = supervisor.wait(30)
        stderr = supervisor.stderr.read() if supervisor.stderr else ""
        assert code == 0, stderr
        assert "llmrelay gateway on" not in stderr  # it never started serving
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), [pid for pid in pids if alive(pid)]
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        if supervisor.stderr:
            supervisor.stderr.close()


def test_no_worker_outlives_a_supervisor_killed_while_they_start(tmp_path: Path) -> None:
    supervisor, pids = start_held(tmp_path, 2)
    try:
        supervisor.kill()  # SIGKILL: the supervisor cannot pass anything on
        supervisor.wait(10)
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), [pid for pid in pids if alive(pid)]
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if supervisor.stderr:
            supervisor.stderr.close()
