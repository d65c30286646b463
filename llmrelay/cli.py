"""The ``llmrelay`` command: ``chat``, ``models``, ``image``, ``providers``.

Exit codes: 0 success; 1 the request failed (missing key, server error, connection
refused, rate limit …); 2 usage error (bad option, unknown provider, empty prompt,
unreadable ``-i`` file); 130 interrupted (Ctrl-C). Errors are one line on stderr
(``--debug`` adds the traceback). An API key is never printed.

Only the standard library is imported at start-up, so ``llmrelay --help`` is fast;
the providers (aiohttp …) are imported when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from .providers.template import OpenaiTemplate

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DIM, RESET = "\x1b[2m", "\x1b[0m"


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
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
        "--api-base", metavar="URL", help="base URL of an OpenAI-compatible server (without -p: an ad-hoc provider)"
    )
    group.add_argument("--api-key", metavar="KEY", help="API key (default: the provider's environment variable)")
    group.add_argument("--timeout", type=float, metavar="SECONDS", help="connect / idle-read timeout (default 120)")

    parser = argparse.ArgumentParser(
        prog="llmrelay",
        description="Talk to any OpenAI-compatible LLM API.",
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
        "(or with -) the prompt is read from stdin; on a terminal, an interactive chat starts.",
    )
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="the prompt; - or absent: read stdin")
    chat.add_argument("-m", "--model", default="", help="model id (default: the provider's default model)")
    chat.add_argument("-s", "--system", metavar="TEXT", help="system message")
    chat.add_argument(
        "-i", "--image", action="append", default=[], metavar="FILE", help="attach an image (file or URL); repeatable"
    )
    chat.add_argument("-t", "--temperature", type=float, metavar="T")
    chat.add_argument("--max-tokens", type=int, metavar="N")
    chat.add_argument("--no-stream", action="store_true", help="ask for the whole answer at once")
    chat.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: text, reasoning, tool_calls, usage, finish_reason, provider, model",
    )
    chat.add_argument("-u", "--usage", action="store_true", help="print the token usage on stderr")
    chat.set_defaults(handler=cmd_chat)

    models = commands.add_parser(
        "models", parents=[debug, connection], help="list the models of a provider", description="List model ids."
    )
    models.add_argument("--json", action="store_true", help="print a JSON array of model ids")
    models.set_defaults(handler=cmd_models)

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

    from .server.commands import add_commands

    add_commands(commands, [debug])
    return parser


# --------------------------------------------------------------------------- running


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmrelay`` / ``python -m llmrelay``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        return args.handler(args) or 0
    except UsageError as error:
        _report(f"error: {error}", debug)
        return EXIT_USAGE
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stderr.write("\n")
            sys.stderr.flush()
        if debug:
            raise
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): stop quietly; silence the flush at exit too.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        _report(f"error: {describe_error(error, getattr(args, 'provider_class', None))}", debug)
        return EXIT_ERROR


def _report(line: str, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_line(text: str, limit: int = 1000) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(error: BaseException, cls: type[OpenaiTemplate] | None = None) -> str:
    """One line naming the problem and, where it helps, what to do."""
    from .errors import ConnectError, MissingAuthError, ModelNotFoundError, RelayError

    name = cls.get_name() if cls is not None else (getattr(error, "provider", None) or "the provider")
    env = cls.get_api_key_env() if cls is not None else None
    if isinstance(error, MissingAuthError):
        if error.status is None:
            hint = f": set {env} (or pass --api-key)" if env else " (pass --api-key)"
            return _one_line(f"{name} needs an API key{hint}")
        hint = f" (check {env} or --api-key)" if env else " (check --api-key)"
        return _one_line(f"{error}{hint}")
    if isinstance(error, ModelNotFoundError):
        return _one_line(f"{error} (list the models with `llmrelay models` and the same -p / --api-base)")
    if isinstance(error, ConnectError):
        return _one_line(f"{error} (is the server running? check the base URL)")
    if isinstance(error, RelayError):
        return _one_line(str(error))
    if isinstance(error, (ValueError, TypeError, OSError)):
        return _one_line(str(error) or type(error).__name__)
    return _one_line(f"{type(error).__name__}: {error}")


class _Loop:
    """One event loop for the whole command (an interactive chat reuses its connections)."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()

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
    """The provider class for ``-p`` / ``--api-base`` / the environment; unknown names are usage errors."""
    from .client.router import resolve_provider as resolve

    try:
        cls = resolve(args.provider or None, args.api_base)
    except ValueError as error:
        raise UsageError(str(error)) from None
    args.provider_class = cls
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
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        options["timeout"] = args.timeout
    return options


