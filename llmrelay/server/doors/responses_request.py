"""An OpenAI Responses API request (``POST /v1/responses``) as the one neutral chat call (SPEC 9.2.1-9.2.2).

Pure functions, no I/O. :func:`parse` checks the body and translates what it knows; a field whose loss only
removes a service feature is dropped and named in ``ignored`` (for ``x-llmrelay-ignored``; with
``strict=True`` it is a 400 ``unknown_parameter`` instead); a field whose loss would make the answer wrong is
a 400 ``unsupported_parameter`` naming it. Stored items of earlier responses (``previous_response_id``) are
put in front of the request's own by :func:`with_history`.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

import orjson

from ...client.convert import ChatCall, provider_options
from ...errors import InvalidRequestError
from . import DoorRequest

__all__ = ["ResponsesRequest", "custom_input", "item_messages", "new_item_id", "parse", "with_history"]

# Fields that only tune the service: accepted without a word (9.1.4).
_SILENT = frozenset(
    {
        "include",
        "prompt_cache_key",
        "service_tier",
        "safety_identifier",
        "stream_options",
        "metadata",
        "client_metadata",
        "store",
        "user",
        "model",
        "stream",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "previous_response_id",
        "truncation",
        "background",
        "conversation",
        "prompt",
    }
)
# Tools the provider's own servers would run: the model could never call them through a chat upstream.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer_use",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
    }
)
# Input items that record what a hosted tool did: dropped with the tool.
HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "tool_search_call",
        "tool_search_output",
    }
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "custom_tool_call": {"type", "call_id", "name", "input", "id", "status"},
    "custom_tool_call_output": {"type", "call_id", "output", "id", "status"},
}
_ID_PREFIXES = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "custom_tool_call": "ctc_",
    "custom_tool_call_output": "ctco_",
    "reasoning": "rs_",
}
_FUNCTION_KEYS = {"type", "name", "description", "parameters", "strict"}
_REFUSED_PARTS = {"input_file": "files", "input_audio": "audio input"}


def new_item_id(prefix: str) -> str:
    """128 random bits: a stored response is found by its id alone when the gateway has no keys."""
    return prefix + secrets.token_hex(16)


class ResponsesRequest(DoorRequest):
    """A parsed ``POST /v1/responses``: the neutral ``call`` plus what rendering and storing need.

    ``items``: the request's own input items in the Responses shape, each with an ``id`` (what is stored and
    listed by ``GET …/input_items``); ``custom``: names of the functions that stand for custom tools (their calls
    come back as ``custom_tool_call`` items); ``echo``: the response object's request fields (9.2.3).
    """

    __slots__ = (
        "call",
        "created_at",
        "custom",
        "echo",
        "id",
        "instructions",
        "items",
        "previous_response_id",
        "renderer",
        "result",
        "store",
    )

    def __init__(self, call: ChatCall, items: list[dict[str, Any]], instructions: str | None) -> None:
        super().__init__(call)
        self.items = items
        self.instructions = instructions
        self.id = new_item_id("resp_")
        self.created_at = int(time.time())
        self.custom: frozenset[str] = frozenset()
        self.echo: dict[str, Any] = {}
        self.previous_response_id: str | None = None
        self.store = True
        self.renderer: Any = None  # the stream's renderer, once made (its ``final`` is what is stored)
        self.result: dict[str, Any] | None = None  # the non-streamed response object, once made


def _invalid(message: str, param: str | None, code: str = "invalid_request") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code, status=400)


def _unsupported(param: str, why: str) -> InvalidRequestError:
    return _invalid(f"'{param}' is not supported by this gateway: {why}", param, "unsupported_parameter")


class _Drops:
    """The named drops of one request: a header name each, or (strict) a 400 naming the field."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.names: list[str] = []
        self.params: list[str] = []

    def drop(self, name: str, param: str) -> None:
        if self.strict:
            raise _invalid(
                f"'{param}' cannot be honoured by this gateway (strict_fields is on; without it, it is ignored "
                "and named in x-llmrelay-ignored)",
                param,
                "unknown_parameter",
            )
        self.names.append(name)
        self.params.append(param)


