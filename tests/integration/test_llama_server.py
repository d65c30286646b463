"""The providers against a real llama.cpp server: ``llama_cpp.server`` 0.3.x serving SmolLM2-135M.

One server for the whole session (the ``llama_server`` fixture), reached through
``Local`` (which also adapts llama.cpp's quirks) or through a plain
``OpenaiTemplate`` subclass. What the server does, measured: ``/v1/models`` lists
``smollm2`` and ``smollm2-tools``; non-streaming answers carry ``usage``, streams
never do (``stream_options`` is accepted and ignored) and end with a
``finish_reason`` then ``[DONE]``; a forced tool call is shaped by a grammar, so
its arguments are valid JSON; malformed JSON gets a text/plain 500 (and the
connection is dropped); an unknown path a 404 ``{"detail": "Not Found"}``; the
server answers one request at a time.

Every request sends a small ``max_tokens``: decoding runs at ~55 tokens/s on one thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from llmrelay import OpenaiTemplate
from llmrelay.client import AsyncClient, Client
from llmrelay.errors import ModelNotFoundError, ResponseError, ServerError
from llmrelay.http.session import close_sessions, open_response
from llmrelay.providers.listing import cached_listing, clear_model_cache
from llmrelay.providers.local import DEFAULT_ALIAS, EMBED_ALIAS, SERVED_MODELS, TOOLS_ALIAS, Local
from llmrelay.responses import FinishReason, ProviderInfo, ToolCalls, Usage

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("llama_server")]

HELLO = [{"role": "user", "content": "Say hello."}]
# Greedy decoding (temperature 0) of this prompt runs into max_tokens: the answer is long and deterministic.
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_SCHEMA,
    },
}
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_MAX_TOKENS = 48  # the forced arguments take ~15 tokens


# --------------------------------------------------------------------------- helpers


async def acollect(provider: type[OpenaiTemplate], messages: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    kwargs.setdefault("max_tokens", 16)
    return [item async for item in provider.create_async_generator(kwargs.pop("model", ""), messages, **kwargs)]


def collect(provider: type[OpenaiTemplate], messages: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    """Every item of one call, on a fresh event loop (``asyncio.run``)."""
    return asyncio.run(acollect(provider, messages, **kwargs))


def text_of(items: list[Any]) -> str:
    return "".join(item for item in items if isinstance(item, str))


def of_type(items: list[Any], kind: type) -> list[Any]:
    return [item for item in items if isinstance(item, kind)]


def assert_answer_shape(items: list[Any], model: str, base_url: str, name: str = "Local") -> None:
    """ProviderInfo first (once, naming the served model), FinishReason last (once), nothing unexpected."""
    assert isinstance(items[0], ProviderInfo), items
    assert len(of_type(items, ProviderInfo)) == 1, items
    info = items[0]
    assert (info.name, info.model) == (name, model), info
    assert info.url.startswith(base_url), (info.url, base_url)
    assert isinstance(items[-1], FinishReason), items
    assert len(of_type(items, FinishReason)) == 1, items
    for item in items[1:-1]:
        assert isinstance(item, (str, Usage, ToolCalls)), item


def assert_sane_usage(usage: Usage, max_tokens: int) -> None:
    assert usage.prompt_tokens > 0, usage
    assert 0 < usage.completion_tokens <= max_tokens, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage


def assert_weather_call(call: dict[str, Any]) -> None:
    """One complete ``get_weather`` call whose arguments are JSON matching WEATHER_SCHEMA."""
    assert call["type"] == "function", call
    assert isinstance(call["id"], str) and call["id"], call
    assert call["function"]["name"] == "get_weather", call
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments, dict), arguments
    for key in WEATHER_SCHEMA["required"]:
        assert key in arguments, (key, arguments)
    assert isinstance(arguments["city"], str) and arguments["city"].strip(), arguments
    assert arguments["unit"] in WEATHER_SCHEMA["properties"]["unit"]["enum"], arguments
    assert set(arguments) <= set(WEATHER_SCHEMA["properties"]), arguments


def direct_provider(api_base: str) -> type[OpenaiTemplate]:
    """A plain OpenaiTemplate subclass (no Local quirk handling) aimed at ``api_base``."""
    return type("LlamaDirect", (OpenaiTemplate,), {"api_base": api_base, "default_model": DEFAULT_ALIAS})


class TcpForwarder:
    """A TCP forwarder 127.0.0.1:port → target, counting the connections it accepts.

    It runs its own event loop in a thread, so async tests (``asyncio.run``) and
    sync calls (llmrelay's background loop) can both go through it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self.upstream = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-forwarder", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> TcpForwarder:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = future.result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.upstream += 1
        self._writers.append(upstream_writer)
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        finally:
            writer.close()
            upstream_writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(writer.wait_closed() for writer in self._writers), return_exceptions=True)
        await self._server.wait_closed()

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()


