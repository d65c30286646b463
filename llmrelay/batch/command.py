"""``llmrelay batch``: the subcommand's options (standard library only, so ``llmrelay --help`` stays fast) and its
handler, which imports the runner when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli import positive_int, positive_number

__all__ = ["add_command", "cmd_batch", "default_output"]

EXIT_USAGE = 2


def default_output(path: str) -> str:
    """INPUT with ``.output.jsonl`` in place of ``.jsonl`` (or added when INPUT has another ending)."""
    return (path[: -len(".jsonl")] if path.endswith(".jsonl") else path) + ".output.jsonl"


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    batch = commands.add_parser(
        "batch",
        parents=parents,
        help="run an OpenAI batch file (JSONL) against any provider; resumable",
        description="Send every request of an OpenAI batch input file (one JSON object a line: custom_id, "
        "method POST, url /v1/chat/completions, /v1/responses or /v1/embeddings, body) and write one result a "
        "line to OUTPUT, in completion "
        "order. The whole file is checked first. Running the same command again continues an interrupted run: "
        "finished lines are kept, failed-but-retryable ones are sent again. Concurrency adapts to rate limits "
        "(starts at 4, grows, halves on 429/503; Retry-After pauses every start). Exit 0: every line "
        "succeeded; 1: some failed (their lines are written); 2: bad usage or input; 130: interrupted.",
    )
    batch.add_argument("input", metavar="INPUT.jsonl", help="the batch input file")
    batch.add_argument(
        "-o", "--output", metavar="OUTPUT.jsonl", help="results file (default: INPUT with .output.jsonl)"
    )
    batch.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=64,
        metavar="N",
        help="most requests in flight at once (default 64)",
    )
    batch.add_argument("--rpm", type=positive_number, metavar="N", help="start at most N requests a minute, evenly")
    batch.add_argument(
        "--tpm", type=positive_int, metavar="N", help="hold new starts while the last minute's tokens reach N"
    )
    batch.add_argument(
        "--max-attempts",
        type=positive_int,
        default=5,
        metavar="N",
        help="attempts per line for retryable failures (connection, 408, 409, 429, 5xx; default 5)",
    )
    batch.add_argument("--backend", choices=("local", "ray"), default="local", help="where requests run")
    batch.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster to join (default: a local one started for the run)"
    )
    batch.add_argument("--ray-actors", type=positive_int, metavar="N", help="Ray actors (default: 2)")
    batch.add_argument("--json", action="store_true", help="print the summary as a JSON object on stdout")
    batch.set_defaults(handler=cmd_batch)


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return EXIT_USAGE


def cmd_batch(args: argparse.Namespace) -> int:
    from ..errors import MissingAuthError, MissingRequirementsError
    from .inputs import InputError
    from .runner import Settings, UsageProblemError, run_batch

    source = Path(args.input)
    if not source.is_file():
        return _fail(f"{args.input}: no such file")
    output = Path(args.output or default_output(args.input))
    if output.exists() and output.resolve() == source.resolve():
        return _fail("the output file must not be the input file")
    if args.ray_address and args.backend != "ray":
        return _fail("--ray-address needs --backend ray")
    settings = Settings(
        input=source,
        output=output,
        label=args.input,
        provider=args.provider,
        api_base=args.api_base,
        api_key=args.api_key,
        timeout=args.timeout,
        max_concurrency=args.max_concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        max_attempts=args.max_attempts,
        backend=args.backend,
        ray_address=args.ray_address,
        ray_actors=args.ray_actors,
        json=args.json,
    )
    try:
        return run_batch(settings)
    except InputError as error:
        sys.stderr.write(f"{error}\n")
        sys.stderr.flush()
        return EXIT_USAGE
    except (UsageProblemError, MissingAuthError, MissingRequirementsError) as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"{error.filename or args.input}: {error.strerror or error}")
