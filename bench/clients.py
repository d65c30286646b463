"""The clients under test, each behind the same small interface.

Every client is used the way its documentation shows, with one shared client object (session,
SDK client or provider class) for the whole run:

* ``stream_text(model)`` streams a chat answer and returns its text (the measured loop: tight);
* ``texts(model)`` yields the text pieces of a streamed answer (time to first chunk);
* ``complete(model)`` asks for a non-streamed answer and returns its text.

The raw aiohttp loops are the hand-written baseline: ``async for line in response.content``, then
``json.loads`` (or ``orjson.loads``) of each ``data:`` line. They read to the end of the body (a loop
that leaves at ``[DONE]`` may lose its keep-alive connection) and use ``TCPConnector(limit=0)``, so
500 concurrent streams are possible.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

from .payload import MESSAGES

API_KEY = "sk-bench-0000"


class BenchClient:
    name = ""
    label = ""
    #: the import statement a user of this client runs (cold import time)
    import_statement = ""

    async def setup(self, base: str) -> None:
        raise NotImplementedError

    async def stream_text(self, model: str) -> str:
        parts = [text async for text in self.texts(model)]
        return "".join(parts)

    def texts(self, model: str) -> AsyncIterator[str]:
        raise NotImplementedError

    async def complete(self, model: str) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------ raw aiohttp


class RawAiohttp(BenchClient):
    name = "raw-json"
    label = "raw aiohttp + json (baseline)"
    import_statement = "import aiohttp, json"

    def loads(self, data: bytes) -> Any:
        import json

        return json.loads(data)

    async def setup(self, base: str) -> None:
        import json

        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.url = f"{base}/chat/completions"
        self.dumps = lambda obj: json.dumps(obj).encode()
        self.stream_headers = {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        self.json_headers = {**self.stream_headers, "Accept": "application/json"}

    async def stream_text(self, model: str) -> str:
        loads = self.loads
        parts = []
        body = self.dumps({"model": model, "messages": MESSAGES, "stream": True})
        async with self.session.post(self.url, data=body, headers=self.stream_headers) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].rstrip()
                    if data == b"[DONE]":
                        continue
                    chunk = loads(data)
                    choices = chunk.get("choices")
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            parts.append(content)
        return "".join(parts)

    async def texts(self, model: str) -> AsyncIterator[str]:
        loads = self.loads
        body = self.dumps({"model": model, "messages": MESSAGES, "stream": True})
        async with self.session.post(self.url, data=body, headers=self.stream_headers) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: "):
                    data = line[6:].rstrip()
                    if data == b"[DONE]":
                        continue
                    chunk = loads(data)
                    choices = chunk.get("choices")
                    if choices:
                        content = choices[0]["delta"].get("content")
                        if content:
                            yield content

    async def complete(self, model: str) -> str:
        body = self.dumps({"model": model, "messages": MESSAGES, "stream": False})
        async with self.session.post(self.url, data=body, headers=self.json_headers) as response:
            response.raise_for_status()
            data = self.loads(await response.read())
        return data["choices"][0]["message"]["content"]

    async def close(self) -> None:
        await self.session.close()


class RawAiohttpOrjson(RawAiohttp):
    name = "raw-orjson"
    label = "raw aiohttp + orjson"
    import_statement = "import aiohttp, orjson"

    async def setup(self, base: str) -> None:
        import orjson

        await super().setup(base)
        self.loads = orjson.loads  # type: ignore[method-assign]
        self.dumps = orjson.dumps


# -------------------------------------------------------------------- llmrelay


class GeneratorProvider(BenchClient):
    """A client whose ``provider`` yields text pieces and events (llmrelay's and g4f's OpenaiTemplate)."""

    provider: Any

    async def stream_text(self, model: str) -> str:
        parts = []
        async for item in self.provider.create_async_generator(model, MESSAGES, stream=True):
            if type(item) is str:
                parts.append(item)
        return "".join(parts)

    async def texts(self, model: str) -> AsyncIterator[str]:
        async for item in self.provider.create_async_generator(model, MESSAGES, stream=True):
            if type(item) is str:
                yield item

    async def complete(self, model: str) -> str:
        parts = []
        async for item in self.provider.create_async_generator(model, MESSAGES, stream=False):
            if type(item) is str:
                parts.append(item)
        return "".join(parts)


def _llmrelay_provider(base: str) -> type:
    from llmrelay import OpenaiTemplate

    return type("Bench", (OpenaiTemplate,), {"api_base": base, "api_key": API_KEY, "default_model": "stream-16"})


class LlmrelayProvider(GeneratorProvider):
    name = "llmrelay"
    label = "llmrelay provider (OpenaiTemplate)"
    import_statement = "from llmrelay import OpenaiTemplate"

    async def setup(self, base: str) -> None:
        self.provider = _llmrelay_provider(base)


class LlmrelayClient(BenchClient):
    name = "llmrelay-client"
    label = "llmrelay AsyncClient"
    import_statement = "from llmrelay.client import AsyncClient"

    async def setup(self, base: str) -> None:
        from llmrelay.client import AsyncClient

        self.client = AsyncClient(provider=_llmrelay_provider(base), max_retries=0)

    async def _create(self, model: str, stream: bool) -> Any:
        result = self.client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def stream_text(self, model: str) -> str:
        parts = []
        async for chunk in await self._create(model, True):
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    parts.append(content)
        return "".join(parts)

    async def texts(self, model: str) -> AsyncIterator[str]:
        async for chunk in await self._create(model, True):
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    yield content

    async def complete(self, model: str) -> str:
        completion = await self._create(model, False)
        return completion.choices[0].message.content

    async def close(self) -> None:
        close = getattr(self.client, "close", None) or getattr(self.client, "aclose", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


# ---------------------------------------------------------------------- openai


class OpenaiSdk(BenchClient):
    name = "openai"
    label = "openai SDK (default transport)"
    import_statement = "from openai import AsyncOpenAI"

    def http_client(self) -> Any:
        return None

    async def setup(self, base: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base, api_key=API_KEY, max_retries=0, http_client=self.http_client())

    async def stream_text(self, model: str) -> str:
        parts = []
        async for chunk in await self.client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    parts.append(content)
        return "".join(parts)

    async def texts(self, model: str) -> AsyncIterator[str]:
        async for chunk in await self.client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices:
                content = chunk.choices[0].delta.content
                if content:
                    yield content

    async def complete(self, model: str) -> str:
        completion = await self.client.chat.completions.create(model=model, messages=MESSAGES)
        return completion.choices[0].message.content

    async def close(self) -> None:
        await self.client.close()


class OpenaiSdkAiohttp(OpenaiSdk):
    name = "openai-aiohttp"
    label = "openai SDK (aiohttp transport)"
    import_statement = "from openai import AsyncOpenAI, DefaultAioHttpClient"

    def http_client(self) -> Any:
        from openai import DefaultAioHttpClient

        return DefaultAioHttpClient()


# ------------------------------------------------------------------------- g4f


class G4f(GeneratorProvider):
    name = "g4f"
    label = "g4f OpenaiTemplate (aiohttp)"
    import_statement = "from g4f.Provider.template import OpenaiTemplate"

    async def setup(self, base: str) -> None:
        import importlib

        from g4f.Provider.template import OpenaiTemplate
        from g4f.requests.aiohttp import StreamSession

        # g4f picks curl_cffi when it is installed; the benchmark compares its aiohttp backend.
        importlib.import_module("g4f.Provider.template.OpenaiTemplate").StreamSession = StreamSession
        self.provider = type(
            "Bench",
            (OpenaiTemplate,),
            {"base_url": base, "api_key": API_KEY, "default_model": "stream-16", "models": ["stream-16"]},
        )


CLIENTS: dict[str, type[BenchClient]] = {
    cls.name: cls
    for cls in (RawAiohttp, RawAiohttpOrjson, LlmrelayProvider, LlmrelayClient, OpenaiSdk, OpenaiSdkAiohttp, G4f)
}
BASELINE = RawAiohttp.name
