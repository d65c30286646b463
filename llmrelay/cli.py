"""The ``llmrelay`` command: ``chat``, ``models``, ``image``, ``providers``, ``logs``, ``batch`` (llmrelay.batch).

Exit codes: 0 success; 1 the request failed (missing key, server error, connection
refused, rate limit …); 2 usage error (bad option or value, unknown provider, empty
prompt, unreadable ``-i`` file, input the provider cannot take); 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM). Errors are one line on stderr (``--debug`` adds
the traceback). An API key is never printed.

Only the standard library is imported at start-up, so ``llmrelay --help`` is fast;
the providers (aiohttp …) are imported when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import stat
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from pathlib import Path
    from types import FrameType

    from .logs import Log, LogEntry
    from .providers.template import OpenaiTemplate
    from .responses import Answer

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141

DIM, RESET = "\x1b[2m", "\x1b[0m"
MODEL_ENV = "LLMRELAY_MODEL"
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


# --------------------------------------------------------------------------- values


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (timeouts)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value


def timeout_seconds(text: str) -> float:
    """``--timeout``: a number > 0, or ``inf`` / ``none`` for no limit."""
    if text.strip().lower() in ("inf", "infinity", "none"):
        return math.inf
    return positive_number(text)


def temperature(text: str) -> float:
    """A finite number ≥ 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def count(text: str) -> int:
    """A whole number ≥ 0 (``logs -n``; 0 means all)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def api_base_url(text: str) -> str:
    """An http(s) URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host or " " in text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL; give the server's full base URL, "
            "e.g. http://localhost:8000/v1"
        )
    for suffix in ("/chat/completions", "/completions", "/embeddings", "/models"):
        if parts.path.rstrip("/").endswith(suffix):
            base = text.strip().split("?")[0].rstrip("/").removesuffix(suffix)
            raise argparse.ArgumentTypeError(
                f"{base}{suffix} is an endpoint, not a base URL: drop {suffix} and give --api-base {base}"
            )
    from .http.url import check_api_base

    try:
        check_api_base(text.strip())  # what the library would refuse (a #fragment …) is a usage error too
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def option_value(text: str) -> Any:
    """``-o NAME VALUE``: the value as JSON when it parses (numbers, true, lists, objects), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; a new subcommand is one ``commands.add_parser`` call here."""
    from . import __version__

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )

    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("provider")
    group.add_argument(
        "-p",
        "--provider",
        metavar="NAME",
        help="catalog name (see `llmrelay providers`); default: LLMRELAY_PROVIDER, else the first provider "
        "whose key is set, else local",
    )
    group.add_argument(
        "--api-base",
        type=api_base_url,
        metavar="URL",
        help="base URL of an OpenAI-compatible server, usually ending in /v1 (without -p: an ad-hoc provider)",
    )
    group.add_argument("--api-key", metavar="KEY", help="API key (default: the provider's environment variable)")
    group.add_argument(
        "--timeout",
        type=timeout_seconds,
        metavar="SECONDS",
        help="connect / idle-read timeout (default 120; inf: no limit)",
    )

    parser = argparse.ArgumentParser(
        prog="llmrelay",
        description='Talk to any OpenAI-compatible LLM API. `llmrelay "PROMPT"` is short for `llmrelay chat "PROMPT"`.',
        parents=[debug],
        epilog="Run `llmrelay COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"llmrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = commands.add_parser(
        "chat",
        parents=[debug, connection],
        help="ask a model; the answer streams to stdout",
        description="Ask a model. The answer streams to stdout; reasoning goes to stderr. Without PROMPT "
        "(or with -) the prompt is read from stdin; with PROMPT and piped stdin, the model gets PROMPT "
        "followed by the piped text. On a terminal without PROMPT, an interactive chat starts "
        "(/reset clears its history; Ctrl-C stops an answer; Ctrl-D quits). Every exchange is logged "
        "(see `llmrelay logs`).",
    )
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="the prompt; - or absent: read stdin")
    chat.add_argument(
        "-m",
        "--model",
        default=None,
        help=f"model id (default: {MODEL_ENV}, else the provider's default model)",
    )
    chat.add_argument("-s", "--system", metavar="TEXT", help="system message")
    chat.add_argument(
        "-a",
        "-i",
        "--attach",
        "--image",
        dest="attachments",
        action="append",
        default=[],
        metavar="FILE|URL|-",
        help="attach an image or audio file, a URL, or - for stdin's bytes; repeatable",
    )
    chat.add_argument(
        "-t", "--temperature", type=temperature, metavar="T", help="sampling temperature, 0 or more (e.g. 0.7)"
    )
    chat.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="the most tokens the answer may have (default: the provider's; 512 for local)",
    )
    chat.add_argument("--seed", type=integer, metavar="N", help="sampling seed, for repeatable answers")
    chat.add_argument(
        "-o",
        "--option",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="any request parameter, e.g. -o top_p 0.9 -o stop '[\"\\n\"]' (VALUE is JSON when it parses); repeatable",
    )
    chat.add_argument("--no-stream", action="store_true", help="ask for the whole answer at once")
    chat.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: text, reasoning, tool_calls, usage, finish_reason, provider, model "
        "(and error, when the request failed)",
    )
    chat.add_argument("-u", "--usage", action="store_true", help="print the token usage on stderr")
    chat.add_argument(
        "-x",
        "--extract",
        action="store_true",
        help="print only the first fenced code block of the answer (the whole answer when it has none; "
        "the log keeps it whole)",
    )
    chat.add_argument(
        "--xl", "--extract-last", dest="extract_last", action="store_true", help="like -x, the last block"
    )
    chat.add_argument(
        "--schema",
        metavar="JSON|FILE|FIELDS",
        help="structured output: a JSON schema, a file holding one, or fields as 'name type, …' (types str, int, "
        "float, bool; 'name type: description'); the answer is checked as JSON",
    )
    chat.add_argument(
        "--retries",
        type=count,
        default=2,
        metavar="N",
        help="retry a failed request (connection error, 408, 409, 429, 5xx) up to N times before any output "
        "(default 2; Retry-After honoured up to 60 s)",
    )
    conversation = chat.add_argument_group("conversation and log")
    conversation.add_argument(
        "-c",
        "--continue",
        dest="continue_",
        action="store_true",
        help="continue the last logged conversation, with its provider, base URL and model (-p, --api-base, "
        "-m override them)",
    )
    conversation.add_argument("--cid", metavar="ID", help="continue the logged conversation ID (as -c)")
    conversation.add_argument("-n", "--no-log", action="store_true", help="do not log this exchange")
    chat.set_defaults(handler=cmd_chat)

    models = commands.add_parser(
        "models", parents=[debug, connection], help="list the models of a provider", description="List model ids."
    )
    models.add_argument("--json", action="store_true", help="print a JSON array of model ids")
    models.add_argument(
        "--all",
        action="store_true",
        help="list every configured provider's models at once (a provider that fails is shown as such)",
    )
    models.set_defaults(handler=cmd_models)

    embed = commands.add_parser(
        "embed",
        parents=[debug, connection],
        help="embed texts; vectors as JSON lines",
        description="Embed TEXT, or each line of -i FILE (- for stdin; a .jsonl file, or lines that are JSON: a "
        'string or {"id", "text"|"content"}), and print one JSON array of floats per text, in order ({"id", '
        '"embedding"} for inputs with an id). local embeds with smollm2-embed (576 dimensions; for plumbing and '
        "tests, not retrieval quality).",
    )
    embed.add_argument("text", nargs="?", metavar="TEXT", help="the text to embed")
    embed.add_argument("-i", "--input", metavar="FILE|-", help="one text per line, or JSON lines")
    embed.add_argument("-m", "--model", default=None, help="embedding model (default: the provider's)")
    embed.add_argument("--dimensions", type=positive_int, metavar="N", help="ask for N-dimension vectors")
    embed.add_argument(
        "--retries", type=count, default=2, metavar="N", help="retries before giving up, as for chat (default 2)"
    )
    embed.set_defaults(handler=cmd_embed)

    image = commands.add_parser(
        "image",
        parents=[debug, connection],
        help="generate an image into a file",
        description="Generate an image and write it to FILE (a URL result is downloaded, a base64 one decoded); "
        "prints the file's path.",
    )
    image.add_argument("prompt", metavar="PROMPT")
    image.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the image")
    image.add_argument("-m", "--model", default="", help="image model (default: the provider's image model)")
    image.add_argument("--size", metavar="WxH", help="image size, e.g. 1024x1024")
    image.set_defaults(handler=cmd_image)

    providers = commands.add_parser(
        "providers",
        parents=[debug],
        help="list the built-in providers",
        description="List the built-in providers: name, base URL, whether their key is set (never the key), "
        "default model. * marks the provider used by default.",
    )
    providers.add_argument("--json", action="store_true", help="print a JSON array")
    providers.set_defaults(handler=cmd_providers)

    logs = commands.add_parser(
        "logs",
        parents=[debug],
        help="show the log of past exchanges",
        description="Show logged exchanges (newest last). ACTION: list (default), usage (tokens per day, "
        "provider and model), path (print the database's path), on / off (turn logging on or off). "
        "The database is LLMRELAY_LOGS, else $XDG_DATA_HOME/llmrelay/logs.db, else "
        "~/.local/share/llmrelay/logs.db.",
    )
    logs.add_argument("action", nargs="?", default="list", choices=("list", "usage", "path", "on", "off"))
    logs.add_argument("-n", "--count", type=count, default=3, metavar="N", help="how many (default 3; 0: all)")
    logs.add_argument("-q", "--query", metavar="TEXT", help="full-text search in prompts and answers")
    logs.add_argument("--conversation", "--cid", metavar="ID", help="only this conversation")
    logs.add_argument("-p", "--provider", metavar="NAME", help="only this provider")
    logs.add_argument("-m", "--model", metavar="MODEL", help="only this model")
    logs.add_argument("--json", action="store_true", help="print JSON")
    logs.add_argument(
        "-r", "--response", action="store_true", help="print only the last matching answer's text (for pipes)"
    )
    logs.add_argument("-s", "--short", action="store_true", help="one short block per exchange (prompt and answer cut)")
    logs.set_defaults(handler=cmd_logs)

    from .batch.command import add_command as add_batch_command
    from .server.commands import add_commands

    add_batch_command(commands, [debug, connection])
    add_commands(commands, [debug])
    return parser


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _with_default_command(argv: list[str], commands: set[str]) -> list[str]:
    """``llmrelay "prompt" …`` and ``llmrelay -m X "prompt"`` mean ``llmrelay chat …``: known commands win."""
    position = 0
    while position < len(argv) and argv[position] == "--debug":
        position += 1
    if position >= len(argv):
        return argv
    first = argv[position]
    if first in commands or first in TOP_LEVEL_OPTIONS:
        return argv
    return [*argv[:position], "chat", *argv[position:]]


