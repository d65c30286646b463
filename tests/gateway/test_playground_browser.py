"""The playground in a real browser (SPEC 11.2-11.7): headless Debian chromium driven by Playwright, against the
gateway in front of the scripted server, whose streams drip so the page can be seen while an answer grows.

Every test saves screenshots of its states into tests/screenshots/playground/ (see browser.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser import LAUNCH_ARGS, SHOTS, chromium_path, record_figure, unavailable
from scripted_server import Reply, ScriptedServer, chunk, json_reply, sse_reply, usage

ROUTES = '[routes.fast]\ntargets = ["up/test-model"]\n'
TIMEOUT_MS = 20_000
UP = "/v1/chat/completions"
UP2 = "/v1/second/chat/completions"

# Records every distinct text of the first answer's live text, with the answer's state, as the DOM changes.
WATCH = """
window.__seen = [];
new MutationObserver(() => {
  const answer = document.querySelector("article.answer");
  const live = answer && answer.querySelector(".stream-text");
  if (!live) return;
  const last = window.__seen[window.__seen.length - 1];
  if (!last || last.text !== live.textContent) window.__seen.push({text: live.textContent, state: answer.dataset.state});
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


# The navigation's timing and the bytes of the page and its files (not the API calls it makes).
LOADED = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const files = performance.getEntriesByType("resource").filter(r => !r.name.includes("/v1/"));
  return {load_ms: nav.loadEventEnd - nav.startTime, files: files.length + 1,
          bytes: nav.decodedBodySize + files.reduce((sum, r) => sum + r.decodedBodySize, 0)};
}"""


def listing(*ids: str) -> Reply:
    return json_reply({"object": "list", "data": [{"id": i, "object": "model", "owned_by": "x"} for i in ids]})


def drip(
    pieces: list[str],
    delay: float = 0.0,
    model: str = "test-model",
    end: str = "finish",
    reasoning: list[str] | None = None,
    tokens: tuple[int, int] = (5, 7),
) -> Reply:
    """A streamed answer: a role chunk, optional reasoning, the text pieces (``delay`` s apart), finish and usage."""
    items: list[Any] = [chunk(role="assistant", content="", model=model)]
    items += [chunk(reasoning_content=piece, model=model) for piece in reasoning or []]
    items += [chunk(piece, model=model) for piece in pieces]
    if end == "finish":
        items += [chunk(finish_reason="stop", model=model), chunk(choices=[], usage=usage(*tokens), model=model)]
        items.append("[DONE]")
    return sse_reply(*items, delay=delay, end=end)  # type: ignore[arg-type]


def chat_requests(server: ScriptedServer, path: str = UP) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.route_path == path]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install '.[test]')")
    path = chromium_path()
    for old in [*SHOTS.glob("*.png"), *SHOTS.glob("figures.json")]:  # the folder shows the latest run only
        old.unlink()
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        except Exception as error:
            unavailable(f"{path} does not start: {str(error)[:300]}")
        yield launched
        launched.close()


class Play:
    """One browser tab on the playground, with what it logged and every URL it asked for."""

    def __init__(self, context: Any, url: str, name: str) -> None:
        self.context = context
        self.url = url
        self.name = name
        self.page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.posted: list[Any] = []  # the JSON bodies the page sent
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))
        self.page.on("request", self._request)
        self.page.add_init_script(WATCH)
        self.shots = 0

    def _request(self, request: Any) -> None:
        self.requests.append(request.url)
        if request.method == "POST":
            self.posted.append(json.loads(request.post_data))

    def open(self, wait_models: bool = True) -> Play:
        self.page.goto(self.url + "/")
        if wait_models:
            self.page.wait_for_function("() => document.querySelector('#model-0').value !== ''")
        return self

    def shot(self, label: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = SHOTS / f"{self.name}-{self.shots}-{label}.png"
        self.page.screenshot(path=str(path))
        assert path.stat().st_size > 1000

    def send(self, text: str) -> None:
        box = self.page.locator("#message")
        box.fill(text)
        box.press("Enter")

    def answer(self, index: int = 0) -> Any:
        return self.page.locator("article.answer").nth(index)

    def wait_state(self, state: str, index: int = 0) -> None:
        self.page.wait_for_function(
            "([i, s]) => { const a = document.querySelectorAll('article.answer')[i]; return a && a.dataset.state === s; }",
            arg=[index, state],
        )

    def other_hosts(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.url + "/")]

    def unexpected_errors(self, allowed: str = "") -> list[str]:
        """Console errors, less the browser's own line for an HTTP error status the test asked for."""
        return [
            text
            for text in self.console_errors
            if not (allowed and "Failed to load resource" in text and allowed in text)
        ]


@pytest.fixture
def playground(
    browser: Any, server: ScriptedServer, make_gateway: Callable[..., Any], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Play]]:
    contexts: list[Any] = []
    server.route("GET", "/v1/models", listing("test-model", "other-model"))
    server.route("GET", "/v1/second/models", listing("second-model"))

    def open_playground(
        toml: str = ROUTES, width: int = 1280, height: int = 800, open_page: bool = True, **environ: str
    ) -> Play:
        gw = make_gateway(toml, **environ)
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        play = Play(context, gw.url, request.node.name.removeprefix("test_"))
        play.gateway = gw  # type: ignore[attr-defined]
        return play.open() if open_page else play

    yield open_playground
    for context in contexts:
        context.close()