@pytest.fixture
def forwarder(llama_server: Any) -> Iterator[TcpForwarder]:
    proxy = TcpForwarder(llama_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- models


def test_get_models_async_lists_both_aliases(llama_server: Any) -> None:
    models = asyncio.run(Local.get_models_async())
    assert models == sorted([*SERVED_MODELS, EMBED_ALIAS]) == ["smollm2", "smollm2-embed", "smollm2-tools"]
    # A real listing (Local.fallback_models holds the same names): only a listing that worked is cached.
    assert cached_listing(llama_server.base_url, None) is not None


def test_get_models_sync_in_a_script_and_inside_a_running_loop(llama_server: Any) -> None:
    assert Local.get_models() == ["smollm2", "smollm2-embed", "smollm2-tools"]
    assert cached_listing(llama_server.base_url, None) is not None
    clear_model_cache()

    async def inside_loop() -> list[str]:
        return Local.get_models()  # sync call from a coroutine: must not fail

    assert asyncio.run(inside_loop()) == ["smollm2", "smollm2-embed", "smollm2-tools"]
    assert cached_listing(llama_server.base_url, None) is not None


def test_plain_openai_template_lists_the_server_models(llama_server: Any) -> None:
    provider = direct_provider(llama_server.base_url)
    assert asyncio.run(provider.get_models_async()) == ["smollm2", "smollm2-embed", "smollm2-tools"]


# ---------------------------------------------------------------------------- chat


def test_non_stream_chat_yields_text_usage_and_finish_reason(llama_server: Any) -> None:
    items = collect(Local, HELLO, max_tokens=32, temperature=0)
    assert_answer_shape(items, DEFAULT_ALIAS, llama_server.base_url)
    assert text_of(items).strip()
    (usage,) = of_type(items, Usage)
    assert_sane_usage(usage, 32)
    assert items[-2] is usage  # Usage comes right before the FinishReason
    # "length" exactly when the answer used every allowed token (greedy decoding here stops by itself first).
    assert items[-1].reason == ("length" if usage.completion_tokens == 32 else "stop"), (items[-1], usage)


def test_non_stream_chat_with_default_sampling(llama_server: Any) -> None:
    items = collect(Local, HELLO, max_tokens=16)
    assert_answer_shape(items, DEFAULT_ALIAS, llama_server.base_url)
    assert text_of(items).strip()
    (usage,) = of_type(items, Usage)
    assert_sane_usage(usage, 16)
    assert items[-1].reason in ("stop", "length")


def test_finish_reason_length_matches_the_token_count(llama_server: Any) -> None:
    items = collect(Local, STORY, max_tokens=8, temperature=0)
    assert items[-1] == FinishReason("length")
    (usage,) = of_type(items, Usage)
    assert usage.completion_tokens == 8
    assert text_of(items).strip()


def test_stream_chat_yields_pieces_between_provider_info_and_finish_reason(llama_server: Any) -> None:
    items = collect(Local, HELLO, max_tokens=32, temperature=0, stream=True)
    assert_answer_shape(items, DEFAULT_ALIAS, llama_server.base_url)
    pieces = of_type(items, str)
    assert len(pieces) >= 2, items  # really streamed: one piece per token
    assert all(pieces), items
    assert "".join(pieces).strip()
    assert items[-1].reason in ("stop", "length")
    # The server sends no usage in a stream (stream_options is ignored): Local counts it, one token per piece,
    # and sends it right before the finish reason, as a server's usage would come.
    (usage,) = of_type(items, Usage)
    assert items[-2] is usage
    assert usage.completion_tokens == len(pieces) and usage.prompt_tokens > 0
    assert_sane_usage(usage, 32)


def test_counted_stream_usage_against_the_servers_own_counts(llama_server: Any) -> None:
    """Greedy decoding: the streamed answer is the non-streamed one, so the counts can be compared. Completion:
    exact; prompt: llama.cpp's tokenizer over the messages' text, without the chat template's own tokens."""

    async def both() -> tuple[list[Any], list[Any]]:
        whole = await acollect(Local, STORY, max_tokens=12, temperature=0)
        streamed = await acollect(Local, STORY, max_tokens=12, temperature=0, stream=True)
        return whole, streamed

    whole, streamed = asyncio.run(both())
    ((exact,), (counted,)) = of_type(whole, Usage), of_type(streamed, Usage)
    assert counted.completion_tokens == exact.completion_tokens == 12
    assert 0 < counted.prompt_tokens <= exact.prompt_tokens


def test_stream_and_non_stream_give_the_same_text(llama_server: Any) -> None:
    """Greedy decoding is deterministic: the streamed pieces join to exactly the non-streamed text (nothing stripped)."""

    async def both() -> tuple[list[Any], list[Any]]:
        whole = await acollect(Local, STORY, max_tokens=12, temperature=0)
        streamed = await acollect(Local, STORY, max_tokens=12, temperature=0, stream=True)
        return whole, streamed

    whole, streamed = asyncio.run(both())
    assert text_of(streamed) == text_of(whole)
    assert len(of_type(streamed, str)) > 1
    assert whole[-1] == streamed[-1] == FinishReason("length")


def test_system_message_and_history_are_accepted(llama_server: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]},
    ]
    original = json.dumps(messages)
    items = collect(Local, messages, max_tokens=12)
    assert text_of(items).strip()
    assert json.dumps(messages) == original  # the caller's messages are never mutated (Local adapts a copy)


