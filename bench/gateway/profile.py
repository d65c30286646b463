"""cProfile of the gateway under load: ``python -m bench.gateway.profile [--stream] [--door D] [--count N] [--concurrency C]``.

Runs the fake upstream and the load generator in their own processes and the gateway (auth with one key,
metrics, access log to /dev/null) in this one, under cProfile; prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmrelay.server.app import Gateway
from llmrelay.server.config import load_config
from llmrelay.server.serve import serve

from .run import KEY, ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--door", default="chat", help="the API shape of the requests: chat | responses | messages")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="tottime", help="tottime | cumulative")
    parser.add_argument("--filter", help="only functions whose path matches (e.g. llmrelay)")
    args = parser.parse_args()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.server", "--prebuild", "16", "--exit-with-stdin"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline().split()[0])
    config_path = Path(tempfile.mkdtemp()) / "gateway.toml"
    config_path.write_text(
        f'[providers.fake]\napi_base = "http://127.0.0.1:{port}/v1"\n[[keys]]\nname = "bench"\n'
        f'sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
    )
    profile = cProfile.Profile(time.process_time)  # CPU time: the machine is shared, wall time is noisy

    async def run() -> None:
        devnull = open("/dev/null", "w")
        gateway = Gateway(load_config(str(config_path)), log_stream=devnull)
        stop = asyncio.Event()
        lines: list[str] = []

        class Capture:
            def write(self, text: str) -> None:
                lines.append(text)

            def flush(self) -> None:
                pass

        server = asyncio.create_task(serve(gateway, "127.0.0.1", 0, stderr=Capture(), stop=stop))  # type: ignore[arg-type]
        while not lines:
            await asyncio.sleep(0.05)
        gw_port = int(lines[0].split(":")[2].split(" ")[0])
        argv = [
            sys.executable,
            "-m",
            "bench.gateway.load",
            "--port",
            str(gw_port),
            "--model",
            "fake/stream-16",
            "--key",
            KEY,
            "--concurrency",
            str(args.concurrency),
            "--seconds",
            "60",
        ]
        if args.stream:
            argv.append("--stream")
        argv += ["--door", args.door]
        warm = await asyncio.create_subprocess_exec(*argv, "--count", "300", cwd=ROOT, stdout=subprocess.PIPE)
        await warm.communicate()
        profile.enable()
        load = await asyncio.create_subprocess_exec(*argv, "--count", str(args.count), cwd=ROOT, stdout=subprocess.PIPE)
        out, _ = await load.communicate()
        profile.disable()
        result = json.loads(out)
        print(
            f"{result['done']} requests in {result['wall']:.2f} s: {result['done'] / result['wall']:.0f}/s, "
            f"{result['errors']} errors",
            file=sys.stderr,
        )
        stop.set()
        await server

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    finally:
        upstream.kill()
    stats = pstats.Stats(profile)
    stats.sort_stats(args.sort).print_stats(args.filter or "", args.top) if args.filter else stats.sort_stats(
        args.sort
    ).print_stats(args.top)


if __name__ == "__main__":
    main()
