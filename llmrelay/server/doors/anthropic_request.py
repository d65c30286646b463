"""Anthropic Messages request → the neutral chat call (SPEC 9.3.1, 9.1.4): a pure translator, no I/O.

What the door translates goes upstream; what only removes a service feature (server tools, ``defer_loading``
tools, server-tool blocks, ``context_management``, unknown fields and keys) is dropped and named for the
``x-llmrelay-ignored`` header; what would make the answer wrong (``document`` blocks, file sources, unknown
content blocks) is refused with 400 ``unsupported_parameter``. ``thinking`` / ``redacted_thinking`` blocks are the
model's own past reasoning: dropped without a word, as is what only tunes the service (``service_tier``,
``cache_control``, ``metadata`` other than ``user_id``, ``thinking.display``).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from ...client.convert import ChatCall, provider_options
from ...errors import InvalidRequestError
from . import DoorRequest

__all__ = ["MessagesRequest", "estimate_tokens", "parse_count_request", "parse_request"]

# Top-level fields: translated, or accepted without a word (9.1.4).
_TRANSLATED = frozenset(
    (
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    )
)
_SILENT = frozenset(("service_tier", "cache_control", "stream_options"))
# Keys each block type knows (``cache_control`` everywhere: accepted, never named).
_BLOCK_KEYS = {
    "text": frozenset(("type", "text", "cache_control", "citations")),
    "image": frozenset(("type", "source", "cache_control")),
    "tool_use": frozenset(("type", "id", "name", "input", "cache_control", "caller")),
    "tool_result": frozenset(("type", "tool_use_id", "content", "is_error", "cache_control")),
}
_TOOL_KEYS = frozenset(("type", "name", "description", "input_schema", "cache_control", "strict", "defer_loading"))
_THINKING_BLOCKS = ("thinking", "redacted_thinking")
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high", "xhigh": "high"}


class MessagesRequest(DoorRequest):
    """A parsed ``/v1/messages`` request: the neutral ``call``, what was dropped (``ignored`` names for the
    header, ``ignored_params`` the field paths for ``strict_fields``), and the chat ``tools`` sent upstream."""

    def __init__(self, call: ChatCall, drops: _Drops, tools: list[Any]) -> None:
        super().__init__(call)
        for name, param in zip(drops.names, drops.params, strict=True):
            self.drop(name, param)
        self.tools = tools
        self.input_tokens: int | None = None  # the count of 9.3.4 once known (exact or estimated)
        self.request_id: str | None = None  # for the error event of a stream

    def estimate_tokens(self) -> int:
        return estimate_tokens(self.call.messages, self.tools)

    def tokens(self) -> int:
        """The request's input tokens as 9.3.4 counts them: the exact count when one was taken, else the estimate."""
        if self.input_tokens is None:
            self.input_tokens = self.estimate_tokens()
        return self.input_tokens


def estimate_tokens(messages: list[dict[str, Any]], tools: list[Any]) -> int:
    """SPEC 9.3.4's estimate: the UTF-8 length of the translated messages and tools (compact JSON) / 4, up."""
    size = len(orjson.dumps(messages)) + (len(orjson.dumps(tools)) if tools else 0)
    return math.ceil(size / 4)


def _invalid(message: str, param: str | None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code, status=400)


def _unsupported(message: str, param: str) -> InvalidRequestError:
    return _invalid(message, param, "unsupported_parameter")


class _Drops:
    """What a request loses, named once each: ``name`` for the header, ``param`` the first field path."""

    __slots__ = ("names", "params")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.params: list[str] = []

    def add(self, name: str, param: str) -> None:
        if name not in self.names:
            self.names.append(name)
            self.params.append(param)

    def unknown_keys(self, item: dict[str, Any], known: frozenset[str], where: str, kind: str) -> None:
        for key in item:
            if key not in known:
                self.add(f"{kind}.{key}", f"{where}.{key}")