def test_sync_create_completion(llama_server: Any) -> None:
    for stream in (False, True):
        items = list(Local.create_completion("", HELLO, max_tokens=16, stream=stream))
        assert_answer_shape(items, DEFAULT_ALIAS, llama_server.base_url)
        assert text_of(items).strip()
        (usage,) = of_type(items, Usage)  # the server's, or counted by Local for a stream
        assert_sane_usage(usage, 16)


# ----------------------------------------------------------------------- tool calls


@pytest.mark.parametrize(
    ("tool_choice", "stream"),
    [(FORCE_WEATHER, False), (FORCE_WEATHER, True), ("required", False)],
    ids=["named-non-stream", "named-stream", "required-non-stream"],
)
def test_forced_tool_call(llama_server: Any, tool_choice: Any, stream: bool) -> None:
    items = collect(
        Local,
        WEATHER_QUESTION,
        max_tokens=TOOL_MAX_TOKENS,
        tools=[WEATHER_TOOL],
        tool_choice=tool_choice,
        stream=stream,
    )
    # Local routes forced calls to the alias served with chatml-function-calling.
    assert_answer_shape(items, TOOLS_ALIAS, llama_server.base_url)
    (calls,) = of_type(items, ToolCalls)
    assert len(calls.calls) == 1, calls
    assert_weather_call(calls.calls[0])
    assert items[-1] == FinishReason("tool_calls")
    assert text_of(items) == ""
    (usage,) = of_type(items, Usage)  # streamed: the tool call's arguments counted by llama.cpp's tokenizer
    assert_sane_usage(usage, TOOL_MAX_TOKENS)


