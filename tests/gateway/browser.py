"""A real browser for the playground tests (SPEC 11.7): Debian's chromium driven by Playwright's Python package.

The browser is the system one (``chromium``, or ``LLMRELAY_CHROMIUM``): Playwright never downloads its own.
Missing browser or package: the tests skip with the reason on a developer machine and FAIL when ``CI=true``.
Screenshots of every state go to ``tests/screenshots/playground/`` (git-ignored); the measured figures (page
size, load time, first token in the browser) to ``figures.json`` there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

SHOTS = Path(__file__).resolve().parent.parent / "screenshots" / "playground"
LAUNCH_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",  # the browser's own calls home would hit the closed network
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI=true and the playground browser tests cannot run: {reason}", pytrace=False)
    print(f"\nplayground browser tests skipped: {reason}", file=sys.__stderr__)
    pytest.skip(f"playground browser tests skipped: {reason}")


def chromium_path() -> str:
    given = os.environ.get("LLMRELAY_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("no chromium on PATH (apt-get install chromium, or set LLMRELAY_CHROMIUM)")


def record_figure(name: str, value: Any) -> None:
    """Add one measured figure to figures.json (read by a person, never asserted on)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / "figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