# ------------------------------------------------------------------------------------------------ 11.1, 11.2


def test_page_loads_clean_and_lists_models_routes_first(playground: Callable[..., Play]) -> None:
    play = playground()
    page = play.page
    with urllib.request.urlopen(play.url + "/v1/models", timeout=10) as reply:
        listed = [(m["id"], m["owned_by"]) for m in json.load(reply)["data"]]
    assert {"up/test-model", "up/other-model", "up2/second-model"} <= {name for name, _ in listed}
    options = page.locator("#model-0 option").evaluate_all("os => os.map(o => o.value)")
    assert options[0] == "fast" and sorted(options) == sorted(name for name, _ in listed)  # routes first
    groups = page.locator("#model-0 optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert groups == ["Routes", *dict.fromkeys(owner for _, owner in listed if owner != "llmrelay")]
    assert page.locator("#model-0").input_value() == "fast"
    for name in ("Model", "System prompt", "Temperature", "Max tokens", "Compare", "Message"):
        assert page.get_by_label(name, exact=True).count() == 1, name
    assert page.get_by_role("button", name="Send").is_enabled()
    assert page.get_by_role("button", name="Stop").is_disabled()
    play.shot("empty")
    assert play.console_errors == []
    assert play.other_hosts() == []
    loads = []
    for _ in range(5):  # the page from the gateway, then four reloads (the browser revalidates: no-cache)
        loads.append(page.evaluate(LOADED))
        page.reload()
        page.wait_for_function("() => document.querySelector('#model-0').value !== ''")
    assert all(load["bytes"] < 150 * 1024 for load in loads)
    assert play.console_errors == [] and play.other_hosts() == []
    record_figure("page_bytes", loads[0]["bytes"])
    record_figure("page_files", loads[0]["files"])
    record_figure("page_load_ms_first", round(loads[0]["load_ms"], 1))
    record_figure("page_load_ms_median_of_5", round(sorted(load["load_ms"] for load in loads)[2], 1))


def test_answer_grows_piece_by_piece_and_ends_byte_exact(playground: Callable[..., Play], server) -> None:
    pieces = ["Hello", ", wor", "ld — ünïcödé ✓ ", "🚀 tabs\tand\n", "a *second* line", "  with trailing  "]
    server.route("POST", UP, drip(pieces, delay=0.3))
    play = playground()
    play.send("Say hello")
    play.page.wait_for_function("() => window.__seen.length >= 2")
    play.shot("streaming")
    play.wait_state("done")
    play.shot("done")
    seen = play.page.evaluate("window.__seen")
    full = "".join(pieces)
    growing = [s for s in seen if s["state"] == "streaming" and s["text"] and s["text"] != full]
    # The page showed partial answers while the stream was open, each a prefix of the next, never all at the end.
    assert len(growing) >= 2, seen
    texts = [s["text"] for s in seen if s["text"]]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts)), texts
    assert texts[-1] == full
    assert play.answer().locator(".markdown em").inner_text() == "second"
    play.answer().get_by_role("button", name="Plain text").click()
    assert play.answer().locator(".plain-text").evaluate("e => e.textContent") == full  # byte-exact
    sent = chat_requests(server)[0].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "test-model" and sent["messages"] == [{"role": "user", "content": "Say hello"}]
    assert play.console_errors == [] and play.other_hosts() == []