# --------------------------------------------------------------------------- running


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops an answer as Ctrl-C does (logged as interrupted, the line ended), then exits 143."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()  # main() returns 143; the atexit handlers run (they stop the local server)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmrelay`` / ``python -m llmrelay``; returns the exit status."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_with_default_command(arguments, _command_names(parser)))
    debug = getattr(args, "debug", False)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args) or 0
    except UsageError as error:
        _report(f"error: {error}", debug)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        with contextlib.suppress(Exception):
            sys.stderr.write("\n")
            sys.stderr.flush()
        if debug:
            raise
        return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): stop quietly; silence the flush at exit too.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        from .errors import UnsupportedParameterError

        _report(f"error: {describe_error(error, getattr(args, 'provider_class', None), args)}", debug)
        return EXIT_USAGE if isinstance(error, UnsupportedParameterError) else EXIT_ERROR


def _report(line: str, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_line(text: str, limit: int = 1000) -> str:
    from ._text import shorten

    return shorten(" ".join(text.split()), limit)


def describe_error(
    error: BaseException, cls: type[OpenaiTemplate] | None = None, args: argparse.Namespace | None = None
) -> str:
    """One line naming the problem and, where it helps, what to do (and why this provider was used)."""
    from .errors import (
        ConnectError,
        MissingAuthError,
        ModelNotFoundError,
        RelayError,
        StreamIncompleteError,
        StreamTimeoutError,
    )

    name = cls.get_name() if cls is not None else (getattr(error, "provider", None) or "the provider")
    env = cls.get_api_key_env() if cls is not None else None
    chosen = getattr(args, "chosen_because", None)
    why = f"; {name} was chosen because {chosen}: use -p local for the local model" if chosen else ""
    if isinstance(error, MissingAuthError):
        if error.status is None:
            hint = f": set {env} (or pass --api-key)" if env else " (pass --api-key)"
            return _one_line(f"{name} needs an API key{hint}")
        hint = f" (check {env} or --api-key{why})" if env else f" (check --api-key{why})"
        return _one_line(f"{error!s}{hint}")
    if isinstance(error, ModelNotFoundError):
        return _one_line(f"{error!s} (list the models with `llmrelay models` and the same -p / --api-base)")
    if isinstance(error, ConnectError):
        return _one_line(f"{error!s} (is the server running? check the base URL{why})")
    if getattr(args, "attachments", None) and _may_be_media_refusal(error):
        why += "; the model may not read images or audio: pick a vision model with -m (see `llmrelay models`)"
    if isinstance(error, StreamIncompleteError) and not isinstance(error, StreamTimeoutError):
        got = len(error.partial_text)
        return _one_line(
            f"{name}: the connection closed after {got} characters of the answer, before it was complete"
            + (f" ({why[2:]})" if why else "")
        )
    if isinstance(error, RelayError):
        text = str(error)
        if error.status == 404 and cls is not None:
            endpoint = getattr(args, "endpoint", "chat/completions")
            text += _missing_v1_hint(cls, getattr(args, "api_base", None), endpoint)
        return _one_line(text + (f" ({why[2:]})" if why else ""))
    if isinstance(error, (ValueError, TypeError, OSError)):
        return _one_line(str(error) or type(error).__name__)
    return _one_line(f"{type(error).__name__}: {error}")


def _may_be_media_refusal(error: BaseException) -> bool:
    """An error that a model which cannot see images often gives: a 400/422/5xx, or an empty broken stream."""
    from .errors import BadRequestError, ContextLengthError, ServerError, StreamIncompleteError, StreamTimeoutError

    if isinstance(error, StreamIncompleteError):
        return not error.partial_text and not isinstance(error, StreamTimeoutError)
    return isinstance(error, (BadRequestError, ServerError)) and not isinstance(error, ContextLengthError)


def _missing_v1_hint(cls: type[OpenaiTemplate], api_base: str | None, endpoint: str = "chat/completions") -> str:
    """For a 404: the URL tried, and /v1 if the base URL lacks it."""
    try:
        base = cls.get_api_base(api_base)
    except Exception:
        return ""
    hint = f" (tried {base}/{endpoint}"
    if not re.search(r"/v\d+[a-z]*(?:/|$)", base):
        hint += f"; OpenAI-compatible servers usually answer under /v1: try --api-base {base}/v1"
    return hint + ")"


def _quiet_interrupts(loop: Any, context: dict[str, Any]) -> None:
    """Ctrl-C / SIGTERM that landed in a helper task (aiohttp's request writer) was handled by the command
    already: no "Task exception was never retrieved" traceback for it. Anything else is reported as usual."""
    if isinstance(context.get("exception"), KeyboardInterrupt):
        return
    loop.default_exception_handler(context)


class _Loop:
    """One event loop for the whole command (an interactive chat reuses its connections)."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_interrupts)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        task = self.loop.create_task(coroutine)
        try:
            return self.loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    self.loop.run_until_complete(task)
            raise

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())  # closes the pooled HTTP sessions
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        except BaseException:
            pass
        finally:
            self.loop.close()

    def __enter__(self) -> _Loop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def resolve_provider(args: argparse.Namespace) -> type[OpenaiTemplate]:
    """The provider class for ``-p`` / ``--api-base`` / the environment; unknown names are usage errors.

    Sets ``args.chosen_because`` when a key in the environment picked it (said in errors).
    """
    from .client.router import resolve_provider as resolve

    try:
        cls = resolve(args.provider or None, args.api_base)
    except ValueError as error:
        raise UsageError(str(error)) from None
    args.provider_class = cls
    args.chosen_because = None
    picked_by_default = not (args.provider or args.api_base or os.environ.get("LLMRELAY_PROVIDER", "").strip())
    if picked_by_default and cls.__name__ != "Local" and cls.get_api_key():
        args.chosen_because = f"{cls.get_api_key_env()} is set"
    return cls


def _check_key(cls: type[OpenaiTemplate], api_key: str | None) -> None:
    cls.check_auth(cls.get_api_key(api_key))


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.api_key:
        options["api_key"] = args.api_key
    if args.api_base:
        options["api_base"] = args.api_base
    if args.timeout is not None:
        options["timeout"] = args.timeout
    return options


# ------------------------------------------------------------------------------ chat


class _Printer:
    """Writes text to stdout as it arrives and reasoning to stderr (dimmed on a colour terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.out = sys.stdout
        self.err = sys.stderr
        self.colour = self.err.isatty() and not os.environ.get("NO_COLOR")
        self.in_reasoning = False
        self.last = ""

    def text(self, piece: str) -> None:
        if self.quiet or not piece:
            return
        self.end_reasoning()
        self.last = piece[-1]  # first: a signal during the write must still find the line to end
        self.out.write(piece)
        self.out.flush()

    def reasoning(self, piece: str) -> None:
        if self.quiet:
            return
        if not self.in_reasoning:
            self.in_reasoning = True
            if self.colour:
                self.err.write(DIM)
        self.err.write(piece)
        self.err.flush()

    def end_reasoning(self) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self.err.write((RESET if self.colour else "") + "\n")
            self.err.flush()

    def note(self, line: str) -> None:
        self.end_reasoning()
        self.err.write(line + "\n")
        self.err.flush()

    def finish(self) -> None:
        """End the answer with a line break (pipes too: `| tee log` keeps answers apart)."""
        self.end_reasoning()
        if not self.quiet and self.last and self.last != "\n":
            self.out.write("\n")
            self.out.flush()
            self.last = "\n"


class _Turn:
    """One exchange: the folded answer (also when it failed half-way) and its timings."""

    def __init__(self) -> None:
        from .responses import Answer

        self.answer: Answer = Answer()
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.ended: float | None = None
        self.error: BaseException | None = None

    def duration_ms(self) -> int:
        return round(((self.ended or time.monotonic()) - self.started) * 1000)

    def first_token_ms(self) -> int | None:
        return None if self.first_token is None else round((self.first_token - self.started) * 1000)


async def _spin_until(event: Any, label: str) -> None:
    """A spinner on stderr (a terminal) until ``event`` is set; shown only if the wait passes 0.3 s."""
    import asyncio

    from .providers.local import Spinner

    spinner = Spinner(label, sys.stderr)
    try:
        await asyncio.wait_for(event.wait(), 0.3)
        return
    except asyncio.TimeoutError:
        pass
    try:
        while not event.is_set():
            spinner.tick()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), 0.1)
    finally:
        spinner.clear()


