"""Small text rules shared by every layer: how long quoted text may be, the text of a content-parts list, and
a provider's name for people."""

from __future__ import annotations

from typing import Any

__all__ = ["content_text", "display_name", "shorten"]


def shorten(text: str | bytes, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, with ``…`` marking a cut (bytes are decoded, bad bytes replaced)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def content_text(content: Any, separator: str = "") -> str:
    """The text of a message ``content``: a string as is; a list of parts joined from its text parts (a part with
    a ``text`` string and no ``type`` counts as text) with ``separator`` (``""`` for pieces of one answer, ``" "``
    for the separate parts of a prompt); ``None`` is ``""``. Anything else raises ``TypeError``."""
    if content is None:
        return ""
    if type(content) is str:
        return content
    if type(content) is not list:
        raise TypeError(f"content is {type(content).__name__}, not text")
    return separator.join(
        part["text"]
        for part in content
        if type(part) is dict and part.get("type", "text") == "text" and isinstance(part.get("text"), str)
    )


def display_name(cls: type) -> str:
    """A provider's name for people: its ``label``, else its class name."""
    return getattr(cls, "label", None) or cls.__name__