# ------------------------------------------------------------------------------------ checks

_NUMBER = ((int, float), "a number")
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "max_output_tokens": ((int,), "an integer"),
    "parallel_tool_calls": ((bool,), "a boolean"),
    "stream": ((bool,), "a boolean"),
    "store": ((bool,), "a boolean"),
    "background": ((bool,), "a boolean"),
    "instructions": ((str,), "a string"),
    "user": ((str,), "a string"),
    "metadata": ((dict,), "an object"),
    "previous_response_id": ((str,), "a string"),
    "tools": ((list,), "a list"),
    "tool_choice": ((str, dict), "a string or an object"),
    "text": ((dict,), "an object"),
    "reasoning": ((dict,), "an object"),
    "truncation": ((str,), "a string"),
    "input": ((str, list), "a string or a list of items"),
}


def _check_types(body: dict[str, Any]) -> None:
    for name, (types, what) in _TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise _invalid(f"'{name}' must be {what}, not {type(value).__name__}", name)
        if type(value) is float and not math.isfinite(value):
            raise _invalid(f"'{name}' must be a finite number", name)
    tokens = body.get("max_output_tokens")
    if tokens is not None and tokens < 1:
        raise _invalid("'max_output_tokens' must be at least 1", "max_output_tokens")


def _refuse(body: dict[str, Any]) -> None:
    """Fields whose loss would make the answer wrong (9.2.2)."""
    if body.get("background") is True:
        raise _unsupported("background", "responses are answered while the request is open; send background: false")
    if body.get("conversation") is not None:
        raise _unsupported("conversation", "conversations are not stored here; use previous_response_id")
    if body.get("prompt") is not None:
        raise _unsupported("prompt", "stored prompts live on OpenAI's servers; send the instructions and input")
    truncation = body.get("truncation")
    if truncation not in (None, "disabled"):
        raise _unsupported("truncation", "the gateway never drops input to fit; send truncation: 'disabled'")


# ------------------------------------------------------------------------------------ input


def _text_of(value: Any, param: str) -> str:
    if type(value) is not str:
        raise _invalid(f"'{param}' must be a string", param)
    return value