# ------------------------------------------------------------------------------ chat


class _Answer:
    """What one chat turn produced."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] | None = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.images: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": "".join(self.text),
            "reasoning": "".join(self.reasoning) or None,
            "tool_calls": self.tool_calls,
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "provider": self.provider,
            "model": self.model,
        }
        if self.images:
            data["images"] = self.images
        return data


class _Printer:
    """Writes text to stdout as it arrives and reasoning to stderr (dimmed on a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.out = sys.stdout
        self.err = sys.stderr
        self.err_tty = self.err.isatty()
        self.in_reasoning = False
        self.last = ""

    def text(self, piece: str) -> None:
        if self.quiet:
            return
        self.end_reasoning()
        self.out.write(piece)
        self.out.flush()
        if piece:
            self.last = piece[-1]

    def reasoning(self, piece: str) -> None:
        if self.quiet:
            return
        if not self.in_reasoning:
            self.in_reasoning = True
            if self.err_tty:
                self.err.write(DIM)
        self.err.write(piece)
        self.err.flush()

    def end_reasoning(self) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self.err.write((RESET if self.err_tty else "") + "\n")
            self.err.flush()

    def note(self, line: str) -> None:
        self.end_reasoning()
        self.err.write(line + "\n")
        self.err.flush()

    def finish(self) -> None:
        self.end_reasoning()
        if not self.quiet and self.last != "\n" and self.last and self.out.isatty():
            self.out.write("\n")
            self.out.flush()


async def _chat_turn(
    cls: type[OpenaiTemplate], model: str, messages: list[dict[str, Any]], options: dict[str, Any], quiet: bool
) -> _Answer:
    from .responses import AudioResponse, FinishReason, ImageResponse, ProviderInfo, Reasoning, ToolCalls, Usage

    answer = _Answer()
    printer = _Printer(quiet)
    try:
        async for chunk in cls.create_async_generator(model, messages, **options):
            if isinstance(chunk, str):
                answer.text.append(chunk)
                printer.text(chunk)
            elif isinstance(chunk, Reasoning):
                answer.reasoning.append(chunk.token)
                printer.reasoning(chunk.token)
            elif isinstance(chunk, ProviderInfo):
                answer.provider, answer.model = chunk.name, chunk.model
            elif isinstance(chunk, Usage):
                answer.usage = chunk.to_dict()
            elif isinstance(chunk, FinishReason):
                answer.finish_reason = chunk.reason
            elif isinstance(chunk, ToolCalls):
                answer.tool_calls = chunk.calls
                if not quiet:
                    for call in chunk.calls:
                        function = call.get("function") or {}
                        printer.note(f"tool call: {function.get('name')}({function.get('arguments')})")
            elif isinstance(chunk, ImageResponse):
                answer.images.extend(chunk.images)
                printer.text(str(chunk))
            elif isinstance(chunk, AudioResponse):
                if not quiet:
                    printer.note(f"(an audio answer of {len(chunk.data)} base64 characters is not shown)")
    finally:
        printer.finish()
    return answer


def _read_stdin() -> str:
    text = sys.stdin.read()
    if not text.strip():
        raise UsageError("the prompt is empty (pass PROMPT or pipe it on stdin)")
    return text


def _media(paths: list[str]) -> list[tuple[Any, str | None]]:
    from pathlib import Path

    media: list[tuple[Any, str | None]] = []
    for item in paths:
        if item.startswith(("http://", "https://", "data:")):
            media.append((item, None))
            continue
        path = Path(item).expanduser()
        if not path.is_file():
            raise UsageError(f"-i {item}: no such file")
        try:
            media.append((path.read_bytes(), path.name))
        except OSError as error:
            raise UsageError(f"-i {item}: {error.strerror or error}") from None
    return media


def _usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return "tokens: the server reported no usage"
    return (
        f"tokens: {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion"
        f" = {usage.get('total_tokens', 0)} total"
    )


def cmd_chat(args: argparse.Namespace) -> int:
    interactive = False
    prompt = args.prompt
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = _read_stdin()
    elif prompt is None:
        interactive = True
    elif not prompt.strip():
        raise UsageError("the prompt is empty")
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UsageError("--max-tokens must be positive")
    media = _media(args.image)
    cls = resolve_provider(args)
    options = _connection(args)
    _check_key(cls, args.api_key)
    options["stream"] = not args.no_stream
    if args.temperature is not None:
        options["temperature"] = args.temperature
    max_tokens = args.max_tokens
    if max_tokens is None:
        max_tokens = cls.default_max_tokens
    if max_tokens is not None:
        options["max_tokens"] = max_tokens

    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})

    with _Loop() as loop:
        if not interactive:
            messages.append({"role": "user", "content": prompt})
            if media:
                options["media"] = media
            answer = loop.run(_chat_turn(cls, args.model, messages, options, quiet=args.json))
            _after_answer(args, answer)
            return 0
        return _interactive(loop, cls, args, messages, options, media)


