"""Turning media (bytes, paths, files, URLs, data URIs) into chat message content parts."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from .typing import MediaListType, Messages

__all__ = ["data_uri", "render_media", "sniff_mime"]

_AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of image or audio bytes, from their magic numbers (png, jpeg, gif, webp, wav, mp3)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


def data_uri(data: bytes, mime: str | None = None) -> str:
    """A ``data:`` URI for the bytes, with the MIME type sniffed unless given."""
    mime = mime or sniff_mime(data) or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _describe(item: Any, name: str | None) -> str:
    if name:
        return repr(name)
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


def _part(item: Any, name: str | None) -> dict[str, Any]:
    if isinstance(item, str):
        if item.startswith(("http://", "https://")):
            return {"type": "image_url", "image_url": {"url": item}}
        if item.startswith("data:"):
            mime = item[5:].split(";", 1)[0].split(",", 1)[0].lower()
            if mime.startswith("image/"):
                return {"type": "image_url", "image_url": {"url": item}}
            if mime in _AUDIO_FORMATS:
                payload = item.split(",", 1)[1] if ";base64," in item else None
                if payload is None:
                    raise ValueError(f"media {_describe(item, name)}: audio data URIs must be base64")
                return {"type": "input_audio", "input_audio": {"data": payload, "format": _AUDIO_FORMATS[mime]}}
            raise ValueError(f"media {_describe(item, name)}: unsupported data URI type {mime!r}")
        if os.path.isfile(item):
            return _bytes_part(Path(item).read_bytes(), name or item)
        raise ValueError(f"media {_describe(item, name)}: not a URL, data URI or existing file")
    if isinstance(item, os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"media {_describe(str(path), name)}: no such file")
        return _bytes_part(path.read_bytes(), name or str(path))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _bytes_part(bytes(item), name)
    read = getattr(item, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, (bytes, bytearray)):
            return _bytes_part(bytes(data), name or getattr(item, "name", None))
        raise ValueError(f"media {_describe(item, name)}: file must be opened in binary mode")
    raise ValueError(f"media {_describe(item, name)}: unsupported type {type(item).__name__}")


def _bytes_part(data: bytes, name: Any) -> dict[str, Any]:
    mime = sniff_mime(data)
    if mime is None:
        label = repr(str(name)) if name else f"<{len(data)} bytes>"
        raise ValueError(f"media {label}: not a png, jpeg, gif, webp, wav or mp3 file")
    if mime.startswith("audio/"):
        encoded = base64.b64encode(data).decode("ascii")
        return {"type": "input_audio", "input_audio": {"data": encoded, "format": _AUDIO_FORMATS[mime]}}
    return {"type": "image_url", "image_url": {"url": data_uri(data, mime)}}


def render_media(messages: Messages, media: MediaListType | None) -> Messages:
    """A new message list with the media added as parts of the last user message.

    The caller's list and dicts are left untouched. Without a user message, a new one is appended.
    """
    if not media:
        return messages
    parts = []
    for entry in media:
        if isinstance(entry, tuple) and len(entry) == 2:
            item, name = entry
        else:
            item, name = entry, None
        parts.append(_part(item, name))
    result = list(messages)
    for index in range(len(result) - 1, -1, -1):
        message = result[index]
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                new_content = [*content, *parts]
            elif content is None or content == "":
                new_content = parts
            else:
                new_content = [{"type": "text", "text": content}, *parts]
            result[index] = {**message, "content": new_content}
            return result
    result.append({"role": "user", "content": parts})
    return result
