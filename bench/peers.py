"""The gateways llmrelay's gateway is measured against, installed inside the repository (git-ignored).

``python -m bench.peers install`` creates, under ``bench/.peers/``:

* ``litellm/`` — a virtualenv with LiteLLM's proxy (``pip install 'litellm[proxy]'``), its ``litellm`` command;
* ``portkey/`` — ``node_modules`` with the Portkey AI gateway (``npm install @portkey-ai/gateway``), started as
  ``node …/build/start-server.js --port=PORT --headless``.

``python -m bench.peers status`` says what is installed. ``python -m bench.gateway`` finds both there (or skips
each with the reason). ``--only litellm|portkey`` installs one; ``LITELLM_SPEC`` / ``PORTKEY_SPEC`` pin versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / ".peers"
LITELLM_DIR = PEERS / "litellm"
PORTKEY_DIR = PEERS / "portkey"
PORTKEY_SERVER = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def litellm_command() -> Path:
    return LITELLM_DIR / ("Scripts/litellm.exe" if os.name == "nt" else "bin/litellm")


def litellm_missing() -> str | None:
    """None when LiteLLM's proxy is installed, else why it is not measured."""
    if not litellm_command().exists():
        return f"{litellm_command()} does not exist (python -m bench.peers install)"
    return None


def portkey_missing() -> str | None:
    """None when the Portkey gateway can be started, else why it is not measured."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not PORTKEY_SERVER.exists():
        return f"{PORTKEY_SERVER} does not exist (python -m bench.peers install)"
    return None


def portkey_argv(port: int) -> list[str]:
    node = shutil.which("node") or "node"
    return [node, str(PORTKEY_SERVER), f"--port={port}", "--headless"]


def install_litellm() -> None:
    spec = os.environ.get("LITELLM_SPEC", "litellm[proxy]")
    if not (LITELLM_DIR / "pyvenv.cfg").exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_DIR)], check=True)
    python = LITELLM_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", spec], check=True)


def install_portkey() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: the Portkey gateway needs Node.js and npm")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    package = PORTKEY_DIR / "package.json"
    if not package.exists():
        package.write_text('{"name": "llmrelay-bench-peers", "private": true}\n')
    spec = os.environ.get("PORTKEY_SPEC", "@portkey-ai/gateway")
    subprocess.run([npm, "install", "--no-audit", "--no-fund", spec], cwd=PORTKEY_DIR, check=True)


def status() -> str:
    lines = []
    for name, missing in (("LiteLLM proxy", litellm_missing()), ("Portkey gateway", portkey_missing())):
        lines.append(f"{name}: {'installed' if missing is None else 'not measured: ' + missing}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=("install", "status"))
    parser.add_argument("--only", choices=("litellm", "portkey"))
    args = parser.parse_args(argv)
    if args.action == "install":
        if args.only in (None, "litellm"):
            install_litellm()
        if args.only in (None, "portkey"):
            install_portkey()
    print(status())


if __name__ == "__main__":
    main()
