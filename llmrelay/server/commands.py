"""The ``serve`` and ``keys`` commands of the ``llmrelay`` CLI."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

__all__ = ["add_commands"]

EXIT_ERROR = 1


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``keys`` to the CLI's subparsers."""
    serve = commands.add_parser(
        "serve",
        parents=parents,
        help="run the OpenAI-compatible gateway",
        description="Serve an OpenAI-compatible API in front of every configured provider. Prints one line to "
        "stderr once it accepts connections; SIGTERM / Ctrl-C drain in-flight requests and exit 0.",
    )
    serve.add_argument("--host", help="address to bind (default: [server] host, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: [server] port, else 8080; 0 picks a free one)")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (see the README's gateway section)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1; at most 4 per CPU)",
    )
    serve.add_argument("--log-format", choices=("text", "json"), default="text", help="access-log format on stderr")
    serve.add_argument("--check-config", metavar="FILE", help="check a configuration file and exit (0: valid, 1: not)")
    serve.add_argument(
        "--pid-file", metavar="FILE", help="write the gateway's process id here (for --reload and kill -HUP)"
    )
    serve.add_argument(
        "--reload",
        metavar="PIDFILE",
        help="make the running gateway whose --pid-file this is re-read its configuration (as kill -HUP does), "
        "then exit",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow binding a non-loopback address with no gateway key configured",
    )
    serve.set_defaults(handler=cmd_serve)

    keys = commands.add_parser("keys", parents=parents, help="make gateway keys", description="Gateway keys.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="print a new key and its config entry",
        description="Print a new random gateway key on stderr (keep it secret) and, on stdout, the [[keys]] entry "
        "holding only its SHA-256 (so `llmrelay keys new NAME >> gateway.toml` appends it as is).",
    )
    new.add_argument("name", metavar="NAME", help="the key's name (shown in logs and metrics)")
    new.set_defaults(handler=cmd_keys_new)


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return EXIT_ERROR


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .reload import hold_reloads, send_reload

    if args.reload:
        problem = send_reload(args.reload)
        return _fail(problem) if problem else 0
    if args.check_config:
        try:
            config = load_config(args.check_config)
            config.default_provider_name()
        except (ConfigError, ValueError) as error:
            return _fail(str(error))
        sys.stderr.write(
            f"{args.check_config}: OK ({len(config.providers)} providers, {len(config.routes)} routes, "
            f"{len(config.keys)} keys)\n"
        )
        return 0
    hold_reloads()  # a SIGHUP while starting is acted on once serving, not fatal
    try:
        config = load_config(args.config)
        config.default_provider_name()
    except (ConfigError, ValueError) as error:
        return _fail(str(error))
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    refusal = _refusal(args, config, host, port)
    if refusal:
        return _fail(refusal)
    from .serve import run
    from .workers import is_worker, supervise

    pid_file = None if is_worker() else args.pid_file  # the supervisor's file, not its workers'
    if pid_file and not _write_pid(pid_file):
        return _fail(f"cannot write the pid file {pid_file}")
    try:
        if args.workers > 1:  # SPEC 8.8: N processes on one port, supervised by this one
            return supervise(config, host, port, args.workers, sys.argv[1:])
        return run(config, host, port, log_format=args.log_format)
    except OSError as error:
        return _fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
    finally:
        if pid_file:
            _remove_pid(pid_file)


def _refusal(args: argparse.Namespace, config: Config, host: str, port: int) -> str | None:
    """Why ``serve`` with these arguments must not start (one line), else None."""
    from .config import host_problem
    from .serve import is_loopback
    from .workers import workers_problem

    if args.host is not None and host_problem(args.host):
        return f"--host {host_problem(args.host)}"
    if not 0 <= port <= 65535:
        return f"--port must be 0-65535, not {port}"
    problem = workers_problem(args.workers)
    if problem:
        return problem
    if not is_loopback(host) and not config.keys and not args.insecure_no_auth:
        return (
            f"refusing to serve {host} without a gateway key: add [[keys]] to the config "
            "(`llmrelay keys new NAME`) or pass --insecure-no-auth"
        )
    return None


def _write_pid(path: str) -> bool:
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError:
        return False
    return True


def _remove_pid(path: str) -> None:
    """Remove the pid file if it still names this process (another gateway may have taken it over)."""
    try:
        with open(path, encoding="ascii") as handle:
            if handle.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


def cmd_keys_new(args: argparse.Namespace) -> int:
    from .keys import config_line, new_key

    name = args.name
    if not name or '"' in name or "\\" in name or not name.isprintable():
        return _fail("NAME must be printable, without quotes or backslashes")
    key = new_key()
    # The key on stderr, the config block on stdout: `llmrelay keys new NAME >> gateway.toml` appends valid TOML.
    sys.stderr.write(f"{key}\n(the key for {name}: give it to its user; it is not stored anywhere)\n")
    sys.stderr.flush()
    sys.stdout.write("# holds only the key's SHA-256\n" + config_line(name, key) + "\n")
    return 0
