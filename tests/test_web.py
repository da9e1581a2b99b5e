"""The chat page of `agentkit serve`, driven in a real browser: Debian's chromium through Playwright.

A real uvicorn serves FakeLLM-backed agents on free ports. Screenshots of each state land in
tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkit import Agent, MemorySource, Message, Passage
from agentkit.config import Config
from agentkit.llm.base import Delta, GenerationOptions
from agentkit.server.app import create_app
from agentkit.server.background import ServerThread
from agentkit.sessions import SessionStore, answer_record, default_path
from agentkit.testing import FakeLLM, cite_first_evidence

INSTALL_HINT = (
    "the browser tests need Playwright and a system chromium: `make install` (as root on Debian), or "
    "`pip install playwright` and `apt-get install chromium`; set $AGENTKIT_CHROMIUM to use another chromium binary"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "s3cret"
CORPUS = [
    Passage("install#0", "Install agentkit with pip install -e . from a checkout. It needs Python 3.10 or newer.", "Install",
            uri="file:///docs/install.pdf#page=2"),
    Passage("router#0", "The router decides per question whether to retrieve or answer from memory.", "Router",
            uri="file:///docs/router.md"),
]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
NOTES = [Passage("markup#0", f"Markup test: {XSS} stays text.", '<img src=x onerror="window.__xss = 3">', uri="javascript:window.__xss=4")]
#: A reply that streams as plain content, one word per token.
LONG = " ".join(["Streaming"] + ["word"] * 40) + "."


class PageLLM(FakeLLM):
    """FakeLLM for the page: cites evidence [1]; "slowly" questions stream LONG at `slow` s a
    token; "bananas" questions get an answer its quote does not back (so it is withheld)."""

    def __init__(self) -> None:
        super().__init__(self.reply)
        self.slow = 0.05
        self.closed = threading.Event()
        self.produced = 0

    @staticmethod
    def reply(messages: Sequence[Message], options: GenerationOptions) -> str:
        prompt = messages[-1].content if messages else ""
        if "slowly" in prompt:
            return LONG
        text = str(cite_first_evidence(messages, options))
        if "bananas" in prompt:
            return re.sub(r"\nAnswer: .*", "\nAnswer: bananas", text)
        return text

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        delay = self.slow if "slowly" in (messages[-1].content if messages else "") else 0.0
        inner = super().stream(messages, options)

        def run() -> Iterator[Delta]:
            self.closed.clear()
            try:
                for delta in inner:
                    if delta.text:
                        time.sleep(delay)
                        self.produced += 1
                    yield delta
            finally:
                self.closed.set()

        return run()


def chromium_path() -> str | None:
    given = os.environ.get("AGENTKIT_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason=INSTALL_HINT)
    executable = chromium_path()
    if executable is None:
        pytest.skip(INSTALL_HINT)
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: CI and containers run the tests as root, where chromium's sandbox refuses to start.
        b = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def build_agent(llm: FakeLLM, data_dir: Path) -> Agent:
    docs = MemorySource("docs", "agentkit documentation")
    docs.add(CORPUS)
    notes = MemorySource("notes", "notes with markup in them")
    notes.add(NOTES)
    return Agent(llm, [docs, notes], config=Config(data_dir=data_dir))


@pytest.fixture(scope="module")
def llm() -> PageLLM:
    return PageLLM()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-data")


@pytest.fixture(scope="module")
def url(llm: PageLLM, data_dir: Path) -> Iterator[str]:
    with ServerThread(create_app(build_agent(llm, data_dir))) as base:
        yield base


@pytest.fixture()
def open_page(browser: Any) -> Iterator[Any]:
    """open_page(base_url, **context options) -> a page on the chat, loaded; closed after the test."""
    contexts: list[Any] = []

    def make(base: str, **options: Any) -> Any:
        context = browser.new_context(base_url=base, **{"viewport": {"width": 1100, "height": 720}, **options})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        return page

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def ask(page: Any, question: str, route: str = "") -> Any:
    """Type `question`, pick `route`, press Enter; the locator of the new answer."""
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#route", route)
    n = page.locator(".msg.assistant").count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant").nth(n)
    answer.wait_for()
    return answer


def done(answer: Any) -> Any:
    answer.page.wait_for_function("el => el.dataset.state !== 'streaming'", arg=answer.element_handle())
    return answer


# --- the tests -----------------------------------------------------------------------------------


def test_the_page_is_served_with_a_policy_that_runs_only_its_own_script(url: str) -> None:
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(url + "/web/app.js").headers["content-type"].startswith("text/javascript")


def test_streamed_text_appears_token_by_token(open_page: Any, url: str, llm: PageLLM) -> None:
    page = open_page(url)
    llm.slow = 0.08
    answer = ask(page, "Tell me slowly about streaming", route="parametric")
    seen: list[str] = []
    while answer.get_attribute("data-state") == "streaming":
        text = answer.locator(".answer").text_content() or ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.05)
    done(answer)
    final = answer.locator(".answer").text_content()
    assert final == LONG
    # Several growing prefixes were on screen before the whole answer was.
    partial = [s for s in seen if s != LONG]
    assert len(partial) >= 3, seen
    assert all(LONG.startswith(s) for s in partial)
    assert answer.locator(".route").text_content().startswith("Route: parametric")


def test_citation_opens_its_passage_with_the_quote_highlighted(open_page: Any, url: str) -> None:
    page = open_page(url)
    answer = done(ask(page, "How do I install agentkit?", route="docs"))
    assert answer.get_attribute("data-state") == "done"
    assert "Route: docs" in (answer.locator(".route").text_content() or "")
    assert "confidence" in (answer.locator(".route").text_content() or "")
    # The numbered sources under the answer: [1] is the install passage, marked cited.
    first = answer.locator(".sources li").first
    assert "Install" in (first.text_content() or "") and "cited" in (first.text_content() or "")
    answer.locator(".answer .cite[data-n='1']").click()
    panel = page.locator("#passage")
    assert panel.is_visible()
    assert page.locator("#passage-title").text_content() == "[1] Install"
    # The highlighted span is the server's quote for [1], at its offsets in the passage.
    body = {"model": "agentkit", "messages": [{"role": "user", "content": "How do I install agentkit?"}], "agentkit": {"route": ["docs"]}}
    [citation] = httpx.post(url + "/v1/chat/completions", json=body, timeout=20).json()["agentkit"]["citations"]
    assert citation["marker"] == 1 and citation["quote"]
    assert page.locator("#passage-text mark").text_content() == citation["quote"]
    before = page.evaluate("() => document.querySelector('#passage-text mark').previousSibling?.textContent ?? ''")
    assert before == CORPUS[0].text[: citation["start"]]
    assert page.locator("#passage-text").text_content() == CORPUS[0].text
    link = page.locator("#passage-uri a")
    assert link.get_attribute("href") == "file:///docs/install.pdf#page=2"
    assert re.match(r"\d\.\d\d \((supported|not supported|unchecked)\)|not checked", page.locator("#passage-support").text_content() or "")
    shot(page, "answer-with-sources")
    page.keyboard.press("Escape")
    assert not panel.is_visible()


def test_a_withheld_answer_says_what_was_withheld(open_page: Any, url: str) -> None:
    page = open_page(url)
    answer = done(ask(page, "How do I install agentkit? bananas", route="docs"))
    withheld = answer.locator(".notice.withheld")
    assert withheld.is_visible()
    assert "Withheld:" in (withheld.text_content() or "") and "bananas" in (withheld.text_content() or "")
    assert "bananas" not in (answer.locator(".answer").text_content() or "")
    assert withheld.get_attribute("role") is None  # only warnings are notes; not role="null"
    shot(page, "withheld-answer")


def test_escape_stops_the_stream_and_the_generation(open_page: Any, url: str, llm: PageLLM) -> None:
    page = open_page(url)
    llm.slow = 0.25
    before = llm.produced
    answer = ask(page, "Answer slowly please", route="parametric")
    page.wait_for_function("() => document.querySelector('.msg.assistant .answer').textContent.length > 0")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('.msg.assistant').dataset.state === 'stopped'")
    assert "Stopped" in (answer.locator(".notes").text_content() or "")
    # The server noticed the client leave and closed the model's stream well before its end.
    assert llm.closed.wait(5)
    assert llm.produced - before < len(LONG.split())
    # The composer is usable again.
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_hidden()


def test_a_session_reloads_and_continues(open_page: Any, url: str, data_dir: Path, llm: PageLLM) -> None:
    # A session saved by `agentkit chat --session` (same store) is listed and opens with its sources.
    agent = build_agent(FakeLLM(), data_dir)
    earlier = agent.ask("What does the router decide?", route=["docs"])
    with SessionStore(default_path(data_dir)) as store:
        store.append("from-the-cli", "user", "What does the router decide?")
        record = answer_record(earlier)
        store.append("from-the-cli", "assistant", earlier.text, answer=record)

    page = open_page(url)
    page.wait_for_selector("#sessions button[data-session='from-the-cli']").click()
    assistant = page.locator(".msg.assistant")
    assert page.locator(".msg.user").first.text_content() == "YouWhat does the router decide?"
    assert "Route: docs" in (assistant.first.locator(".route").text_content() or "")
    assistant.first.locator(".answer .cite").first.click()
    assert "router" in (page.locator("#passage-text mark").text_content() or "")

    # Continuing sends the earlier turn as history and saves the new one in the same session.
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data or "{}")) if r.url.endswith("/v1/chat/completions") else None)
    done(ask(page, "How do I install agentkit?", route="docs"))
    page.wait_for_function("() => document.querySelector(\"#sessions button[data-session='from-the-cli']\").textContent.includes('2 turns')")
    assert [m["content"] for m in sent[-1]["messages"]] == ["What does the router decide?", earlier.text, "How do I install agentkit?"]

    # A reload of the tab comes back to the same conversation.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function("() => document.querySelectorAll('.msg.assistant').length === 2")
    assert [t.removeprefix("You") for t in page.locator(".msg.user").all_text_contents()] == [
        "What does the router decide?", "How do I install agentkit?"]
    with SessionStore(default_path(data_dir)) as store:
        assert [m.role for m in store.messages("from-the-cli")] == ["user", "assistant", "user", "assistant"]


def test_a_turn_stopped_by_new_chat_stays_out_of_the_new_chat(open_page: Any, tmp_path: Path) -> None:
    llm = PageLLM()
    llm.slow = 0.25
    with ServerThread(create_app(build_agent(llm, tmp_path))) as base:
        page = open_page(base)
        ask(page, "Answer slowly please", route="parametric")
        page.wait_for_function("() => document.querySelector('.msg.assistant .answer').textContent.length > 0")
        page.click("#new-chat")
        done(ask(page, "How do I install agentkit?", route="docs"))
        deadline = time.monotonic() + 10
        with SessionStore(default_path(tmp_path)) as store:
            while sum(i.turns for i in store.list()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            questions = {n: [m.content for m in store.messages(n) if m.role == "user"] for n in store.names()}
        shown = page.evaluate("() => sessionStorage.getItem('agentkit.session')")
    # Each chat is its own session: the stopped question was not saved into the chat started after it.
    assert sorted(questions.values()) == [["Answer slowly please"], ["How do I install agentkit?"]], questions
    assert questions[shown] == ["How do I install agentkit?"]


def test_passage_markup_renders_as_inert_text(open_page: Any, url: str) -> None:
    page = open_page(url)
    alerts: list[str] = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    answer = done(ask(page, "What is in the markup test?", route="notes"))
    assert XSS in (answer.locator(".answer").text_content() or "")
    answer.locator(".answer .cite").first.click()
    assert XSS in (page.locator("#passage-text").text_content() or "")
    assert page.locator("#passage-title").text_content() == '[1] <img src=x onerror="window.__xss = 3">'
    # A javascript: URI is shown as text, not made a link.
    assert page.locator("#passage-uri a").count() == 0
    # The search panel shows the same passage as text too.
    page.select_option("#search-source", "notes")
    page.fill("#search-query", "markup test")
    page.press("#search-query", "Enter")
    page.wait_for_selector("#search-results li .text")
    assert XSS in (page.locator("#search-results").text_content() or "")
    page.wait_for_timeout(300)  # an onerror would fire by now
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main img, #passage img, aside img, #log script").count() == 0
    assert alerts == []


def test_with_a_token_the_page_asks_for_it_and_requests_without_it_fail(open_page: Any, tmp_path: Path) -> None:
    app = create_app(build_agent(PageLLM(), tmp_path), token=TOKEN)
    with ServerThread(app) as base:
        page = open_page(base)
        dialog = page.locator("#token-dialog")
        dialog.wait_for()
        assert dialog.is_visible()
        statuses = page.evaluate(
            """async () => [
              (await fetch('/extras/sources')).status,
              (await fetch('/extras/sessions')).status,
              (await fetch('/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({model: 'agentkit', messages: [{role: 'user', content: 'hi'}]})})).status,
            ]"""
        )
        assert statuses == [401, 401, 401]
        page.fill("#token", "wrong")
        page.press("#token", "Enter")
        page.wait_for_function("() => document.getElementById('token-error').textContent.includes('refused')")
        assert dialog.is_visible()
        page.fill("#token", TOKEN)
        page.press("#token", "Enter")
        page.wait_for_selector("body[data-ready=true]")
        assert not dialog.is_visible()
        assert page.evaluate("() => sessionStorage.getItem('agentkit.token')") == TOKEN
        answer = done(ask(page, "How do I install agentkit?", route="docs"))
        assert answer.get_attribute("data-state") == "done"
        # Kept for the tab: a reload does not ask again.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert not dialog.is_visible()


def test_dark_mode_follows_the_system_setting(open_page: Any, url: str) -> None:
    page = open_page(url, color_scheme="dark")
    done(ask(page, "How do I install agentkit?", route="docs")).locator(".answer .cite").first.click()
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    red, green, blue = map(int, re.findall(r"\d+", background)[:3])
    assert red + green + blue < 150, background
    shot(page, "dark-mode")


def test_phone_width_keeps_the_chat_usable(open_page: Any, url: str) -> None:
    page = open_page(url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    answer = done(ask(page, "How do I install agentkit?", route="docs"))
    # Nothing scrolls sideways; the side panel waits behind the menu button.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert page.locator("#side").is_hidden()
    answer.locator(".answer .cite").first.click()
    assert page.locator("#passage").is_visible()
    shot(page, "phone-width")
    page.keyboard.press("Escape")
    page.click("#menu")
    assert page.locator("#sources").is_visible()


# --- the page's endpoints, without a browser -------------------------------------------------------


def test_search_endpoint_queries_one_source_and_names_the_others_on_a_typo(url: str) -> None:
    found = httpx.post(url + "/extras/search", json={"source": "docs", "query": "install with pip", "k": 1}).json()
    assert [p["id"] for p in found["passages"]] == ["install#0"] and found["passages"][0]["uri"] == CORPUS[0].uri
    wrong = httpx.post(url + "/extras/search", json={"source": "doc", "query": "install"})
    assert wrong.status_code == 400 and "docs, notes" in wrong.json()["error"]["message"]
    assert httpx.post(url + "/extras/search", json={"source": "docs", "query": "x", "k": 0}).status_code == 400
    sources = httpx.get(url + "/extras/sources").json()["sources"]
    assert [(s["name"], s["count"]) for s in sources] == [("docs", 2), ("notes", 1)]


def test_without_a_config_the_page_is_told_there_are_no_sessions(tmp_path: Path) -> None:
    docs = MemorySource("docs")
    with ServerThread(create_app(Agent(FakeLLM(), [docs]))) as base:
        assert httpx.get(base + "/extras/sources").json()["sessions"] is False
        response = httpx.get(base + "/extras/sessions")
    assert response.status_code == 404 and "Agent.from_config" in response.json()["error"]["message"]


def test_a_turn_that_cannot_be_saved_leaves_no_question_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's save is one transaction: a failure on the answer keeps no lone question, which
    the next save's answer would otherwise be paired with."""
    from starlette.testclient import TestClient

    import agentkit.sessions as sessions

    real = sessions._dumps
    monkeypatch.setattr(sessions, "_dumps", lambda data: real(data) if data is None else (_ for _ in ()).throw(OSError("disk full")))
    app = create_app(build_agent(FakeLLM(), tmp_path))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        turn = {"question": "Q1", "answer": "A1", "complete": True, "record": {"warnings": []}}
        assert client.post("/extras/sessions/s/turns", json=turn).status_code == 500
        monkeypatch.setattr(sessions, "_dumps", real)
        saved = client.post("/extras/sessions/s/turns", json={**turn, "question": "Q2", "answer": "A2"})
        assert saved.status_code == 200 and saved.json()["seq"] == 2
    with SessionStore(default_path(tmp_path)) as store:
        assert [(m.role, m.content) for m in store.messages("s")] == [("user", "Q2"), ("assistant", "A2")]
        assert [(m.role, m.content) for m in store.history("s")] == [("user", "Q2"), ("assistant", "A2")]