def _part(part: Any, param: str, drops: _Drops) -> dict[str, Any]:
    """One content part as a chat part."""
    if type(part) is not dict:
        raise _invalid(f"'{param}' must be an object", param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
        return {"type": "text", "text": _text_of(part.get("text"), f"{param}.text")}
    if kind == "refusal":
        return {"type": "text", "text": _text_of(part.get("refusal"), f"{param}.refusal")}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None and part.get("file_id") is not None:
            raise _unsupported(
                f"{param}.file_id", "uploaded files are not kept here; send image_url (a URL or data URL)"
            )
        image: dict[str, Any] = {"url": _text_of(url, f"{param}.image_url")}
        detail = part.get("detail")
        if detail is not None:
            image["detail"] = _text_of(detail, f"{param}.detail")
        return {"type": "image_url", "image_url": image}
    if kind in _REFUSED_PARTS:
        raise _unsupported(f"{param}.type", f"{_REFUSED_PARTS[kind]} cannot be passed to a chat upstream")
    raise _invalid(f"'{param}.type' {kind!r} is not a known content part type", f"{param}.type")


def _content(content: Any, param: str, drops: _Drops) -> Any:
    """Message content: a string as it is; parts → chat parts, joined into one string when all are text."""
    if type(content) is str:
        return content
    if type(content) is not list:
        raise _invalid(f"'{param}' must be a string or a list of content parts", param)
    parts = [_part(part, f"{param}[{index}]", drops) for index, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _output(value: Any, param: str, drops: _Drops) -> str:
    """A tool output: a string, or text parts joined."""
    if type(value) is str:
        return value
    content = _content(value, param, drops)
    if type(content) is not str:
        raise _unsupported(param, "a tool output can only be text over a chat upstream")
    return content


def custom_input(arguments: str) -> str:
    """The free-form input of a custom tool call from the arguments of the function standing for it."""
    try:
        data = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if type(data) is dict and type(data.get("input")) is str:
        return str(data["input"])
    return arguments


def _call(item: dict[str, Any], param: str, arguments: str) -> dict[str, Any]:
    call_id = _text_of(item.get("call_id"), f"{param}.call_id")
    name = _text_of(item.get("name"), f"{param}.name")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _item_message(item: dict[str, Any], kind: str, param: str, drops: _Drops) -> dict[str, Any] | None:
    """One input item as a chat message (``None``: dropped); function calls are joined by the caller."""
    if kind == "message":
        role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise _invalid(
                f"'{param}.role' must be one of user, assistant, system, developer, not {item.get('role')!r}",
                f"{param}.role",
            )
        return {"role": role, "content": _content(item.get("content"), f"{param}.content", drops)}
    if kind == "function_call":
        arguments = item.get("arguments")
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [_call(item, param, _text_of(arguments, f"{param}.arguments"))],
        }
    if kind == "custom_tool_call":
        text = _text_of(item.get("input"), f"{param}.input")
        arguments = orjson.dumps({"input": text}).decode()
        return {"role": "assistant", "content": None, "tool_calls": [_call(item, param, arguments)]}
    # function_call_output / custom_tool_call_output
    call_id = _text_of(item.get("call_id"), f"{param}.call_id")
    return {"role": "tool", "tool_call_id": call_id, "content": _output(item.get("output"), f"{param}.output", drops)}


def _kind(item: Any, param: str) -> str:
    if type(item) is not dict:
        raise _invalid(f"'{param}' must be an object", param)
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    if type(kind) is not str:
        raise _invalid(f"'{param}.type' is required (a string)", f"{param}.type")
    return kind


def item_messages(items: list[Any], drops: _Drops, prefix: str = "input") -> list[dict[str, Any]]:
    """Input items as chat messages (9.2.1); consecutive tool calls join one assistant message."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        param = f"{prefix}[{index}]"
        kind = _kind(item, param)
        if kind == "reasoning":
            continue  # clients echo the model's reasoning back: not input
        if kind == "item_reference":
            raise _unsupported(f"{param}.type", "item references point into OpenAI's storage; send the item itself")
        if kind in HOSTED_ITEMS or kind not in _ITEM_KEYS:
            drops.drop(f"input:{kind}", f"{param}.type")
            continue
        for key in item:
            if key not in _ITEM_KEYS[kind]:
                drops.drop(f"input.{key}", f"{param}.{key}")
        message = _item_message(item, kind, param, drops)
        if message is None:
            continue
        last = messages[-1] if messages else None
        if "tool_calls" in message and last is not None and last.get("tool_calls") and last["content"] is None:
            last["tool_calls"].extend(message["tool_calls"])
        else:
            messages.append(message)
    return messages


def _input_items(value: Any) -> list[dict[str, Any]]:
    """The request's input as items in the Responses shape, each with an id (what is stored)."""
    if type(value) is str:
        part = {"type": "input_text", "text": value}
        return [{"id": new_item_id("msg_"), "type": "message", "role": "user", "content": [part]}]
    items = []
    for item in value:
        kind = "message" if item.get("type") is None else item["type"]
        stored = {"id": new_item_id(_ID_PREFIXES.get(kind, "item_")), **item}
        if "type" not in stored:
            stored["type"] = "message"
        if type(stored.get("id")) is not str:
            stored["id"] = new_item_id(_ID_PREFIXES.get(kind, "item_"))
        items.append(stored)
    return items


# ------------------------------------------------------------------------------------ tools


def _function(tool: dict[str, Any], param: str, drops: _Drops) -> dict[str, Any]:
    name = _text_of(tool.get("name"), f"{param}.name")
    function: dict[str, Any] = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    for key in tool:
        if key not in _FUNCTION_KEYS:
            drops.drop(f"tools.{key}", f"{param}.{key}")
    return {"type": "function", "function": function}


def _custom(tool: dict[str, Any], param: str) -> dict[str, Any]:
    """A free-form custom tool as a function of one string parameter ``input`` (9.2.2)."""
    name = _text_of(tool.get("name"), f"{param}.name")
    description = tool.get("description") or ""
    grammar = tool.get("format")
    if type(grammar) is dict and grammar.get("type") == "grammar":
        definition = grammar.get("definition")
        syntax = grammar.get("syntax") or "grammar"
        if type(definition) is str and definition:
            description = f"{description}\n\nThe input must follow this {syntax} grammar:\n{definition}".strip()
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The raw input of the tool"}},
        "required": ["input"],
        "additionalProperties": False,
    }
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def _tools(tools: list[Any], drops: _Drops) -> tuple[list[dict[str, Any]], set[str]]:
    """Responses tools → chat tools, and the names of the custom ones."""
    result: list[dict[str, Any]] = []
    custom: set[str] = set()

    def add(tool: Any, param: str, nested: bool) -> None:
        if type(tool) is not dict:
            raise _invalid(f"'{param}' must be an object", param)
        kind = tool.get("type")
        if kind == "function":
            result.append(_function(tool, param, drops))
        elif kind == "custom":
            result.append(_custom(tool, param))
            custom.add(result[-1]["function"]["name"])
        elif kind == "namespace" and not nested:
            inner = tool.get("tools")
            if type(inner) is not list:
                raise _invalid(f"'{param}.tools' must be a list of tools", f"{param}.tools")
            for index, item in enumerate(inner):
                add(item, f"{param}.tools[{index}]", True)
        elif kind == "tool_search" and tool.get("execution") == "client":
            named = {
                "name": "tool_search",
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
            }
            result.append(_function({"type": "function", **named}, param, drops))
        else:
            drops.drop(f"tools:{kind}", f"{param}.type")

    for index, tool in enumerate(tools):
        add(tool, f"tools[{index}]", False)
    return result, custom


