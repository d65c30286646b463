"""Media inputs rendered into the last user message, and image generation."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
from pathlib import Path

import pytest
from helpers import collect, make_provider, of_type, text_of
from scripted_server import completion, json_reply

from llmrelay.errors import BadRequestError, ResponseError
from llmrelay.media import data_uri, render_media, sniff_mime
from llmrelay.responses import ImageResponse, ProviderInfo

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 20
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20
GIF = b"GIF89a\x01\x00\x01\x00" + b"\x00" * 20
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\x00" * 20
WAV = b"RIFF$\x00\x00\x00WAVEfmt " + b"\x00" * 20
MP3_ID3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 20
MP3_FRAME = b"\xff\xfb\x90\x64" + b"\x00" * 20

SAMPLES = [
    (PNG, "image/png"),
    (JPEG, "image/jpeg"),
    (GIF, "image/gif"),
    (WEBP, "image/webp"),
    (WAV, "audio/wav"),
    (MP3_ID3, "audio/mpeg"),
    (MP3_FRAME, "audio/mpeg"),
]


@pytest.mark.parametrize(("data", "mime"), SAMPLES)
def test_sniff_mime(data: bytes, mime: str) -> None:
    assert sniff_mime(data) == mime


def test_sniff_mime_unknown() -> None:
    assert sniff_mime(b"hello world") is None
    assert sniff_mime(b"") is None
    assert sniff_mime(b"RIFF\x00\x00\x00\x00AVI ") is None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


EXPECTED_PARTS = {
    "image/png": {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"}},
    "image/jpeg": {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(JPEG)}"}},
    "image/gif": {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{b64(GIF)}"}},
    "image/webp": {"type": "image_url", "image_url": {"url": f"data:image/webp;base64,{b64(WEBP)}"}},
    "audio/wav": {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
}


def sent_parts(server, **kwargs) -> list:
    server.script(json_reply(completion("seen")))
    items = collect(make_provider(server, default_vision_model="vision-model"), **kwargs)
    assert text_of(items) == "seen"
    body = server.requests[-1].json()
    return body


@pytest.mark.parametrize(("data", "mime"), SAMPLES[:5])
def test_bytes_media_into_string_content(server, data: bytes, mime: str) -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is this?"}]
    body = sent_parts(server, messages=messages, media=[(data, None)])
    assert body["model"] == "vision-model"
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert body["messages"][1] == {
        "role": "user",
        "content": [{"type": "text", "text": "What is this?"}, EXPECTED_PARTS[mime]],
    }


def test_mp3_becomes_input_audio(server) -> None:
    body = sent_parts(server, media=[(MP3_ID3, "song.mp3")])
    assert body["messages"][-1]["content"][-1] == {
        "type": "input_audio",
        "input_audio": {"data": b64(MP3_ID3), "format": "mp3"},
    }


def test_media_into_list_content_and_last_user_message(server) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "trailing assistant"},
    ]
    snapshot = copy.deepcopy(messages)
    body = sent_parts(server, messages=messages, media=[(PNG, "a.png"), (JPEG, "b.jpg")])
    assert body["messages"][0] == snapshot[0]
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "second"},
        EXPECTED_PARTS["image/png"],
        EXPECTED_PARTS["image/jpeg"],
    ]
    assert body["messages"][3] == snapshot[3]
    assert messages == snapshot


def test_paths_str_and_pathlib(server, tmp_path: Path) -> None:
    png_path = tmp_path / "picture.bin"
    png_path.write_bytes(PNG)
    gif_path = tmp_path / "anim.gif"
    gif_path.write_bytes(GIF)
    body = sent_parts(server, media=[(str(png_path), None), (gif_path, None)])
    assert body["messages"][-1]["content"][1:] == [EXPECTED_PARTS["image/png"], EXPECTED_PARTS["image/gif"]]


def test_open_binary_files(server, tmp_path: Path) -> None:
    path = tmp_path / "x.webp"
    path.write_bytes(WEBP)
    with path.open("rb") as handle:
        body = sent_parts(server, media=[(handle, None), (io.BytesIO(WAV), "voice.wav")])
    assert body["messages"][-1]["content"][1:] == [EXPECTED_PARTS["image/webp"], EXPECTED_PARTS["audio/wav"]]


def test_urls_and_data_uris_pass_through(server) -> None:
    png_uri = f"data:image/png;base64,{b64(PNG)}"
    wav_uri = f"data:audio/wav;base64,{b64(WAV)}"
    body = sent_parts(
        server,
        media=[
            ("https://example.com/cat.png?x=1", None),
            ("http://example.com/dog", None),
            (png_uri, None),
            (wav_uri, None),
        ],
    )
    assert body["messages"][-1]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png?x=1"}},
        {"type": "image_url", "image_url": {"url": "http://example.com/dog"}},
        {"type": "image_url", "image_url": {"url": png_uri}},
        {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
    ]


def test_media_without_user_message_appends_one() -> None:
    rendered = render_media([{"role": "system", "content": "s"}], [(PNG, None)])
    assert rendered[-1] == {"role": "user", "content": [EXPECTED_PARTS["image/png"]]}


def test_bare_media_items_without_names() -> None:
    rendered = render_media([{"role": "user", "content": "x"}], [PNG])  # type: ignore[list-item]
    assert rendered[-1]["content"][-1] == EXPECTED_PARTS["image/png"]


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ((b"plain text bytes", "notes.txt"), "notes.txt"),
        ((b"plain text bytes", None), "16 bytes"),
        (("/no/such/file.png", None), "/no/such/file.png"),
        ((Path("/no/such/dir/img.png"), None), "img.png"),
        (("data:text/plain;base64,aGk=", None), "text/plain"),
        (("data:audio/wav,notbase64", None), "base64"),
        ((12345, None), "int"),
        ((io.StringIO("text mode"), "t.txt"), "binary"),
        (("ftp://example.com/x.png", None), "ftp://example.com/x.png"),
    ],
)
def test_invalid_media_is_value_error_naming_it(server, item, needle: str) -> None:
    with pytest.raises(ValueError) as caught:
        collect(make_provider(server), media=[item])
    assert needle in str(caught.value)
    assert server.requests == []


def test_data_uri_helper() -> None:
    assert data_uri(PNG) == f"data:image/png;base64,{b64(PNG)}"
    assert data_uri(b"??").startswith("data:application/octet-stream;base64,")


# ------------------------------------------------------------------ image generation

IMAGE_URL = "https://cdn.example.com/generated/1.png"


def image_provider(server, **attributes):
    return make_provider(server, image_models=["img-1"], **attributes)


def test_image_model_posts_images_generations_with_url_result(server) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"created": 1, "data": [{"url": IMAGE_URL}]}))
    messages = [
        {"role": "user", "content": "old"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "a red cat"},
    ]
    items = collect(image_provider(server), model="img-1", messages=messages)
    assert len(items) == 2
    assert isinstance(items[0], ProviderInfo)
    assert items[0].model == "img-1"
    assert items[1] == ImageResponse([IMAGE_URL], "a red cat")
    assert str(items[1]) == f"![a red cat]({IMAGE_URL})\n"
    (request,) = server.requests
    assert request.path == "/v1/images/generations"
    assert request.json() == {"model": "img-1", "prompt": "a red cat"}
    assert request.headers["accept"] == "application/json"


def test_image_b64_json_results_become_data_uris(server) -> None:
    server.route(
        "POST",
        "/v1/images/generations",
        json_reply({"data": [{"b64_json": b64(PNG)}, {"b64_json": b64(JPEG)}, {"url": IMAGE_URL}]}),
    )
    items = collect(image_provider(server), model="img-1", n=3, response_format="b64_json")
    (image,) = of_type(items, ImageResponse)
    assert image.images == [f"data:image/png;base64,{b64(PNG)}", f"data:image/jpeg;base64,{b64(JPEG)}", IMAGE_URL]
    assert server.requests[0].json() == {"model": "img-1", "prompt": "Hi", "n": 3, "response_format": "b64_json"}


def test_image_width_height_become_size_and_keywords_forwarded(server) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": IMAGE_URL}]}))
    collect(image_provider(server), model="img-1", width=512, height=256, quality="hd", style="vivid", background=None)
    assert server.requests[0].json() == {
        "model": "img-1",
        "prompt": "Hi",
        "size": "512x256",
        "quality": "hd",
        "style": "vivid",
    }


def test_image_aspect_ratio_and_explicit_size(server) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": IMAGE_URL}]}))
    collect(image_provider(server), model="img-1", aspect_ratio="16:9")
    assert server.requests[-1].json()["size"] == "1792x1024"
    collect(image_provider(server), model="img-1", size="256x256", width=1, height=2)
    assert server.requests[-1].json()["size"] == "256x256"
    with pytest.raises(ValueError, match="aspect_ratio"):
        collect(image_provider(server), model="img-1", aspect_ratio="7:5")


def test_image_prompt_argument_and_list_content_prompt(server) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": IMAGE_URL}]}))
    items = collect(image_provider(server), model="img-1", prompt="explicit prompt")
    assert server.requests[-1].json()["prompt"] == "explicit prompt"
    assert items[-1].alt == "explicit prompt"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "u"}},
                {"type": "text", "text": "dog"},
            ],
        }
    ]
    collect(image_provider(server), model="img-1", messages=messages)
    assert server.requests[-1].json()["prompt"] == "a dog"


def test_image_call_rejects_unknown_keywords(server) -> None:
    with pytest.raises(TypeError, match="top_k"):
        collect(image_provider(server), model="img-1", top_k=3)
    assert server.requests == []


def test_image_extra_data_merged(server) -> None:
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": IMAGE_URL}]}))
    collect(image_provider(server), model="img-1", extra_data={"seed": 7, "steps": 4})
    assert server.requests[-1].json() == {"model": "img-1", "prompt": "Hi", "seed": 7, "steps": 4}


def test_image_model_flagged_by_cached_listing(server) -> None:
    provider = make_provider(server)
    models = {"data": [{"id": "chat-1"}, {"id": "flux", "image": True}, {"id": "sd", "type": "image"}]}
    server.route("GET", "/v1/models", json_reply(models))
    server.route("POST", "/v1/images/generations", json_reply({"data": [{"url": IMAGE_URL}]}))
    server.route("POST", "/v1/chat/completions", json_reply(completion("chat answer")))
    # Before any listing: a chat call never lists models on its own, so "flux" goes to chat.
    assert text_of(collect(provider, model="flux", prompt="ignored by chat")) == "chat answer"
    assert [r.path for r in server.requests] == ["/v1/chat/completions"]
    assert "prompt" not in server.requests[-1].json()
    assert provider.get_models() == ["chat-1", "flux", "sd"]
    items = collect(provider, model="flux")
    assert of_type(items, ImageResponse) == [ImageResponse([IMAGE_URL], "Hi")]
    collect(provider, model="sd")
    assert [r.path for r in server.requests][-2:] == ["/v1/images/generations", "/v1/images/generations"]
    # The listing was cached for this key only: another key goes to chat again.
    assert text_of(collect(provider, model="flux", api_key="other-key")) == "chat answer"


def test_image_error_and_empty_answers(server) -> None:
    server.script(
        json_reply({"error": {"message": "prompt rejected by safety system", "type": "invalid_request_error"}}, 400)
    )
    with pytest.raises(BadRequestError, match="safety"):
        collect(image_provider(server), model="img-1")
    server.script(json_reply({"data": []}))
    with pytest.raises(ResponseError, match="no image"):
        collect(image_provider(server), model="img-1")
    server.script(json_reply({"data": [{"b64_json": "!!!not base64!!!"}]}))
    with pytest.raises(ResponseError, match="base64"):
        collect(image_provider(server), model="img-1")
    server.script(json_reply({"data": ["just a string"]}))
    with pytest.raises(ResponseError):
        collect(image_provider(server), model="img-1")


def test_generate_images_async_returns_the_server_json(server) -> None:
    answer = {"created": 7, "data": [{"b64_json": b64(PNG), "revised_prompt": "a cat, red"}]}
    server.route("POST", "/v1/images/generations", json_reply(answer))
    provider = image_provider(server, default_image_model="img-2")

    data = asyncio.run(provider.generate_images_async("a red cat", aspect_ratio="16:9", response_format="b64_json"))

    assert data == answer
    assert server.requests[0].json() == {
        "model": "img-2",
        "prompt": "a red cat",
        "size": "1792x1024",
        "response_format": "b64_json",
    }


def test_generate_images_async_checks_before_sending(server) -> None:
    with pytest.raises(TypeError, match="temperature"):
        asyncio.run(image_provider(server).generate_images_async("x", temperature=0.2))
    with pytest.raises(ValueError, match="no image model"):
        asyncio.run(make_provider(server).generate_images_async("x"))
    assert server.requests == []