def test_reasoning_is_a_collapsed_block(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["The answer is 4."], reasoning=["Two plus ", "two is four."]))
    play = playground()
    play.send("2+2?")
    play.wait_state("done")
    details = play.answer().locator("details.reasoning")
    assert details.is_visible() and details.get_attribute("open") is None
    assert not details.locator(".reasoning-text").is_visible()
    details.locator("summary").click()
    assert details.locator(".reasoning-text").inner_text() == "Two plus two is four."
    assert play.answer().locator(".markdown").inner_text() == "The answer is 4."
    play.shot("reasoning-open")


def test_history_is_sent_and_clear_empties_it(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["first answer"]))
    play = playground()
    play.page.locator("#system").fill("Be brief.")
    play.page.locator("#temperature").fill("0.3")
    play.page.locator("#max-tokens").fill("64")
    play.send("one")
    play.wait_state("done")
    play.send("two")
    play.wait_state("done", 1)
    second = chat_requests(server)[1].json()
    assert second["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
    ]
    assert second["temperature"] == 0.3 and second["max_tokens"] == 64
    play.page.get_by_role("button", name="Clear").click()
    assert play.page.locator("article.answer").count() == 0
    play.send("three")
    play.wait_state("done")
    assert chat_requests(server)[2].json()["messages"][1:] == [{"role": "user", "content": "three"}]


# ------------------------------------------------------------------------------------------------ 11.2 safety


HOSTILE = [
    "Look: <img src=x onerror=\"window.__pwned='img'\"> and ",
    "<script>window.__pwned='script'</script>\n\n",
    "[click me](javascript:window.__pwned='link') · [data](data:text/html,<b>x</b>) · ",
    "[ok](https://example.invalid/page) · ![pic](https://example.invalid/p.png)\n\n",
    '<a href="javascript:window.__pwned=\'a\'">raw a</a> <iframe src="/"></iframe> `<b>code</b>`',
]


def test_model_written_markup_stays_inert_text(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(HOSTILE, delay=0.05))
    play = playground()
    play.send("<b>user markup</b> <img src=y onerror=\"window.__pwned='user'\">")
    play.wait_state("done")
    answer = play.answer()
    body = answer.locator(".answer-body")
    for tag in ("img", "script", "iframe", "b"):
        assert play.page.locator(f"main {tag}").count() == 0, tag
    hrefs = body.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.invalid/page", "https://example.invalid/p.png"]
    text = body.inner_text()
    assert "<img src=x onerror=\"window.__pwned='img'\">" in text
    assert "<script>window.__pwned='script'</script>" in text
    assert "[click me](javascript:window.__pwned='link')" in text
    assert "<a href=\"javascript:window.__pwned='a'\">raw a</a>" in text
    assert body.locator("code").inner_text() == "<b>code</b>"
    assert "<b>user markup</b>" in play.page.locator(".bubble").inner_text()
    play.shot("inert-markdown")
    body.get_by_text("[click me](javascript:", exact=False).click()
    answer.get_by_role("button", name="Plain text").click()  # the raw view is text too
    assert play.page.locator("main img, main script, main iframe").count() == 0
    assert play.page.evaluate("window.__pwned") is None
    assert play.page.url == play.url + "/"
    assert play.other_hosts() == [] and not [u for u in play.requests if u.endswith(("/x", "/y", "/p.png"))]
    assert play.console_errors == []
    play.shot("inert-plain-text")


