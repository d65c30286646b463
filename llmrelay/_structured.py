"""What the command line does with an answer's shape: fenced code blocks (``-x``) and JSON schemas (``--schema``)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["concise_schema", "extract_code_block", "json_problem", "schema_format"]

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[^\n`]*\n(?P<code>.*?)^(?P=fence)[ \t]*$", re.MULTILINE | re.DOTALL)
_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
}
_FIELD = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(?:\s+(?P<type>\w+))?\s*(?::\s*(?P<description>.*))?$")


def extract_code_block(text: str, last: bool = False) -> str | None:
    """The content of the first (``last``: the last) fenced code block (```` ``` ```` or ``~~~``), None if none."""
    blocks = [match.group("code") for match in _FENCE.finditer(text)]
    if not blocks:
        return None
    return blocks[-1] if last else blocks[0]


def concise_schema(spec: str) -> dict[str, Any]:
    """A JSON schema from ``'name type, other type: description'`` (``llm``'s concise syntax): fields split by
    commas or newlines; types ``str`` (default), ``int``, ``float``, ``bool``; every field required."""
    separator = "\n" if "\n" in spec.strip() else ","
    properties: dict[str, Any] = {}
    for part in spec.split(separator):
        part = part.strip()
        if not part:
            continue
        match = _FIELD.match(part)
        if match is None:
            raise ValueError(f"{part!r} is not a field: write 'name type' or 'name type: description'")
        kind = (match.group("type") or "str").lower()
        if kind not in _TYPES:
            raise ValueError(f"{part!r}: unknown type {kind!r}; use str, int, float or bool")
        field: dict[str, Any] = {"type": _TYPES[kind]}
        if match.group("description"):
            field["description"] = match.group("description").strip()
        properties[match.group("name")] = field
    if not properties:
        raise ValueError("no fields given")
    return {"type": "object", "properties": properties, "required": list(properties)}


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` asking for answers that follow ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def json_problem(text: str) -> str | None:
    """Why ``text`` is not a JSON document (None when it is): what a ``--schema`` answer is checked for."""
    if not text.strip():
        return "the answer is empty"
    try:
        json.loads(text)
    except ValueError as error:
        return str(error)
    return None
