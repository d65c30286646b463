"""The typed events: str(), repr(), to_dict(), equality, copying."""

from __future__ import annotations

import copy
import pickle

import pytest

from llmrelay.responses import AudioResponse, FinishReason, ImageResponse, ProviderInfo, Reasoning, ToolCalls, Usage

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

EVENTS = [
    (
        ProviderInfo("Groq", "llama", "https://x/v1/chat/completions", "chatcmpl-9", 1700000000),
        {
            "name": "Groq",
            "model": "llama",
            "url": "https://x/v1/chat/completions",
            "id": "chatcmpl-9",
            "created": 1700000000,
            "system_fingerprint": None,
        },
    ),
    (Reasoning("because"), {"token": "because"}),
    (ToolCalls([CALL]), {"calls": [CALL]}),
    (Usage(3, 4), {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    (FinishReason("stop"), {"reason": "stop"}),
    (AudioResponse("UklGRg==", "hello"), {"data": "UklGRg==", "transcript": "hello"}),
]


@pytest.mark.parametrize(("event", "as_dict"), EVENTS, ids=lambda value: type(value).__name__)
def test_typed_events_print_as_nothing(event, as_dict) -> None:
    assert str(event) == ""
    assert f"{event}" == ""
    assert event.to_dict() == as_dict


@pytest.mark.parametrize(("event", "as_dict"), EVENTS, ids=lambda value: type(value).__name__)
def test_repr_is_readable_and_round_trips(event, as_dict) -> None:
    text = repr(event)
    assert text.startswith(type(event).__name__ + "(")
    for value in as_dict.values():
        if isinstance(value, str):
            assert repr(value) in text
    assert copy.deepcopy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event


def test_image_response_str_is_markdown() -> None:
    image = ImageResponse(["https://a/1.png", "data:image/png;base64,AAAA"], "a [cat]\non a mat")
    assert str(image) == "![a (cat) on a mat](https://a/1.png)\n![a (cat) on a mat](data:image/png;base64,AAAA)\n"
    assert image.to_dict() == {"alt": "a [cat]\non a mat", "images": ["https://a/1.png", "data:image/png;base64,AAAA"]}
    assert ImageResponse("https://a/1.png").images == ["https://a/1.png"]
    assert "ImageResponse(" in repr(image) and "https://a/1.png" in repr(image)


def test_usage_details_and_total() -> None:
    usage = Usage.from_dict(
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 2}}
    )
    assert usage.total_tokens == 16  # as the server said, not recomputed
    assert usage.prompt_tokens_details == {"cached_tokens": 2}
    assert usage.to_dict()["prompt_tokens_details"] == {"cached_tokens": 2}
    assert Usage.from_dict({"prompt_tokens": None, "completion_tokens": 2}).to_dict() == {
        "prompt_tokens": 0,
        "completion_tokens": 2,
        "total_tokens": 2,
    }
    with pytest.raises(AttributeError):
        _ = usage.no_such_field
    assert Usage(1, 2) != Usage(1, 3)
    assert Usage(1, 2) != FinishReason("stop")


def test_events_are_exported_from_the_package() -> None:
    import llmrelay

    assert llmrelay.Usage is Usage and llmrelay.FinishReason is FinishReason and llmrelay.ImageResponse is ImageResponse