def test_markdown_code_blocks_lists_and_tables_render(playground: Callable[..., Play], server) -> None:
    markdown = (
        "# Title\nSome **bold**, _em_ and `code`.\n\n- one\n- two\n  - nested\n\n1. first\n2. second\n\n"
        '```python\nprint("hi")\n    indented()\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> quoted\n'
    )
    server.route("POST", UP, drip([markdown[i : i + 7] for i in range(0, len(markdown), 7)]))
    play = playground()
    play.send("markdown please")
    play.wait_state("done")
    md = play.answer().locator(".markdown")
    assert md.locator("h3").inner_text() == "Title"
    assert md.locator("p strong").inner_text() == "bold" and md.locator("p em").inner_text() == "em"
    assert md.locator("p code").inner_text() == "code"
    assert md.locator(":scope > ul > li").count() == 2
    assert md.locator(":scope > ul > li ul > li").inner_text() == "nested"
    assert md.locator(":scope > ol > li").all_inner_texts() == ["first", "second"]
    assert md.locator("pre > code").evaluate("e => e.textContent") == 'print("hi")\n    indented()'
    assert md.locator("pre").get_attribute("data-lang") == "python"
    assert md.locator("td").all_inner_texts() == ["1", "2"]
    assert md.locator("blockquote").inner_text() == "quoted"
    play.shot("markdown")


# ------------------------------------------------------------------------------------------------ 11.3


def test_stop_aborts_and_the_upstream_sees_the_disconnect(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["partial ", "answer"], delay=0.05, end="keep_open"))
    play = playground()
    play.send("Tell me a long story")
    play.page.wait_for_function("() => (document.querySelector('.stream-text') || {}).textContent === 'partial answer'")
    play.shot("before-stop")
    assert not chat_requests(server)[0].client_disconnected
    play.page.get_by_role("button", name="Stop").click()
    assert server.wait_for(lambda: chat_requests(server)[0].client_disconnected, 5.0)
    play.wait_state("stopped")
    assert play.answer().locator(".answer-state").inner_text() == "stopped"
    assert play.answer().locator(".markdown").inner_text() == "partial answer"  # kept
    assert play.page.get_by_role("button", name="Send").is_enabled()
    assert play.page.get_by_role("button", name="Stop").is_disabled()
    play.shot("stopped")
    assert play.console_errors == []


