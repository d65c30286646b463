"""The playground's files over plain HTTP (SPEC 11.1): what is served, its headers and size, and turning it off."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from gateway_support import Lines, Running
from raw import fetch
from scripted_server import ScriptedServer

from llmrelay.server.app import Gateway
from llmrelay.server.config import ConfigError, load_config
from llmrelay.server.playground import CSP, load_assets

LIMIT = 150 * 1024  # SPEC 11.1: under 150 KB in all


def referenced(html: str) -> list[str]:
    """Every src/href of the page."""
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_page_and_its_files_are_served_with_the_policy(make_gateway) -> None:
    gw = make_gateway()
    page = fetch("GET", gw.url + "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == "default-src 'self'" == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.body.decode()
    links = [link for link in referenced(html) if not link.startswith("#")]
    assert sorted(links) == ["/playground/app.css", "/playground/app.js", "/playground/icon.svg"]
    total = len(page.body)
    kinds = {}
    for link in links:
        reply = fetch("GET", gw.url + link)
        assert reply.status == 200, link
        assert reply.headers["content-security-policy"] == CSP
        kinds[link] = reply.headers["content-type"]
        total += len(reply.body)
    assert kinds["/playground/app.js"].startswith("text/javascript")
    assert kinds["/playground/app.css"].startswith("text/css")
    assert total < LIMIT, f"the playground is {total} bytes"
    assert total == sum(len(body) for body, _ in load_assets().values())


def test_files_name_no_other_host() -> None:
    for path, (body, _) in load_assets().items():
        text = body.decode()
        assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text), path
        assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text, path
        assert "eval(" not in text and "new Function" not in text, path


def test_playground_off_means_404(server: ScriptedServer, tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[server]\nplayground = false\n\n[providers.up]\napi_base = "{server.base}"\n')
    log: list[str] = []
    gw = Running(Gateway(load_config(str(path)), log_stream=Lines(log, lambda line: None)), log).start()
    try:
        for asset in ("/", "/playground/app.js"):
            reply = fetch("GET", gw.url + asset)
            assert reply.status == 404, asset
            assert reply.error["code"] == "not_found"
        assert fetch("GET", gw.url + "/health").status == 200
    finally:
        gw.stop()


def test_playground_key_is_checked(tmp_path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nplayground = "yes"\n')
    with pytest.raises(ConfigError, match=r"server\.playground: must be true or false"):
        load_config(str(path))
    path.write_text("[server]\nplayground = false\n")
    assert load_config(str(path)).server.playground is False
    assert load_config(None).server.playground is True


def test_post_to_the_page_is_refused(make_gateway) -> None:
    gw = make_gateway()
    reply = fetch("POST", gw.url + "/", raw=b"{}")
    assert reply.status in (404, 405)
    assert reply.json()["error"]["code"] in ("not_found", "method_not_allowed")


def test_the_key_never_goes_into_a_url() -> None:
    """A form the script has not taken over yet (slow or failed script) must not submit the key as a query
    string: ``method="dialog"`` never navigates, and a control without a ``name`` is never submitted."""
    html = load_assets()["/"][0].decode()
    forms = re.findall(r"<form\b[^>]*>", html)
    assert forms and all('method="dialog"' in form for form in forms), forms
    key_input = re.search(r'<input\b[^>]*id="gateway-key"[^>]*>', html)
    assert key_input is not None and 'type="password"' in key_input.group(0)
    assert " name=" not in key_input.group(0)
    script = load_assets()["/playground/app.js"][0].decode()
    assert "console." not in script  # nothing, and so no key, is written to the console


@pytest.mark.parametrize(
    "target",
    [
        "/playground/../pyproject.toml",
        "/playground/%2e%2e/%2e%2e/pyproject.toml",
        "/playground/..%2f..%2fplayground.py",
        "/playground/app.js/../../../etc/passwd",
        "/playground//etc/passwd",
        "/playground/index.html",
        "/playground/",
    ],
)
def test_path_tricks_read_no_other_file(make_gateway, target: str) -> None:
    gw = make_gateway()

    async def raw_get() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    head, _, body = asyncio.run(raw_get()).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    assert status in (b"404", b"400"), head
    assert b"[project]" not in body and b"root:" not in body and b"import" not in body