async def _chat_turn(
    cls: type[OpenaiTemplate],
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    turn: _Turn,
    quiet: bool,
    retries: int = 0,
) -> None:
    import asyncio

    from .responses import AudioResponse, ImageResponse, Reasoning, ToolCalls

    printer = _Printer(quiet)
    spinner: asyncio.Task[None] | None = None
    arrived = asyncio.Event()
    try:
        await cls.prepare()  # the local model's own start-up spinner runs here, before ours
        turn.started = time.monotonic()
        if not quiet and sys.stderr.isatty():
            spinner = asyncio.ensure_future(_spin_until(arrived, f"Waiting for {cls.get_name()}"))
        async for chunk in _answer_events(cls, model, messages, options, retries, printer):
            if not arrived.is_set():
                arrived.set()
                if spinner is not None:
                    await spinner
            turn.answer.add(chunk)
            if isinstance(chunk, (str, ImageResponse)):
                text = str(chunk)
                if text and turn.first_token is None:
                    turn.first_token = time.monotonic()
                printer.text(text)
            elif isinstance(chunk, Reasoning):
                if turn.first_token is None:
                    turn.first_token = time.monotonic()
                printer.reasoning(chunk.token)
            elif isinstance(chunk, ToolCalls):
                if not quiet:
                    for call in chunk.calls:
                        function = call.get("function") or {}
                        printer.note(f"tool call: {function.get('name')}({function.get('arguments')})")
            elif isinstance(chunk, AudioResponse):
                if not quiet:
                    printer.note(f"(an audio answer of {len(chunk.data)} base64 characters is not shown)")
    finally:
        arrived.set()
        if spinner is not None:
            with contextlib.suppress(BaseException):
                await spinner
        turn.ended = time.monotonic()
        printer.finish()