def test_error_message_of_a_429_is_shown(playground: Callable[..., Play], server) -> None:
    upstream = {"error": {"message": "Rate limit reached for test-model: slow down", "code": "rate_limit_exceeded"}}
    server.route("POST", UP, json_reply(upstream, 429, {"Retry-After": "20"}))
    play = playground()
    body = json.dumps({"model": "up/test-model", "messages": [{"role": "user", "content": "x"}]}).encode()
    direct = urllib.request.Request(play.url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(direct, timeout=10)
    expected = json.loads(refused.value.read())["error"]["message"]
    assert "Rate limit reached for test-model: slow down" in expected
    play.page.locator("#model-0").select_option("up/test-model")
    play.send("hello?")
    play.wait_state("error")
    alert = play.answer().get_by_role("alert")
    assert expected in alert.inner_text() and "HTTP 429" in alert.inner_text()
    play.shot("error-429")
    assert play.unexpected_errors(allowed="429") == []


def test_keyed_gateway_asks_for_the_key_and_keeps_it_in_session_storage(playground: Callable[..., Play], server):
    key = "sk-llmrelay-playground-" + "k" * 20
    toml = ROUTES + f'[[keys]]\nname = "tester"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    server.route("POST", UP, drip(["keyed answer"]))
    play = playground(toml, open_page=False)
    play.open(wait_models=False)
    field = play.page.get_by_label("Gateway key", exact=True)
    field.wait_for()
    assert field.get_attribute("type") == "password"
    assert field.evaluate("e => e === document.activeElement")
    play.shot("asks-key")
    field.fill("sk-llmrelay-wrong")
    field.press("Enter")
    play.page.wait_for_function("() => document.querySelector('#key-reason').textContent.includes('not valid')")
    assert play.page.evaluate("document.querySelector('#key-dialog').open")
    field.fill(key)
    play.page.get_by_role("button", name="Use key").click()
    play.page.wait_for_function("() => document.querySelector('#model-0').value === 'fast'")
    play.send("hi")
    play.wait_state("done")
    assert chat_requests(server)[0].json()["messages"][-1]["content"] == "hi"
    stored = play.page.evaluate(
        "() => ({session: {...sessionStorage}, local: {...localStorage}, cookie: document.cookie})"
    )
    assert key in stored["session"].values()
    assert key not in json.dumps(stored["local"]) and stored["cookie"] == ""
    assert play.context.cookies() == []
    play.answer().get_by_role("button", name="Code").click()
    curl = play.answer().get_by_role("tabpanel", name="curl").inner_text()
    play.answer().get_by_role("tab", name="Python").click()
    python = play.answer().get_by_role("tabpanel", name="Python").inner_text()
    assert key not in curl + python
    assert '-H "Authorization: Bearer $LLMRELAY_KEY"' in curl and 'api_key=os.environ["LLMRELAY_KEY"]' in python
    # Forgotten key: the next question gets a 401, the page asks again, then sends the question itself.
    play.page.get_by_role("button", name="Forget key").click()
    assert play.page.evaluate("sessionStorage.length") == 0
    play.send("again")
    field.wait_for()
    field.fill(key)
    field.press("Enter")
    play.wait_state("done", 1)
    assert play.answer(1).locator(".markdown").inner_text() == "keyed answer"
    assert chat_requests(server)[-1].json()["messages"][-1]["content"] == "again"
    play.page.reload()  # the same tab keeps it: no question again
    play.page.wait_for_function("() => document.querySelector('#model-0').value === 'fast'")
    assert play.page.locator("#key-dialog").is_hidden()
    other = play.context.new_page()  # another tab does not have it
    other.goto(play.url + "/")
    other.get_by_label("Gateway key", exact=True).wait_for()
    other.close()
    play.shot("keyed-answer")
    assert play.unexpected_errors(allowed="401") == []


# ------------------------------------------------------------------------------------------------ 11.4


def test_figures_and_the_code_view_which_runs(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["Fig", "ures ", "live", " here", "."], delay=0.25, tokens=(5, 7)))
    play = playground()
    play.page.locator("#model-0").select_option("up/test-model")
    play.page.locator("#temperature").fill("0.5")
    play.send("Measure me")
    play.page.wait_for_function(
        "() => { const a = document.querySelector('article.answer');"
        " return a.dataset.state === 'streaming' && /\\d/.test(a.querySelector('.fig-tps').textContent); }"
    )
    play.shot("live-figures")
    play.wait_state("done")
    answer = play.answer()
    assert answer.locator(".fig-who").inner_text() == "up · test-model"
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", answer.locator(".fig-ttft").inner_text())
    assert re.fullmatch(r"\d+(\.\d)?", answer.locator(".fig-tps").inner_text())
    assert answer.locator(".fig-tokens").inner_text() == "5 in · 7 out"
    answer.get_by_role("button", name="Code").click()
    curl = answer.get_by_role("tabpanel", name="curl").inner_text()
    assert answer.get_by_role("tabpanel", name="Python").is_hidden()
    answer.get_by_role("tab", name="Python").click()
    python = answer.get_by_role("tabpanel", name="Python").inner_text()
    assert curl.startswith(f"curl -N '{play.url}/v1/chat/completions'") and "Authorization" not in curl
    assert '"model": "up/test-model"' in curl and '"temperature": 0.5' in curl
    assert '{"role": "user", "content": "Measure me"}' in curl
    assert "from openai import OpenAI" in python and 'model="up/test-model"' in python
    play.shot("code-view")
    # The code shown is the request the page made, and it runs.
    assert json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0]) == play.posted[0]
    sent = chat_requests(server)[0].json()
    server.route("POST", UP, drip(["from ", "the code view"]))
    ran = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("from the code view") and "completion_tokens=7" in ran.stdout
    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.rstrip().endswith("data: [DONE]"), done
    assert chat_requests(server)[1].json() == sent
    assert play.console_errors == []


