"""Reloading the configuration without a restart: ``kill -HUP PID`` (or ``llmrelay serve --reload PIDFILE``).

The file the gateway started with is read again and checked whole, exactly as at start; a file with any error is
logged (one line) and the running configuration stays. A good one replaces the gateway's configuration in one
assignment: requests that started before it finish on the configuration they started with, new ones use the new
one. Key limits, cooldowns and the response cache live in the gateway's state, not in its configuration, so they
go on counting (by key name and target). The ``[server]`` settings the process is bound to since it started
(:data:`RESTART_ONLY`: its address, Redis, body limit and timers) need a restart; a reload that changes them keeps
the running values, says so, and applies the rest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, TextIO

from .config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["RESTART_ONLY", "hold_reloads", "reload_gateway", "restart_only_changes", "send_reload", "take_early_reload"]

RESTART_ONLY = (
    "host",
    "port",
    "redis_url",
    "max_body_mb",
    "read_timeout_s",
    "keepalive_s",
    "drain_timeout_s",
    "playground",
)


_early: list[int] = []  # SIGHUPs that came before the gateway could act on them


def hold_reloads() -> None:
    """From start-up on, a SIGHUP is remembered (instead of ending the process) until the gateway or the
    supervisor takes SIGHUP over and asks :func:`take_early_reload`."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: _early.append(signum))


def take_early_reload() -> bool:
    """True (once) if a SIGHUP came during start-up."""
    came = bool(_early)
    _early.clear()
    return came


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The ``[server]`` settings that changed but only take effect after a restart."""
    return [name for name in RESTART_ONLY if getattr(old.server, name) != getattr(new.server, name)]


def _summary(config: Config) -> str:
    providers = ", ".join(config.providers) or "none"
    routes = ", ".join(config.routes) or "none"
    return f"providers: {providers}; routes: {routes}; keys: {len(config.keys)}"


def _load(path: str) -> Config:
    config = load_config(path)
    config.default_provider_name()  # the same checks as at start (an unknown default provider is an error)
    return config


async def reload_gateway(gateway: Gateway, stderr: TextIO | None = None) -> bool:
    """Read the gateway's configuration file again and swap it in; True when it was. One line on ``stderr``."""
    out = stderr or sys.stderr
    old = gateway.config
    who = f"llmrelay (pid {os.getpid()})"
    if old.path is None:
        out.write(f"{who}: nothing to reload: the gateway was started without --config\n")
        out.flush()
        return False
    try:
        new = await asyncio.to_thread(_load, old.path)
    except (ConfigError, ValueError) as error:
        out.write(f"{who}: reload failed, still serving the previous configuration: {error}\n")
        out.flush()
        return False
    kept = restart_only_changes(old, new)
    for name in kept:  # keep what the running process is bound to, so the config it reports is the one in force
        setattr(new.server, name, getattr(old.server, name))
    gateway.reload(new)
    note = f" ([server] {', '.join(kept)} changed: takes a restart)" if kept else ""
    out.write(f"{who}: reloaded {old.path} ({_summary(new)}){note}\n")
    out.flush()
    return True


def send_reload(pidfile: str) -> str | None:
    """``llmrelay serve --reload PIDFILE``: SIGHUP to the gateway whose pid the file holds; an error or None."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot read the pid file {pidfile}: {getattr(error, 'strerror', None) or error}"
    if not text.isdigit() or int(text) <= 1:
        return f"the pid file {pidfile} does not hold a process id"
    try:
        os.kill(int(text), signal.SIGHUP)
    except ProcessLookupError:
        return f"no gateway runs with the pid {text} named in {pidfile}"
    except PermissionError:
        return f"not allowed to signal the process {text} named in {pidfile}"
    return None