async def _answer_events(
    cls: type[OpenaiTemplate],
    model: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    retries: int,
    printer: _Printer,
) -> Any:
    """The answer's events, the request retried as the client retries it (``llmrelay.client.retry``: connection
    errors, 408, 409, 429, 5xx, ``Retry-After`` up to its cap), only before any output; a note on stderr per wait."""
    import asyncio

    from .client.router import END, first_success, open_events

    options = dict(options)
    stream = bool(options.pop("stream", True))
    failures: list[BaseException] = []

    async def remember(target: Any, error: BaseException) -> None:
        failures.append(error)

    async def wait(delay: float) -> None:
        reason = _one_line(str(failures[-1]) or type(failures[-1]).__name__, 200)
        printer.note(f"note: {reason}; retry {len(failures)} of {retries} in {delay:.1f} s")
        await asyncio.sleep(delay)

    def attempt(provider: Any) -> Any:
        return open_events(provider, model, messages, options, stream=stream)

    opened = await first_success([cls], attempt, max_retries=retries, sleep=wait, after_error=remember, single=True)
    try:
        if opened.info is not None:
            yield opened.info
        if opened.first is not END:
            yield opened.first
        async for item in opened.events:
            yield item
    finally:
        await opened.aclose()


def _stdin_has_input() -> bool:
    """True when stdin is a pipe or a file (something was piped in), not a terminal or /dev/null."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return False
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def _read_stdin_bytes() -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return sys.stdin.read().encode()
    data: bytes = stream.read()
    return data


def _stdin_text(data: bytes) -> str:
    """Piped stdin as text; binary or non-UTF-8 input is a usage error (attach files with -a instead)."""
    if b"\x00" in data:
        raise UsageError("stdin holds binary data, not text (attach a file with -a FILE, or -a - for stdin)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"stdin is not UTF-8 text (invalid byte at position {error.start}); convert it, e.g. with iconv"
        ) from None


def _media(items: list[str], stdin: bytes | None) -> list[tuple[Any, str | None]]:
    """The ``-a`` / ``-i`` attachments, read and checked before anything is sent."""
    from pathlib import Path

    from .media import sniff_mime

    media: list[tuple[Any, str | None]] = []
    for item in items:
        if item.startswith(("http://", "https://", "data:")):
            media.append((item, None))
            continue
        if item == "-":
            data, name = stdin or b"", "stdin"
        else:
            path = Path(item).expanduser()
            if path.is_dir():
                raise UsageError(f"-a {item}: is a directory, not a file")
            if not path.exists():
                raise UsageError(f"-a {item}: no such file")
            try:
                data, name = path.read_bytes(), path.name
            except OSError as error:
                raise UsageError(f"-a {item}: {error.strerror or error}") from None
        if not data:
            raise UsageError(f"-a {item}: the file is empty")
        if sniff_mime(data) is None:
            raise UsageError(
                f"-a {item}: not an image or audio file (PNG, JPEG, GIF, WebP, WAV or MP3); "
                "to send text, pipe it on stdin or put it in the prompt"
            )
        media.append((data, name))
    return media


def _usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return "tokens: the server reported no usage"
    return (
        f"tokens: {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion"
        f" = {usage.get('total_tokens', 0)} total"
    )


def _answer_dict(answer: Answer, error: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "text": answer.content,
        "reasoning": answer.reasoning_content,
        "tool_calls": answer.calls,
        "usage": answer.usage.to_dict() if answer.usage is not None else None,
        "finish_reason": answer.finish_reason if error is None else answer.reason,
        "provider": answer.info.name if answer.info else None,
        "model": answer.info.model if answer.info else None,
    }
    if answer.images:
        data["images"] = answer.images
    if error is not None:
        data["error"] = error
    return data


class _Chat:
    """Everything one ``llmrelay chat`` run shares between its turns: provider, options, log, conversation."""

    def __init__(self, args: argparse.Namespace, cls: type[OpenaiTemplate], options: dict[str, Any]) -> None:
        self.args = args
        self.cls = cls
        self.options = options
        self.model: str = args.model or ""
        self.log: Log | None = None
        self.log_warned = False
        self.conversation_id = ""

    def run_turn(self, loop: _Loop, messages: list[dict[str, Any]], options: dict[str, Any]) -> _Turn:
        """Run one exchange; its error (Ctrl-C included) is kept in ``turn.error``, not raised."""
        turn = _Turn()
        try:
            quiet = self.args.json or self.args.extract or self.args.extract_last
            loop.run(_chat_turn(self.cls, self.model, messages, options, turn, quiet, self.args.retries))
        except (Exception, KeyboardInterrupt) as error:
            turn.error = error
        return turn

    def requested_model(self) -> str | None:
        """The model asked for: ``-m``, the conversation's, else the provider's default (logged for failures)."""
        try:
            return self.cls.get_model(self.model) or None
        except ValueError:
            return None

    def api_base(self) -> str | None:
        """The base URL this chat reached (never for ``local``: its port changes per run); a key is never in it."""
        if _catalog_name(self.cls) == "local" and not self.args.api_base:
            return None
        try:
            return self.cls.get_api_base(self.args.api_base)
        except (ValueError, TypeError):
            return None

    def record(self, turn: _Turn, prompt: str, system: str | None, attachments: list[str]) -> None:
        """Log the exchange (one transaction); a log that cannot be written warns once and is skipped after."""
        if self.log is None:
            return
        from .errors import RelayError
        from .logs import utc_now

        answer = turn.answer
        error = turn.error
        if isinstance(error, KeyboardInterrupt):
            error_text: str | None = "interrupted"
        elif error is not None:
            error_text = describe_error(error, self.cls, self.args) if isinstance(error, RelayError) else str(error)
        else:
            error_text = None
        usage = answer.usage
        entry: LogEntry = {
            "conversation_id": self.conversation_id,
            "datetime_utc": utc_now(),
            "provider": answer.info.name if answer.info else self.cls.get_name(),
            "provider_id": _catalog_name(self.cls),
            "api_base": self.api_base(),
            "model": answer.info.model if answer.info else self.requested_model(),
            "prompt": prompt,
            "system": system,
            "response": answer.content,
            "reasoning": answer.reasoning_content,
            "tool_calls": answer.calls,
            "attachments": attachments or None,
            "options": _logged_options(self.options) or None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "total_tokens": usage.total_tokens if usage else None,
            "duration_ms": turn.duration_ms(),
            "first_token_ms": turn.first_token_ms(),
            "finish_reason": answer.finish_reason if error is None else answer.reason,
            "error": error_text,
        }
        import sqlite3

        try:
            self.log.record(entry)
        except (sqlite3.Error, OSError) as problem:
            if not self.log_warned:
                self.log_warned = True
                sys.stderr.write(
                    f"warning: could not write the log {self.log.path}: {problem} (the chat goes on; "
                    "-n skips the log, `llmrelay logs off` turns it off)\n"
                )
                sys.stderr.flush()
            self.log = None


def _catalog_name(cls: type[OpenaiTemplate]) -> str | None:
    """The catalog name of a provider class (``vllm``, ``custom``, ``local`` …), None for one not in it."""
    from .providers.catalog import PROVIDERS

    for name, provider in PROVIDERS.items():
        if provider is cls:
            return name
    return "local" if cls.__name__ == "Local" else None


_LOGGED_OPTIONS = ("temperature", "max_tokens", "seed", "stream")


def _logged_options(options: dict[str, Any]) -> dict[str, Any]:
    """The request options worth keeping in the log (never the key or the attachments' bytes)."""
    kept = {name: options[name] for name in _LOGGED_OPTIONS if name in options}
    for name in options.get("extra_parameters") or ():
        if name in options:
            kept[name] = options[name]
    return kept


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = False
    prompt = args.prompt
    stdin_data: bytes | None = None
    wants_stdin_media = "-" in args.attachments
    if prompt == "-":
        if wants_stdin_media:
            raise UsageError("stdin cannot be both the prompt (-) and an attachment (-a -)")
        stdin_data = _read_stdin_bytes()
        prompt = _stdin_text(stdin_data)
    elif prompt is None and not sys.stdin.isatty():
        if wants_stdin_media:
            raise UsageError("with -a -, stdin is the attachment: give the prompt as an argument")
        stdin_data = _read_stdin_bytes()
        prompt = _stdin_text(stdin_data)
    elif prompt is None:
        interactive = True
    elif not prompt.strip():
        raise UsageError("the prompt is empty")
    elif _stdin_has_input():
        stdin_data = _read_stdin_bytes()
        if not wants_stdin_media:
            piped = _stdin_text(stdin_data)
            if piped.strip():
                prompt = f"{prompt}\n\n{piped}"
    if prompt is not None and not prompt.strip():
        raise UsageError("the prompt is empty (pass PROMPT or pipe it on stdin)")
    if wants_stdin_media and stdin_data is None:
        raise UsageError("-a - reads stdin, but nothing was piped in: pipe the file in, e.g. -a - < photo.png")
    if args.continue_ and args.cid:
        raise UsageError("-c continues the last conversation and --cid a given one: use one of them")
    media = _media(args.attachments, stdin_data)
    continued = _continued_conversation(args)
    if args.model is None:
        args.model = os.environ.get(MODEL_ENV, "").strip() or None
    cls = resolve_provider(args)
    options = _connection(args)
    _check_key(cls, args.api_key)
    options["stream"] = not args.no_stream
    if args.temperature is not None:
        options["temperature"] = args.temperature
    max_tokens = args.max_tokens if args.max_tokens is not None else cls.default_max_tokens
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if args.seed is not None:
        options["seed"] = args.seed
    extra = _extra_options(args.option)
    if args.schema is not None:
        extra["response_format"] = _schema_format(args.schema)
    if extra:
        options.update(extra)
        options["extra_parameters"] = list(extra)

    chat = _Chat(args, cls, options)
    messages = _start_conversation(chat, args, continued)
    attachment_names = list(args.attachments)

    with _Loop() as loop:
        if not interactive:
            assert prompt is not None
            turn_messages = [*messages, {"role": "user", "content": prompt}]
            turn = chat.run_turn(loop, turn_messages, dict(options, media=media) if media else options)
            if turn.error is None:
                _after_answer(args, turn.answer)
            elif args.json and isinstance(turn.error, Exception):
                message = describe_error(turn.error, cls, args)
                sys.stdout.write(json.dumps(_answer_dict(turn.answer, message), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            chat.record(turn, prompt, _system_of(turn_messages), attachment_names)
            if turn.error is not None:
                raise turn.error
            return 0
        return _interactive(loop, chat, messages, media, attachment_names)


def _extra_options(pairs: list[list[str]]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise UsageError(f"-o {name}: not a parameter name")
        if name in ("messages", "model", "stream"):
            raise UsageError(f"-o {name}: set by llmrelay itself; use the command's own options")
        options[name] = option_value(value)
        if name == "n" and options[name] != 1:
            raise UsageError(f"-o n {value}: the command prints one answer, so n must be 1; run it again for more")
    return options


def _schema_format(value: str) -> dict[str, Any]:
    """``--schema``: JSON text, a file holding JSON, or the concise ``'name type, …'`` fields."""
    from pathlib import Path

    from ._structured import concise_schema, schema_format

    text = value.strip()
    source = "--schema"
    if not text.startswith("{") and Path(text).expanduser().is_file():
        source = f"--schema {text}"
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{source}: cannot read it: {error}") from None
        text = text.strip()
    if text.startswith("{"):
        try:
            schema = json.loads(text)
        except ValueError as error:
            raise UsageError(f"{source}: not valid JSON: {error}") from None
        if not isinstance(schema, dict):
            raise UsageError(f"{source}: a JSON schema is an object")
    else:
        try:
            schema = concise_schema(text)
        except ValueError as error:
            raise UsageError(f"{source}: {error}") from None
    return schema_format(schema)


def _system_of(messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        if message.get("role") == "system" and isinstance(message.get("content"), str):
            return str(message["content"])
    return None


def _continued_conversation(args: argparse.Namespace) -> tuple[str, list[LogEntry]] | None:
    """For -c / --cid: the conversation's id and logged exchanges (failed ones too). Without -p and --api-base,
    the conversation's provider and base URL are used again (keys come from the environment, as always)."""
    if not (args.continue_ or args.cid):
        return None
    import sqlite3

    from .logs import Log

    log = Log()
    try:
        conversation_id = args.cid or log.last_conversation_id()
        entries = log.conversation(conversation_id) if conversation_id else []
    except sqlite3.Error as error:
        raise UsageError(f"cannot read the log {log.path}: {error}") from None
    if not conversation_id:
        raise UsageError(f"-c: there is no logged conversation to continue (the log {log.path} is empty)")
    if not entries:
        raise UsageError(f"--cid {conversation_id}: no such conversation in the log {log.path}")
    last = entries[-1]
    if not args.provider and not args.api_base and _logged_provider(last) is not None:
        args.provider = str(last.get("provider_id") or last.get("provider"))
        args.api_base = last.get("api_base") or None
    return conversation_id, entries


def _logged_provider(entry: LogEntry) -> Any:
    """The provider class a log row names (its catalog name, else its display name), None if unknown."""
    from .providers.catalog import get_provider

    try:
        return get_provider(str(entry.get("provider_id") or entry.get("provider") or ""))
    except (ValueError, TypeError, ImportError):
        return None


def _start_conversation(
    chat: _Chat, args: argparse.Namespace, continued: tuple[str, list[LogEntry]] | None
) -> list[dict[str, Any]]:
    """The opening messages: a continued conversation's completed exchanges, else the system message alone."""
    from .logs import Log, history, logging_enabled, new_conversation_id

    log = Log()
    if not args.no_log and logging_enabled(log.path):
        chat.log = log
    if continued is not None:
        chat.conversation_id, entries = continued
        last = entries[-1]
        if not args.model and last.get("model") and _logged_provider(last) is chat.cls:
            chat.model = str(last["model"])
        return history(entries, args.system)
    chat.conversation_id = new_conversation_id()
    return [{"role": "system", "content": args.system}] if args.system else []


def _after_answer(args: argparse.Namespace, answer: Answer) -> None:
    from ._structured import extract_code_block, json_problem

    if args.json:
        sys.stdout.write(json.dumps(_answer_dict(answer), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif args.extract or args.extract_last:
        text = extract_code_block(answer.content, last=args.extract_last)
        text = answer.content if text is None else text
        if text:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
    if args.schema is not None:
        problem = json_problem(answer.content)
        if problem:
            sys.stderr.write(f"warning: the answer is not valid JSON ({problem}); the model may ignore --schema\n")
    if not args.json and answer.reason == "length":
        sys.stderr.write("note: the answer was cut at the token limit (raise --max-tokens)\n")
    if args.usage:
        sys.stderr.write(_usage_line(answer.usage.to_dict() if answer.usage else None) + "\n")
    sys.stderr.flush()


def _interactive(
    loop: _Loop,
    chat: _Chat,
    messages: list[dict[str, Any]],
    media: list[tuple[Any, str | None]],
    attachment_names: list[str],
) -> int:
    from .errors import ContextLengthError

    args = chat.args
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    sys.stderr.write(
        f"Chatting with {chat.cls.get_name()}. /reset clears the history; Ctrl-C stops an answer; "
        "type 'exit' or press Ctrl-D to quit.\n"
    )
    sys.stderr.flush()
    prompt_to_stdout = sys.stdout.isatty()
    system = _system_of(messages)
    while True:
        try:
            if prompt_to_stdout:
                line = input("> ")
            else:
                sys.stderr.write("> ")
                sys.stderr.flush()
                line = input()
        except EOFError:
            sys.stderr.write("\n")
            return 0
        except KeyboardInterrupt as interrupt:
            sys.stderr.write("\n")
            return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
        command = line.strip()
        if command in ("exit", "quit"):
            return 0
        if not command:
            continue
        if command == "/reset":
            from .logs import new_conversation_id

            messages[:] = [{"role": "system", "content": system}] if system else []
            chat.conversation_id = new_conversation_id()
            sys.stderr.write("(history cleared: a new conversation starts)\n")
            sys.stderr.flush()
            continue
        turn_options = dict(chat.options, media=media) if media else chat.options
        dropped = 0
        while True:
            turn_messages = [*messages, {"role": "user", "content": line}]
            turn = chat.run_turn(loop, turn_messages, turn_options)
            error = turn.error
            if isinstance(error, ContextLengthError) and not turn.answer.text and _drop_oldest_exchange(messages):
                dropped += 1
                continue
            if isinstance(error, Terminated):
                chat.record(turn, line, system, attachment_names)
                raise error
            if error is not None:
                if isinstance(error, KeyboardInterrupt):
                    sys.stderr.write("(answer stopped; press Ctrl-C again at the prompt, or Ctrl-D, to quit)\n")
                else:
                    sys.stderr.write(f"error: {describe_error(error, chat.cls, args)}\n")
                sys.stderr.flush()
                chat.record(turn, line, system, attachment_names)
                break
            if dropped:
                plural = "s" if dropped > 1 else ""
                sys.stderr.write(
                    f"note: the oldest {dropped} exchange{plural} left the history to fit the model's context "
                    "(/reset clears it all)\n"
                )
            media = []  # attached to the first question only
            turn_options = chat.options
            _after_answer(args, turn.answer)
            chat.record(turn, line, system, attachment_names)
            attachment_names = []
            messages[:] = [*turn_messages, {"role": "assistant", "content": turn.answer.content}]
            break


def _drop_oldest_exchange(messages: list[dict[str, Any]]) -> bool:
    """Remove the oldest user message and the answers up to the next one; False if there is none."""
    start = next((i for i, message in enumerate(messages) if message.get("role") == "user"), None)
    if start is None:
        return False
    end = start + 1
    while end < len(messages) and messages[end].get("role") != "user":
        end += 1
    del messages[start:end]
    return True


# ---------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    if args.all:
        if args.provider or args.api_base or args.api_key:
            raise UsageError("--all lists every configured provider: leave out -p, --api-base and --api-key")
        return _all_models(args)
    cls = resolve_provider(args)
    options = _connection(args)
    _check_key(cls, args.api_key)
    with _Loop() as loop:
        models = loop.run(cls.get_models_async(**options))
    if args.json:
        sys.stdout.write(json.dumps(models, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("".join(f"{model}\n" for model in models))
    sys.stdout.flush()
    return 0


def _configured_providers() -> list[tuple[str, type[OpenaiTemplate]]]:
    """Every catalog provider callable as is (key set or not needed, base URL known), then ``local`` if installed."""
    from .providers.catalog import PROVIDERS, is_configured

    found: list[tuple[str, type[OpenaiTemplate]]] = []
    for name, cls in PROVIDERS.items():
        needs_setup = cls.needs_auth or getattr(cls, "api_base_env", None)
        if needs_setup and is_configured(cls):
            found.append((name, cls))
    return found


async def _list_all(providers: list[tuple[str, type[OpenaiTemplate]]], timeout: float | None) -> list[Any]:
    import asyncio

    from .client.router import first_success

    async def listing(cls: type[OpenaiTemplate]) -> Any:
        return await first_success([cls], lambda p: p.get_models_async(timeout=timeout), single=True)

    return await asyncio.gather(*(listing(cls) for _, cls in providers), return_exceptions=True)


def _local_models() -> list[str] | str:
    """The local provider's models (fixed aliases: no server is started to list them), or why it is unavailable."""
    from .errors import RelayError

    try:
        from .providers.local import EMBED_ALIAS, SERVED_MODELS, check_requirements, find_model_path

        check_requirements()
        find_model_path()
    except (RelayError, ImportError) as error:
        return str(error)
    return [*SERVED_MODELS, EMBED_ALIAS]


def _all_models(args: argparse.Namespace) -> int:
    providers = _configured_providers()
    with _Loop() as loop:
        results: list[Any] = loop.run(_list_all(providers, args.timeout))
    names = [name for name, _ in providers]
    names.append("local")
    local = _local_models()
    results.append(local if isinstance(local, list) else RuntimeError(local))
    table: dict[str, dict[str, Any]] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            table[name] = {"error": str(result) if type(result) is RuntimeError else describe_error(result)}
        else:
            table[name] = {"models": list(result)}
    if args.json:
        sys.stdout.write(json.dumps(table, ensure_ascii=False) + "\n")
    else:
        for name, entry in table.items():
            if "error" in entry:
                sys.stdout.write(f"{name}: error: {entry['error']}\n")
            else:
                sys.stdout.write(f"{name}: {len(entry['models'])} models\n")
                sys.stdout.write("".join(f"  {model}\n" for model in entry["models"]))
    sys.stdout.flush()
    return 0 if any("models" in entry for entry in table.values()) else EXIT_ERROR


# ----------------------------------------------------------------------------- embed


def _embed_inputs(args: argparse.Namespace) -> list[tuple[Any, str]]:
    """(id or None, text) for each text to embed: TEXT, else the lines of -i FILE (JSON lines when they are)."""
    if args.text is not None and args.input is not None:
        raise UsageError("give TEXT or -i FILE, not both")
    if args.text is not None:
        if not args.text.strip():
            raise UsageError("the text is empty")
        return [(None, args.text)]
    if args.input is None:
        raise UsageError("give TEXT or -i FILE (- for stdin)")
    if args.input == "-":
        data = _stdin_text(_read_stdin_bytes())
    else:
        from pathlib import Path

        try:
            data = _stdin_text(Path(args.input).expanduser().read_bytes())
        except OSError as error:
            raise UsageError(f"-i {args.input}: {error.strerror or error}") from None
        except UsageError as error:
            raise UsageError(f"-i {args.input}: {str(error).replace('stdin', 'the file', 1)}") from None
    inputs = [_embed_line(line, number) for number, line in enumerate(data.splitlines(), 1) if line.strip()]
    if not inputs:
        raise UsageError(f"-i {args.input}: no text to embed")
    return inputs


def _embed_line(line: str, number: int) -> tuple[Any, str]:
    """One input line: a JSON string, a JSON object with ``text`` / ``content`` (and maybe ``id``), else the text."""
    stripped = line.strip()
    if not stripped.startswith(("{", '"')):
        return None, line
    try:
        value = json.loads(stripped)
    except ValueError:
        return None, line
    if isinstance(value, str):
        return None, value
    text = value.get("text", value.get("content")) if isinstance(value, dict) else None
    if not isinstance(text, str) or not text:
        raise UsageError(f'line {number}: a JSON line needs a "text" (or "content") string')
    return value.get("id"), text


def cmd_embed(args: argparse.Namespace) -> int:
    from .providers.embeddings import MAX_INPUTS

    inputs = _embed_inputs(args)
    args.endpoint = "embeddings"  # for the 404 hint
    cls = resolve_provider(args)
    if not (args.model or cls.default_embedding_model):
        raise UsageError(f"{cls.get_name()} has no default embedding model: pass -m MODEL")
    _check_key(cls, args.api_key)
    options: dict[str, Any] = {"dimensions": args.dimensions} if args.dimensions else {}
    with _Loop() as loop:
        for start in range(0, len(inputs), MAX_INPUTS):
            batch = inputs[start : start + MAX_INPUTS]
            answer = loop.run(_embed(cls, args, [text for _, text in batch], options))
            for (identifier, _), item in zip(batch, answer.data, strict=True):
                vector = item.embedding
                line = vector if identifier is None else {"id": identifier, "embedding": vector}
                sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    return 0


async def _embed(cls: type[OpenaiTemplate], args: argparse.Namespace, texts: list[str], options: dict[str, Any]) -> Any:
    """The embeddings operation through the client: its retry policy, as for chat."""
    from .client import AsyncClient

    client = AsyncClient(
        cls, api_key=args.api_key, api_base=args.api_base, max_retries=args.retries, timeout=args.timeout
    )
    return await client.embeddings.create(texts, args.model or "", **options)


# ----------------------------------------------------------------------------- image

_SIZE = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*$")


def _check_output(output: Path, given: str) -> None:
    """The image's file can be written: checked before the (paid) request."""
    if output.is_dir():
        raise UsageError(f"-o {given}: is a directory; give a file name")
    parent = output.parent
    if not parent.is_dir():
        raise UsageError(f"-o {given}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UsageError(f"-o {given}: cannot write there (permission denied)")


def cmd_image(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not args.prompt.strip():
        raise UsageError("the prompt is empty")
    if args.size and not _SIZE.match(args.size):
        raise UsageError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 1024x1024")
    output = Path(args.output).expanduser()
    _check_output(output, args.output)
    cls = resolve_provider(args)
    if not cls.can_generate_images:
        raise UsageError(f"{cls.get_name()} cannot generate images; choose a provider with -p (e.g. -p openai)")
    model = args.model or cls.default_image_model
    if not model:
        raise UsageError(f"{cls.get_name()} has no default image model: pass -m MODEL")
    options = _connection(args)
    _check_key(cls, args.api_key)
    with _Loop() as loop:
        data = loop.run(_generate_image(cls, model, args.prompt, args.size, options))
    output.write_bytes(data)
    sys.stdout.write(f"{output}\n")
    sys.stdout.flush()
    return 0


async def _generate_image(
    cls: type[OpenaiTemplate], model: str, prompt: str, size: str | None, options: dict[str, Any]
) -> bytes:
    from .providers.images import image_bytes

    extra: dict[str, Any] = {"size": size} if size else {}
    data = await cls.generate_images_async(prompt, model, **extra, **options)
    return await image_bytes(data, cls.get_name(), options.get("timeout"))


# ------------------------------------------------------------------------- providers


def cmd_providers(args: argparse.Namespace) -> int:
    from .providers.catalog import default_provider, get_provider, provider_names

    try:
        default = default_provider()
    except ValueError as error:
        default = None
        sys.stderr.write(f"warning: {error}\n")
        sys.stderr.flush()
    except ImportError:
        default = None
    rows: list[dict[str, Any]] = []
    for name in provider_names():
        try:
            cls = get_provider(name)
        except ImportError:
            rows.append(
                {
                    "name": name,
                    "base_url": "(not installed)",
                    "key": "",
                    "key_env": None,
                    "key_set": False,
                    "needs_key": False,
                    "default_model": "",
                    "default": False,
                }
            )
            continue
        rows.append(_provider_row(name, cls, cls is default))
    if args.json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
    else:
        headers = {"name": "NAME", "base_url": "BASE URL", "key": "API KEY", "default_model": "DEFAULT MODEL"}
        table = [headers, *rows]
        widths = {column: max(len(str(row[column])) for row in table) for column in headers}
        lines = []
        for row in table:
            mark = "*" if row.get("default") is True else " "
            cells = [str(row[column]).ljust(widths[column]) for column in headers]
            lines.append(f"{mark} " + "  ".join(cells).rstrip())
        lines.append("")
        lines.append("* used by default (LLMRELAY_PROVIDER, else the first provider whose key is set, else local)")
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0


def _provider_row(name: str, cls: type[OpenaiTemplate], is_default: bool) -> dict[str, Any]:
    env = cls.get_api_key_env()
    key_set = bool(cls.get_api_key())
    if cls.needs_auth:
        key = f"{env} {'set' if key_set else 'not set'}"
    elif key_set:
        key = f"{env} set (optional)"
    else:
        key = "not needed"
    if name == "local":
        base = "(embedded llama.cpp, started on first use)"
    else:
        try:
            base = cls.get_api_base()
        except ValueError:
            base_env = getattr(cls, "api_base_env", None)
            base = f"(set {base_env})" if base_env else "(not set)"
    model = cls.default_model or "(first listed)"
    return {
        "name": name,
        "base_url": base,
        "key": key,
        "key_env": env if name != "local" else None,
        "key_set": key_set,
        "needs_key": bool(cls.needs_auth),
        "default_model": model,
        "default": is_default,
    }


# ------------------------------------------------------------------------------ logs


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import Log, logging_enabled, logs_path, set_logging

    path = logs_path()
    if args.action == "path":
        sys.stdout.write(f"{path}\n")
        return 0
    if args.action in ("on", "off"):
        try:
            set_logging(args.action == "on", path)
        except OSError as error:
            raise UsageError(f"cannot turn logging {args.action}: {error.strerror or error}") from None
        sys.stderr.write(f"logging is {args.action.upper()} ({path})\n")
        return 0
    log = Log(path)
    if args.response:
        args.count = 1
    try:
        if args.action == "usage":
            rows = log.usage()
        else:
            rows = log.entries(
                args.count or None,
                query=args.query,
                conversation=args.conversation,
                provider=args.provider,
                model=args.model,
            )
    except FileNotFoundError:
        rows = []
    except Exception as error:  # sqlite3.Error: not a database, locked …
        raise UsageError(f"cannot read the log {path}: {error}") from None
    if args.response and args.action == "list":
        if not rows:
            raise UsageError(f"no logged exchange matches in {path}")
        text = str(rows[-1]["response"] or "")
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    elif args.json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    elif args.action == "usage":
        sys.stdout.write(_usage_table(rows))
    elif args.short:
        sys.stdout.write("".join(_short_entry(row) for row in rows))
    else:
        if not rows:
            state = "" if logging_enabled(path) else " (logging is off: `llmrelay logs on`)"
            sys.stderr.write(f"no logged exchanges match in {path}{state}\n")
        sys.stdout.write("\n".join(_format_entry(row) for row in rows))
    sys.stdout.flush()
    return 0


def _format_entry(entry: dict[str, Any]) -> str:
    head = f"# {entry['datetime_utc'][:19].replace('T', ' ')} UTC  {entry['provider']} / {entry['model']}"
    lines = [head, f"conversation: {entry['conversation_id']}"]
    if entry.get("total_tokens") is not None:
        lines.append(
            f"tokens: {entry['prompt_tokens']} prompt + {entry['completion_tokens']} completion"
            f" = {entry['total_tokens']} total"
        )
    if entry.get("duration_ms") is not None:
        first = entry.get("first_token_ms")
        lines.append(f"time: {entry['duration_ms']} ms" + (f" (first token {first} ms)" if first is not None else ""))
    if entry.get("system"):
        lines += ["", "## System", "", str(entry["system"])]
    lines += ["", "## Prompt", "", str(entry["prompt"])]
    if entry.get("attachments"):
        lines += ["", "## Attachments", "", *(f"- {name}" for name in entry["attachments"])]
    if entry.get("reasoning"):
        lines += ["", "## Reasoning", "", str(entry["reasoning"])]
    lines += ["", "## Response", "", str(entry["response"])]
    if entry.get("tool_calls"):
        lines += ["", "## Tool calls", "", json.dumps(entry["tool_calls"], ensure_ascii=False)]
    if entry.get("error"):
        lines += ["", "## Error", "", str(entry["error"])]
    return "\n".join(lines) + "\n"


def _short_entry(entry: dict[str, Any]) -> str:
    """Five lines per exchange: when, provider / model, conversation, the prompt and answer cut to one line."""
    when = entry["datetime_utc"][:19].replace("T", " ")
    answer = f"error: {entry['error']}" if entry.get("error") else str(entry["response"] or "")
    return (
        f"- {when} UTC  {entry['provider']} / {entry['model']}\n"
        f"  conversation: {entry['conversation_id']}\n"
        f"  prompt: {_one_line(str(entry['prompt']), 100)}\n"
        f"  response: {_one_line(answer, 100)}\n"
    )


def _usage_table(rows: list[dict[str, Any]]) -> str:
    headers = {
        "day": "DAY",
        "provider": "PROVIDER",
        "model": "MODEL",
        "responses": "RESPONSES",
        "errors": "ERRORS",
        "prompt_tokens": "PROMPT",
        "completion_tokens": "COMPLETION",
        "total_tokens": "TOTAL",
    }
    table = [headers, *rows]
    widths = {column: max(len(str(row[column])) for row in table) for column in headers}
    numeric = ("responses", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
    lines = [
        "  ".join(
            str(row[column]).rjust(widths[column]) if column in numeric else str(row[column]).ljust(widths[column])
            for column in headers
        ).rstrip()
        for row in table
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