def _tool_choice(choice: Any, drops: _Drops) -> Any:
    if type(choice) is str:
        if choice not in ("auto", "none", "required"):
            raise _invalid(f"'tool_choice' must be auto, none or required, not {choice!r}", "tool_choice")
        return choice
    kind = choice.get("type")
    if kind in ("function", "custom"):
        return {"type": "function", "function": {"name": _text_of(choice.get("name"), "tool_choice.name")}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        drops.drop("tool_choice.allowed_tools", "tool_choice.type")
        return choice["mode"]
    drops.drop(f"tool_choice:{kind}", "tool_choice.type")
    return None


def _response_format(text: dict[str, Any], drops: _Drops) -> dict[str, Any] | None:
    for key in text:
        if key not in ("format", "verbosity"):
            drops.drop(f"text.{key}", f"text.{key}")
    if text.get("verbosity") is not None:
        drops.drop("text.verbosity", "text.verbosity")
    form = text.get("format")
    if form is None:
        return None
    if type(form) is not dict:
        raise _invalid("'text.format' must be an object", "text.format")
    kind = form.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {"name": _text_of(form.get("name"), "text.format.name")}
        if type(form.get("schema")) is not dict:
            raise _invalid("'text.format.schema' must be an object (a JSON schema)", "text.format.schema")
        for key in ("schema", "strict", "description"):
            if form.get(key) is not None:
                schema[key] = form[key]
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(f"'text.format.type' must be text, json_object or json_schema, not {kind!r}", "text.format.type")


# ------------------------------------------------------------------------------------ the request


def _tool_parameters(body: dict[str, Any], drops: _Drops) -> tuple[dict[str, Any], set[str]]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in chat form, and the custom tools' names."""
    params: dict[str, Any] = {}
    custom: set[str] = set()
    if body.get("tools"):
        tools, custom = _tools(body["tools"], drops)
        if tools:
            params["tools"] = tools
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"], drops)
        if choice is not None and (params.get("tools") or choice == "none"):
            params["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None and params.get("tools"):  # chat upstreams refuse it alone
        params["parallel_tool_calls"] = body["parallel_tool_calls"]
    return params, custom


def _parameters(body: dict[str, Any], drops: _Drops) -> tuple[dict[str, Any], set[str]]:
    """The chat parameters of a request (before the provider's own option rules)."""
    params, custom = _tool_parameters(body, drops)
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            params[name] = body[name]
    if body.get("max_output_tokens") is not None:
        params["max_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning") or {}
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary"):
            drops.drop(f"reasoning.{key}", f"reasoning.{key}")
    if reasoning.get("effort") is not None:
        params["reasoning_effort"] = _text_of(reasoning["effort"], "reasoning.effort")
    if body.get("text"):
        response_format = _response_format(body["text"], drops)
        if response_format is not None:
            params["response_format"] = response_format
    for name in body:
        if name not in _SILENT:
            drops.drop(name, name)
    return params, custom


def _echo(body: dict[str, Any], store: bool) -> dict[str, Any]:
    """The request fields the response object repeats (9.2.3)."""
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": store,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "metadata": body.get("metadata") or {},
        "user": body.get("user"),
    }


def parse(body: Any, *, strict: bool = False, storing: bool = True) -> ResponsesRequest:
    """A ``POST /v1/responses`` body as a neutral call; :class:`InvalidRequestError` (with ``param``) when wrong.

    ``strict``: ``[server] strict_fields`` (named drops are refused); ``storing``: ``[server] store_responses``
    (when off, nothing is kept and ``previous_response_id`` is refused)."""
    if type(body) is not dict:
        raise _invalid("the request body must be a JSON object", None, "invalid_json")
    model = body.get("model")
    if type(model) is not str or not model:
        raise _invalid("'model' is required and must be a non-empty string", "model")
    _check_types(body)
    _refuse(body)
    given = body.get("input")
    if given is None or given == [] or given == "":
        raise _invalid("'input' is required: a string or a non-empty list of items", "input")
    previous = body.get("previous_response_id")
    if previous is not None and not storing:
        raise _unsupported("previous_response_id", "storing responses is off on this gateway (store_responses = false)")
    drops = _Drops(strict)
    params, custom = _parameters(body, drops)
    instructions = body.get("instructions")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += item_messages(given, drops) if type(given) is list else [{"role": "user", "content": given}]
    try:
        options = provider_options(params, known_only=False)
    except ValueError as error:  # pragma: no cover - n is never set here
        raise _invalid(str(error), None) from None
    stream = bool(body.get("stream"))
    call = ChatCall(model, messages, stream, stream, options)
    store = storing and body.get("store") is not False
    request = ResponsesRequest(call, _input_items(given), instructions)
    request.custom = frozenset(custom)
    for name, param in zip(drops.names, drops.params, strict=True):
        request.drop(name, param)
    request.previous_response_id = previous
    request.store = store
    request.echo = _echo(body, store)
    return request


def with_history(request: ResponsesRequest, history: list[dict[str, Any]]) -> None:
    """Put the items of the stored chain (``previous_response_id``) before the request's own input (9.2.5);
    ``instructions`` stay this request's own."""
    drops = _Drops(False)
    own = item_messages(request.items, drops)
    earlier = item_messages(history, drops, "history")
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    request.call.messages = messages + _join(earlier, own)


def _join(earlier: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if earlier and own and earlier[-1].get("tool_calls") and own[0].get("tool_calls") and own[0]["content"] is None:
        merged = {**earlier[-1], "tool_calls": [*earlier[-1]["tool_calls"], *own[0]["tool_calls"]]}
        return [*earlier[:-1], merged, *own[1:]]
    return earlier + own
