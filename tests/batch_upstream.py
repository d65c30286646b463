"""A scripted upstream for ``llmrelay batch`` tests: an aiohttp server in a thread of its own that answers
``/v1/chat/completions`` per a plan and records every request (arrival, end, in-flight count, status).

The plan is a function ``plan(index, content) -> Answer`` (``index``: 0-based arrival order, ``content``: the
text of the last message), so a test scripts 429s with ``Retry-After`` / ``retry-after-ms`` on a schedule, 503s,
400s for some lines and slow answers for others. A 200 answers ``echo: <content>`` with a usage block.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Answer", "BatchUpstream", "Seen"]


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    body: dict | None = None


@dataclass
class Seen:
    index: int
    content: str
    start: float  # time.monotonic() at arrival
    in_flight: int  # requests in flight at arrival, this one included
    request_id: str | None
    model: str = ""
    status: int = 0
    end: float = 0.0


def _ok() -> Answer:
    return Answer()


def completion(content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"echo: {content}"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def error_body(status: int) -> dict:
    kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
    return {"error": {"message": f"scripted {status}", "type": kind, "param": None, "code": None}}


class BatchUpstream:
    def __init__(self, plan: Callable[[int, str], Answer] = lambda index, content: _ok()) -> None:
        self.plan = plan
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> BatchUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BatchUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self.lock:
            self.seen = []
            self.max_in_flight = 0

    def contents(self) -> list[str]:
        with self.lock:
            return [seen.content for seen in self.seen]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _embeddings(self, request: web.Request) -> web.Response:
        """Answers each input with a 3-float vector (its length, 1, 0); ``fail`` → the plan decides."""
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        content = "|".join(str(item) for item in inputs)
        return await self._answer(request, content, lambda: self._vectors(inputs, body), str(body.get("model")))

    @staticmethod
    def _vectors(inputs: list, body: dict) -> dict:
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(str(item))), 1.0, 0.0]}
            for i, item in enumerate(inputs)
        ]
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        content = str(body["messages"][-1]["content"])
        return await self._answer(request, content, lambda: completion(content), str(body.get("model")))

    async def _answer(
        self, request: web.Request, content: str, ok: Callable[[], dict], model: str = ""
    ) -> web.Response:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            seen = Seen(
                len(self.seen),
                content,
                time.monotonic(),
                self.in_flight,
                request.headers.get("x-request-id"),
                model,
            )
            self.seen.append(seen)
        try:
            answer = self.plan(seen.index, content)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            payload = answer.body or (ok() if answer.status == 200 else error_body(answer.status))
            seen.status = answer.status
            return web.Response(
                body=json.dumps(payload), status=answer.status, headers=answer.headers, content_type="application/json"
            )
        finally:
            with self.lock:
                self.in_flight -= 1
                seen.end = time.monotonic()
