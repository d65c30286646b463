"""Types shared by the public API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from os import PathLike
from typing import IO, Any, Union

from .responses import ResponseType

__all__ = ["AsyncResult", "CreateResult", "MediaListType", "MediaType", "Message", "Messages"]

Message = dict[str, Any]
Messages = list[Message]
MediaType = Union[bytes, str, "PathLike[str]", IO[bytes]]
MediaListType = list[tuple[MediaType, Union[str, None]]]
AsyncResult = AsyncIterator[Union[str, ResponseType]]
CreateResult = Iterator[Union[str, ResponseType]]