def test_tool_result_turn_with_null_assistant_content(llama_server: Any) -> None:
    """The usual follow-up after a tool call: assistant ``content: null`` + ``tool_calls``, then the tool result."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    messages = [
        *WEATHER_QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    items = collect(Local, messages, max_tokens=24)
    assert text_of(items).strip()
    assert messages[1]["content"] is None  # adapted on a copy only
    assert items[-1].reason in ("stop", "length")


def test_tool_result_turn_without_assistant_content(llama_server: Any) -> None:
    """SDKs that dump messages without None fields leave out ``content`` beside ``tool_calls``."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [
        *WEATHER_QUESTION,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    items = collect(Local, messages, max_tokens=24)
    assert text_of(items).strip()
    assert "content" not in messages[1]  # adapted on a copy only


# ------------------------------------------------------------------ connection reuse


def test_ten_sequential_async_calls_use_one_connection(forwarder: TcpForwarder) -> None:
    provider = direct_provider(forwarder.base_url)

    async def main() -> list[list[Any]]:
        try:
            return [await acollect(provider, HELLO, max_tokens=4, stream=bool(n % 2)) for n in range(10)]
        finally:
            await close_sessions()

    answers = asyncio.run(main())
    for n, items in enumerate(answers):
        assert text_of(items), (n, items)
        assert isinstance(items[-1], FinishReason), (n, items)
        assert len(of_type(items, Usage)) == (0 if n % 2 else 1), (n, items)
    assert forwarder.accepted == 1
    assert forwarder.upstream == 1


def test_ten_sequential_sync_calls_use_one_connection(forwarder: TcpForwarder) -> None:
    # Local with an explicit api_base talks to that address (its quirk handling still applies).
    for n in range(10):
        items = list(Local.create_completion("", HELLO, max_tokens=4, stream=bool(n % 2), api_base=forwarder.base_url))
        assert text_of(items), (n, items)
        assert isinstance(items[-1], FinishReason), (n, items)
    assert forwarder.accepted == 1


# -------------------------------------------------------------------------- errors


def test_unknown_path_is_a_404_response_error(llama_server: Any) -> None:
    """``{"detail": "Not Found"}`` says nothing about a model: ResponseError (not ModelNotFoundError), status 404."""
    endpoint = f"{llama_server.base_url}/no-such-endpoint"
    with pytest.raises(ResponseError) as caught:
        collect(Local, HELLO, max_tokens=4, api_endpoint=endpoint)
    error = caught.value
    assert type(error) is ResponseError, repr(error)
    assert error.status == 404
    assert error.message == "Not Found"
    assert error.provider == "Local"
    assert error.body is not None and "detail" in error.body

    with pytest.raises(ResponseError) as caught_sync:
        list(Local.create_completion("", HELLO, max_tokens=4, api_endpoint=endpoint))
    assert type(caught_sync.value) is ResponseError
    assert (caught_sync.value.status, caught_sync.value.message) == (404, "Not Found")


async def post_malformed_json(base_url: str) -> ServerError:
    with pytest.raises(ServerError) as caught:
        response = await open_response(
            "POST",
            f"{base_url}/chat/completions",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=b'{"model": "smollm2", "messages": [',
            provider="llama",
        )
        await response.release()
    return caught.value


def test_malformed_json_is_a_500_server_error(llama_server: Any) -> None:
    async def main() -> ServerError:
        try:
            return await post_malformed_json(llama_server.base_url)
        finally:
            await close_sessions()

    error = asyncio.run(main())
    assert error.status == 500
    assert error.message == "Internal Server Error"  # the text/plain body
    assert error.provider == "llama"
    # The server is fine afterwards.
    assert text_of(collect(Local, HELLO, max_tokens=4))


def test_pooled_connection_dropped_by_the_server_is_replaced(llama_server: Any) -> None:
    async def main() -> list[Any]:
        try:
            await post_malformed_json(llama_server.base_url)
            return await acollect(Local, HELLO, max_tokens=4)  # same loop, same pool
        finally:
            await close_sessions()

    assert text_of(asyncio.run(main()))