def _typed(body: dict[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise _invalid(f"'{name}' must be {what}, not {type(value).__name__}", name)
    if type(value) is float and not math.isfinite(value):
        raise _invalid(f"'{name}' must be a finite number", name)
    return value


def _text_of(value: Any, where: str) -> str:
    """A string, or a list of text blocks joined with ``\\n`` (``system``, a ``system`` message)."""
    if type(value) is str:
        return value
    if type(value) is list:
        texts = []
        for index, block in enumerate(value):
            if type(block) is not dict or block.get("type") != "text" or type(block.get("text")) is not str:
                raise _invalid(f"{where}[{index}] must be a text block", f"{where}[{index}]")
            texts.append(block["text"])
        return "\n".join(texts)
    raise _invalid(f"'{where}' must be a string or a list of text blocks", where)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    found = block.get("source")
    source: dict[str, Any] = found if type(found) is dict else {}
    kind = source.get("type")
    if kind == "base64" and type(source.get("media_type")) is str and type(source.get("data")) is str:
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif kind == "url" and type(source.get("url")) is str:
        url = source["url"]
    elif kind in ("file", "text", "content"):
        raise _unsupported(
            f"{where}.source of type {kind!r} is not supported here: send the image as base64 or a URL",
            f"{where}.source",
        )
    else:
        raise _invalid(f"{where}.source must be a base64 (media_type, data) or url source", f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_content(content: Any, where: str, drops: _Drops) -> Any:
    if content is None or type(content) is str:
        return content or ""
    if type(content) is not list:
        raise _invalid(f"{where}.content must be a string or a list of blocks", f"{where}.content")
    parts = _parts(content, f"{where}.content", drops, allow=("text", "image"))
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _block_type(block: Any, where: str) -> str:
    if type(block) is not dict or type(block.get("type")) is not str:
        raise _invalid(f"{where} must be an object with a string 'type'", where)
    kind: str = block["type"]
    return kind


def _is_server_block(kind: str) -> bool:
    return kind in ("server_tool_use", "mcp_tool_use", "mcp_tool_result", "container_upload") or kind.endswith(
        "_tool_result"
    )


def _parts(blocks: list[Any], where: str, drops: _Drops, allow: tuple[str, ...]) -> list[dict[str, Any]]:
    """Text and image blocks as chat content parts (a tool result's content, a message's non-tool blocks)."""
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}[{index}]"
        kind = _block_type(block, at)
        if kind == "tool_reference":  # a tool search's pointer to a deferred tool: those are not sent here
            drops.add(f"content:{kind}", f"{at}.type")
            continue
        if kind not in allow:
            raise _unsupported(f"{at} of type {kind!r} is not supported here", f"{at}.type")
        drops.unknown_keys(block, _BLOCK_KEYS[kind], at, kind)
        if kind == "text":
            if type(block.get("text")) is not str:
                raise _invalid(f"{at}.text must be a string", f"{at}.text")
            parts.append({"type": "text", "text": block["text"]})
        else:
            parts.append(_image_part(block, at))
    return parts


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
    if type(name) is not str or not name or type(call_id) is not str or not call_id:
        raise _invalid(f"{where} needs a string 'id' and 'name'", where)
    if type(arguments) is not dict:
        raise _invalid(f"{where}.input must be an object", f"{where}.input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tool_message(block: dict[str, Any], where: str, drops: _Drops) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if type(call_id) is not str or not call_id:
        raise _invalid(f"{where}.tool_use_id must be a non-empty string", f"{where}.tool_use_id")
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": _tool_result_content(block.get("content"), where, drops),
    }


def _content(parts: list[dict[str, Any]]) -> Any:
    """Chat content: one text part as its string (what a chat caller would send), else the parts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _sort_blocks(blocks: list[Any], where: str, drops: _Drops) -> tuple[list[Any], list[Any], list[Any]]:
    """A message's blocks as (content blocks, tool_use calls, tool messages); dropped blocks left out."""
    content: list[Any] = []
    calls: list[Any] = []
    tools: list[Any] = []
    for index, block in enumerate(blocks):
        at = f"{where}[{index}]"
        kind = _block_type(block, at)
        if kind in ("text", "image"):
            content.append(block)
        elif kind == "tool_use":
            drops.unknown_keys(block, _BLOCK_KEYS[kind], at, kind)
            calls.append(_tool_call(block, at))
        elif kind == "tool_result":
            drops.unknown_keys(block, _BLOCK_KEYS[kind], at, kind)
            tools.append(_tool_message(block, at, drops))
        elif kind in _THINKING_BLOCKS:
            continue
        elif _is_server_block(kind):
            drops.add(f"content:{kind}", f"{at}.type")
        elif kind == "document":
            raise _unsupported(f"{at}: document blocks are not supported by this gateway", f"{at}.type")
        else:
            raise _unsupported(f"{at}: content blocks of type {kind!r} are not supported here", f"{at}.type")
    return content, calls, tools


def _message(message: Any, index: int, drops: _Drops) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: tool results first (one ``tool`` message each), then the rest."""
    where = f"messages[{index}]"
    if type(message) is not dict:
        raise _invalid(f"{where} must be an object", where)
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant", "system"):
        raise _invalid(f"{where}.role must be 'user', 'assistant' or 'system'", f"{where}.role")
    drops.unknown_keys(message, frozenset(("role", "content")), where, "message")
    if role == "system":
        return [{"role": "system", "content": _text_of(content, f"{where}.content")}]
    if type(content) is str:
        return [{"role": role, "content": content}]
    if type(content) is not list:
        raise _invalid(f"{where}.content must be a string or a list of blocks", f"{where}.content")
    blocks, calls, tools = _sort_blocks(content, f"{where}.content", drops)
    parts = _parts(blocks, f"{where}.content", drops, allow=("text", "image")) if blocks else []
    if role == "user" and calls:
        raise _invalid(f"{where}: tool_use blocks belong in assistant messages", f"{where}.content")
    if role == "assistant" and tools:
        raise _invalid(f"{where}: tool_result blocks belong in user messages", f"{where}.content")
    out: list[dict[str, Any]] = list(tools)
    if role == "assistant" and (parts or calls):
        reply: dict[str, Any] = {"role": "assistant", "content": _content(parts) if parts else None}
        if calls:
            reply["tool_calls"] = calls
        out.append(reply)
    elif role == "user" and (parts or not tools):
        out.append({"role": "user", "content": _content(parts) if parts else ""})
    return out


def _messages(body: dict[str, Any], drops: _Drops) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        raise _invalid("'messages' is required and must be a non-empty list of messages", "messages")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if type(system) is list:
            for index, block in enumerate(system):
                drops.unknown_keys(block, _BLOCK_KEYS["text"], f"system[{index}]", "text")
        out.append({"role": "system", "content": text})
    for index, message in enumerate(messages):
        out.extend(_message(message, index, drops))
    return out


def _tool(tool: Any, where: str, drops: _Drops) -> dict[str, Any] | None:
    """One Anthropic tool as a chat function tool; ``None`` for a dropped one (named)."""
    if type(tool) is not dict:
        raise _invalid(f"{where} must be an object", where)
    kind, name = tool.get("type"), tool.get("name")
    if kind not in (None, "custom"):
        # A server tool (web_search_20250305 …), an MCP toolset or a type this door does not know: the model
        # could never call it here; named by its name (else its type).
        drops.add(f"tools:{name if type(name) is str and name else kind}", f"{where}.type")
        return None
    if type(name) is not str or not name:
        raise _invalid(f"{where}.name must be a non-empty string", f"{where}.name")
    if tool.get("defer_loading") is True:
        drops.add(f"tools:{name}", f"{where}.defer_loading")
        return None
    drops.unknown_keys(tool, _TOOL_KEYS, where, "tool")
    schema = tool.get("input_schema", {"type": "object", "properties": {}})
    if type(schema) is not dict:
        raise _invalid(f"{where}.input_schema must be an object", f"{where}.input_schema")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    description = tool.get("description")
    if type(description) is str and description:
        function["description"] = description
    if type(tool.get("strict")) is bool:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tools(body: dict[str, Any], drops: _Drops) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if type(tools) is not list:
        raise _invalid("'tools' must be a list", "tools")
    out = []
    for index, tool in enumerate(tools):
        translated = _tool(tool, f"tools[{index}]", drops)
        if translated is not None:
            out.append(translated)
    return out


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]], options: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if type(choice) is dict else None
    if kind not in ("auto", "any", "tool", "none"):
        raise _invalid("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        options["parallel_tool_calls"] = False
    names = {tool["function"]["name"] for tool in tools}
    if kind == "tool":
        name = choice.get("name")
        if type(name) is not str or name not in names:
            raise _invalid(
                f"'tool_choice' names the tool {name!r}, which is not among the tools the model can call here",
                "tool_choice.name",
            )
        options["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind == "any":
        if not names:
            raise _invalid("'tool_choice' is 'any' but no tool the model can call here was given", "tool_choice")
        options["tool_choice"] = "required"
    elif tools:  # auto / none with no tool left: nothing to say upstream
        options["tool_choice"] = "auto" if kind == "auto" else "none"
    if not tools:
        options.pop("parallel_tool_calls", None)


def _effort_of_budget(thinking: Any) -> str | None:
    if thinking is None:
        return None
    kind = thinking.get("type") if type(thinking) is dict else None
    if kind in ("disabled", "adaptive"):
        return None
    if kind != "enabled":
        raise _invalid("'thinking.type' must be 'enabled', 'disabled' or 'adaptive'", "thinking.type")
    budget = thinking.get("budget_tokens")
    if type(budget) is not int or budget < 0:
        raise _invalid("'thinking.budget_tokens' must be a non-negative integer", "thinking.budget_tokens")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _output_config(body: dict[str, Any], options: dict[str, Any], drops: _Drops) -> str | None:
    """``output_config``: ``effort`` (returned) and ``format`` (a JSON schema → ``response_format``)."""
    config = body.get("output_config")
    if config is None:
        return None
    if type(config) is not dict:
        raise _invalid("'output_config' must be an object", "output_config")
    drops.unknown_keys(config, frozenset(("effort", "format")), "output_config", "output_config")
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise _invalid(f"'output_config.effort' must be one of {', '.join(_EFFORTS)}", "output_config.effort")
    form = config.get("format")
    if form is not None:
        if type(form) is not dict or form.get("type") != "json_schema" or type(form.get("schema")) is not dict:
            raise _invalid("'output_config.format' must be {type: json_schema, schema: {...}}", "output_config.format")
        options["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": form["schema"], "strict": True},
        }
    return _EFFORTS[effort] if effort is not None else None


def _sampling(body: dict[str, Any], options: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        value = _typed(body, name, (int, float), "a number")
        if value is not None:
            options[name] = value
    top_k = _typed(body, "top_k", (int,), "an integer")
    if top_k is not None:
        options["top_k"] = top_k
    stop = _typed(body, "stop_sequences", (list,), "a list of strings")
    if stop is not None:
        if not all(type(item) is str for item in stop):
            raise _invalid("'stop_sequences' must be a list of strings", "stop_sequences")
        if stop:
            options["stop"] = stop
    metadata = _typed(body, "metadata", (dict,), "an object")
    if metadata is not None and metadata.get("user_id") is not None:
        if type(metadata["user_id"]) is not str:
            raise _invalid("'metadata.user_id' must be a string", "metadata.user_id")
        options["user"] = metadata["user_id"]


def _other_fields(body: dict[str, Any], drops: _Drops) -> None:
    for name, value in body.items():
        if name in _TRANSLATED or name in _SILENT:
            continue
        if name == "mcp_servers" and not value:
            continue  # nothing asked for
        drops.add(name, name)


def _translate(body: Any, need_max_tokens: bool) -> MessagesRequest:
    if type(body) is not dict:
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if type(model) is not str or not model:
        raise _invalid("'model' is required and must be a non-empty string", "model")
    options: dict[str, Any] = {}
    max_tokens = _typed(body, "max_tokens", (int,), "an integer")
    if max_tokens is not None:
        if max_tokens < 1:
            raise _invalid("'max_tokens' must be at least 1", "max_tokens")
        options["max_tokens"] = max_tokens
    elif need_max_tokens:
        raise _invalid("'max_tokens' is required", "max_tokens")
    stream = _typed(body, "stream", (bool,), "a boolean")
    drops = _Drops()
    messages = _messages(body, drops)
    tools = _tools(body, drops)
    if tools:
        options["tools"] = tools
    _tool_choice(body, tools, options)
    _sampling(body, options)
    budget_effort = _effort_of_budget(body.get("thinking"))
    effort = _output_config(body, options, drops) or budget_effort
    if effort is not None:
        options["reasoning_effort"] = effort
    _other_fields(body, drops)
    call = ChatCall(model, messages, bool(stream), False, provider_options(options, known_only=False))
    return MessagesRequest(call, drops, tools)


def parse_request(body: Any) -> MessagesRequest:
    """A ``POST /v1/messages`` body as the neutral call; raises ``InvalidRequestError`` (``param``, ``code``)."""
    return _translate(body, need_max_tokens=True)


def parse_count_request(body: Any) -> MessagesRequest:
    """A ``POST /v1/messages/count_tokens`` body (no ``max_tokens`` needed) as the call that would be sent."""
    return _translate(body, need_max_tokens=False)