def test_first_token_time_in_the_browser(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["quick"]))
    play = playground()
    play.page.locator("#model-0").select_option("up/test-model")
    times = []
    for _ in range(5):
        play.send("Quick?")
        play.wait_state("done", len(times))
        times.append(play.answer(len(times)).locator(".fig-ttft").inner_text())
    millis = sorted(float(t.split()[0]) * (1 if t.endswith(" ms") else 1000) for t in times)
    record_figure("first_token_ms_browser_median_of_5", millis[2])


# ------------------------------------------------------------------------------------------------ 11.5


def test_compare_streams_models_at_once_each_with_its_figures(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["left ", "model"], delay=0.05, end="keep_open"))
    server.route("POST", UP2, drip(["right ", "model"], delay=0.05, model="second-model", end="keep_open"))
    play = playground()
    page = play.page
    page.get_by_label("Compare", exact=True).check()
    page.get_by_label("Model 2", exact=True).select_option("up2/second-model")
    page.locator("#model-0").select_option("up/test-model")
    play.send("Who are you?")
    # Both columns show text while both upstream requests are still open: the two streams overlap.
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('article.answer')];"
        " return a.length === 2 && a.every(x => x.dataset.state === 'streaming')"
        " && a[0].textContent.includes('left model') && a[1].textContent.includes('right model'); }"
    )
    play.shot("compare-streaming")
    left, right = chat_requests(server)[0], chat_requests(server, UP2)[0]
    assert not left.client_disconnected and not right.client_disconnected
    boxes = [play.answer(i).bounding_box() for i in range(2)]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"] and boxes[0]["y"] == boxes[1]["y"]  # side by side
    page.get_by_role("button", name="Stop").click()
    assert server.wait_for(lambda: left.client_disconnected and right.client_disconnected, 5.0)
    # Then three models: each column has its own answer and figures.
    server.route("POST", UP, lambda r: drip([r.json()["model"], " done"], delay=0.1, model=r.json()["model"]))
    server.route("POST", UP2, drip(["right ", "done"], delay=0.1, model="second-model", tokens=(3, 6)))
    page.get_by_label("Model 3", exact=True).select_option("up/other-model")
    play.send("Again")
    for index in (2, 3, 4):
        play.wait_state("done", index)
    who = [play.answer(i).locator(".fig-who").inner_text() for i in (2, 3, 4)]
    assert who == ["up · test-model", "up2 · second-model", "up · other-model"]
    texts = [play.answer(i).locator(".markdown").inner_text() for i in (2, 3, 4)]
    assert texts == ["test-model done", "right done", "other-model done"]
    tokens = [play.answer(i).locator(".fig-tokens").inner_text() for i in (2, 3, 4)]
    assert tokens == ["5 in · 7 out", "3 in · 6 out", "5 in · 7 out"]
    boxes = [play.answer(i).bounding_box() for i in (2, 3, 4)]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and len({box["y"] for box in boxes}) == 1
    assert chat_requests(server, UP2)[1].json()["messages"][1] == {"role": "assistant", "content": "right model"}
    play.shot("compare-three-done")
    assert play.console_errors == []


