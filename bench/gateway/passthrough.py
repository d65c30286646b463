"""The floor: a minimal aiohttp pass-through proxy (reads the model name, forwards, copies the bytes back).

``python -m bench.gateway.passthrough --upstream http://127.0.0.1:PORT`` prints its port on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
import orjson
from aiohttp import web

HOP_HEADERS = {"content-type", "cache-control", "x-request-id"}


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    model = orjson.loads(body)["model"]  # what a router would look at
    if not isinstance(model, str):
        return web.json_response({"error": "model"}, status=400)
    session: aiohttp.ClientSession = request.app["session"]
    async with session.post(
        request.app["upstream"] + request.path, data=body, headers={"Content-Type": "application/json"}
    ) as upstream:
        headers = {name: value for name, value in upstream.headers.items() if name.lower() in HOP_HEADERS}
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def main(upstream: str, port: int) -> None:
    app = web.Application()
    app["upstream"] = upstream.rstrip("/")
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    app.router.add_post("/v1/chat/completions", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    sys.stdout.write(f"{site._server.sockets[0].getsockname()[1]}\n")  # type: ignore[union-attr]
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.upstream, args.port))
    except ImportError:
        asyncio.run(main(args.upstream, args.port))
    except KeyboardInterrupt:
        pass