def _after_answer(args: argparse.Namespace, answer: _Answer) -> None:
    if args.json:
        sys.stdout.write(json.dumps(answer.to_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif answer.finish_reason == "length":
        sys.stderr.write("note: the answer was cut at the token limit (raise --max-tokens)\n")
    if args.usage:
        sys.stderr.write(_usage_line(answer.usage) + "\n")
    sys.stderr.flush()


def _interactive(
    loop: _Loop,
    cls: type[OpenaiTemplate],
    args: argparse.Namespace,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    media: list[tuple[Any, str | None]],
) -> int:
    from .errors import RelayError

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    sys.stderr.write(f"Chatting with {cls.get_name()}. Type 'exit' or press Ctrl-D to quit.\n")
    sys.stderr.flush()
    prompt_to_stdout = sys.stdout.isatty()
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
        if line.strip() in ("exit", "quit"):
            return 0
        if not line.strip():
            continue
        turn = [*messages, {"role": "user", "content": line}]
        turn_options = dict(options)
        if media:
            turn_options["media"] = media
        try:
            answer = loop.run(_chat_turn(cls, args.model, turn, turn_options, quiet=args.json))
        except (RelayError, ValueError, TypeError) as error:
            sys.stderr.write(f"error: {describe_error(error, cls)}\n")
            sys.stderr.flush()
            continue
        media = []  # attached to the first question only
        _after_answer(args, answer)
        messages[:] = [*turn, {"role": "assistant", "content": "".join(answer.text)}]


# ---------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
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


# ----------------------------------------------------------------------------- image

_SIZE = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*$")


def cmd_image(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not args.prompt.strip():
        raise UsageError("the prompt is empty")
    if args.size and not _SIZE.match(args.size):
        raise UsageError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 1024x1024")
    output = Path(args.output).expanduser()
    if output.is_dir():
        raise UsageError(f"-o {args.output}: is a directory; give a file name")
    cls = resolve_provider(args)
    if cls.__name__ == "Local":
        raise UsageError("the local model cannot generate images; choose a provider with -p (e.g. -p openai)")
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
    except (ValueError, ImportError):
        default = None
    rows: list[dict[str, Any]] = []
    for name in provider_names():
        try:
            cls = get_provider(name)
        except ImportError:
            rows.append({"name": name, "base_url": "(not installed)", "key": "", "default_model": "", "default": False})
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
    return {"name": name, "base_url": base, "key": key, "default_model": model, "default": is_default}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