# ------------------------------------------------------------------------------------------------ 11.6


def test_narrow_screen_has_no_horizontal_scroll(playground: Callable[..., Play], server) -> None:
    long_line = "x = '" + "a" * 300 + "'"
    server.route("POST", UP, drip([f"See https://example.invalid/{'p' * 200} and\n\n```\n{long_line}\n```\n"]))
    server.route("POST", UP2, drip(["second " * 40], model="second-model"))
    play = playground(width=375, height=740)
    page = play.page
    overflow = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.evaluate(overflow) <= 0
    settings = page.get_by_role("button", name="Settings")
    assert page.locator("#model-0").is_hidden()
    settings.focus()
    page.keyboard.press("Enter")
    assert page.locator("#model-0").evaluate("e => e === document.activeElement")
    page.get_by_label("Compare", exact=True).check()
    page.get_by_label("Model 2", exact=True).select_option("up2/second-model")
    page.locator("#model-0").select_option("up/test-model")
    play.shot("narrow-settings")
    assert page.evaluate(overflow) <= 0
    settings.click()
    play.send("w" * 120)
    play.wait_state("done")
    play.wait_state("done", 1)
    play.answer().get_by_role("button", name="Code").click()
    assert page.evaluate(overflow) <= 0
    for box in [play.answer(i).bounding_box() for i in range(2)]:
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    play.shot("narrow-answers")
    assert play.console_errors == []


def test_keyboard_alone_focus_order_and_shift_enter(playground: Callable[..., Play], server) -> None:
    server.route("POST", UP, drip(["typed ", "by keyboard"]))
    play = playground()
    page = play.page
    order = []
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.id || document.activeElement.textContent"))
    wanted = ["model-0", "compare", "system", "temperature", "max-tokens", "message", "send", "clear"]
    assert "clear" in order, order
    assert [x for x in order[: order.index("clear") + 1] if x in wanted] == wanted, order
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # visible focus
    page.locator("#message").focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.locator("#message").input_value() == "line one\nline two"
    assert chat_requests(server) == []  # Shift+Enter did not send
    play.shot("shift-enter")
    page.keyboard.press("Enter")
    play.wait_state("done")
    assert chat_requests(server)[0].json()["messages"][-1]["content"] == "line one\nline two"
    assert page.locator(".bubble").inner_text() == "line one\nline two"
    assert page.locator("#message").input_value() == ""
    for _ in range(4):  # back from the message box into the answer's buttons
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.textContent") == "Code":
            break
    page.keyboard.press("Enter")
    assert play.answer().locator(".code-view").is_visible()
    play.shot("keyboard")
    server.route("POST", UP, drip(["held"], end="keep_open"))  # Escape in the message box stops a stream
    page.locator("#message").focus()
    page.keyboard.type("hold on")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.stream-text')[0]?.textContent === 'held'")
    page.keyboard.press("Escape")
    play.wait_state("stopped", 1)
    assert server.wait_for(lambda: chat_requests(server)[-1].client_disconnected, 5.0)
    assert play.console_errors == []


def test_the_key_stays_out_of_urls_when_the_script_fails_to_load(playground: Callable[..., Play]) -> None:
    """A failed or slow script must not leave a form that submits the key as a query string (history, logs)."""
    key = "sk-llmrelay-playground-" + "u" * 20
    toml = ROUTES + f'[[keys]]\nname = "tester"\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    play = playground(toml, open_page=False)
    play.page.route("**/playground/app.js", lambda route: route.abort())
    play.page.goto(play.url + "/")
    play.page.evaluate("document.querySelector('#key-dialog').showModal()")
    field = play.page.get_by_label("Gateway key", exact=True)
    field.fill(key)
    field.press("Enter")  # no script: the browser submits the form itself
    play.page.wait_for_load_state()
    assert key not in play.page.url
    assert [url for url in play.requests if key in url or "gateway-key" in url] == []
