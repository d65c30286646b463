"""OpenAI-shaped clients on top of the providers: ``Client`` (sync) and ``AsyncClient``.

::

    from llmrelay.client import Client

    with Client(provider="groq") as client:
        resp = client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
        print(resp.choices[0].message.content, resp.usage.total_tokens)

``provider`` may be a provider class, a catalog name, a list of them (fallback in
order) or omitted (the catalog's default provider). See :mod:`llmrelay.client.retry`
for what is retried.
"""

from __future__ import annotations

from .client import AsyncClient, AsyncStream, Client, Stream
from .types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChunkChoice,
    CompletionUsage,
    CreateEmbeddingResponse,
    Embedding,
    Image,
    ImagesResponse,
    Model,
    ModelList,
)

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChunkChoice",
    "Client",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "Embedding",
    "Image",
    "ImagesResponse",
    "Model",
    "ModelList",
    "Stream",
]