def test_server_validation_error_is_a_server_error_async_and_sync(llama_server: Any) -> None:
    """llama_cpp.server answers a body that fails validation with HTTP 500 and a JSON error naming the field."""
    with pytest.raises(ServerError) as caught:
        collect(Local, HELLO, max_tokens=4, temperature="hot")
    assert caught.value.status == 500
    assert "temperature" in caught.value.message
    assert caught.value.provider == "Local"

    with pytest.raises(ServerError) as caught_sync:
        list(Local.create_completion("", HELLO, max_tokens=4, temperature="hot"))
    assert caught_sync.value.status == 500
    assert "temperature" in caught_sync.value.message
    # This error leaves the connection usable: the next sync call (same background loop and pool) works.
    assert text_of(list(Local.create_completion("", HELLO, max_tokens=4)))


def test_local_rejects_an_unknown_model_before_sending(llama_server: Any) -> None:
    # llama_cpp.server would answer 200 with its default model for any id; Local refuses instead.
    with pytest.raises(ModelNotFoundError) as caught:
        collect(Local, HELLO, model="gpt-4o", max_tokens=4)
    assert "gpt-4o" in str(caught.value)
    with pytest.raises(ModelNotFoundError):
        list(Local.create_completion("gpt-4o", HELLO, max_tokens=4))


# -------------------------------------------------------------------------- client


def test_async_client_chat_stream_and_tool_round_trip(llama_server: Any) -> None:
    async def main() -> None:
        async with AsyncClient(provider=Local) as client:
            models = await client.models.list()
            assert sorted(model.id for model in models.data) == ["smollm2", "smollm2-embed", "smollm2-tools"]

            completion = await client.chat.completions.create(model="", messages=HELLO, max_tokens=16)
            choice = completion.choices[0]
            assert completion.model == DEFAULT_ALIAS
            assert choice.message.role == "assistant"
            assert isinstance(choice.message.content, str) and choice.message.content.strip()
            assert choice.finish_reason in ("stop", "length")
            assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
            assert 0 < completion.usage.completion_tokens <= 16

            stream = await client.chat.completions.create(model="", messages=HELLO, max_tokens=16, stream=True)
            chunks = [chunk async for chunk in stream]
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
            assert text.strip()
            finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
            assert finishes[-1] in ("stop", "length")
            assert [reason for reason in finishes if reason] == [finishes[-1]]
            # The server sends no usage in a stream; Local counts it: one completion token per streamed piece.
            usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
            pieces = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
            assert len(usages) == 1 and chunks[-1].usage is usages[0], chunks[-3:]
            assert usages[0].completion_tokens == len(pieces) and usages[0].prompt_tokens > 0

            await tool_round_trip(client)

    asyncio.run(main())


async def tool_round_trip(client: Any) -> None:
    """Forced tool call, then the tool's result sent back, then an answer in text."""
    messages: list[Any] = list(WEATHER_QUESTION)
    first = await client.chat.completions.create(
        model="", messages=messages, max_tokens=TOOL_MAX_TOKENS, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert_weather_call(call.to_dict())
    arguments = json.loads(call.function.arguments)

    messages.append(choice.message)  # the assistant turn as returned (content None, tool_calls)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f"18 degrees {arguments['unit']}, sunny"})
    second = await client.chat.completions.create(model="", messages=messages, max_tokens=24)
    answer = second.choices[0]
    assert second.model == DEFAULT_ALIAS  # no tools in this turn: the plain alias
    assert isinstance(answer.message.content, str) and answer.message.content.strip()
    assert not answer.message.tool_calls
    assert answer.finish_reason in ("stop", "length")


def test_sync_client_chat_and_stream(llama_server: Any) -> None:
    with Client(provider="local") as client:
        completion = client.chat.completions.create(model="", messages=HELLO, max_tokens=12)
        assert completion.choices[0].message.content.strip()
        assert completion.usage.completion_tokens > 0
        data = completion.to_dict()
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["role"] == "assistant"

        with client.chat.completions.create(model="", messages=HELLO, max_tokens=12, stream=True) as stream:
            chunks = list(stream)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices).strip()
        assert all(chunk.to_dict()["object"] == "chat.completion.chunk" for chunk in chunks)
