"""agentkit serve, tested with the official openai client against a real uvicorn on a free port.

FakeLLM-backed agents only; the `agentkit serve` command itself is started once as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from agentkit import Agent, MemorySource, Message, Passage
from agentkit.config import AgentSettings
from agentkit.llm.base import Delta, GenerationOptions
from agentkit.server.app import create_app
from agentkit.server.background import ServerThread, free_port
from agentkit.server.splitter import ReplySplitter
from agentkit.testing import FakeLLM

TOKEN = "s3cret"
CORPUS = [
    Passage("install#0", "Install agentkit with pip install -e . from a checkout.", "Install"),
    Passage("router#0", "The router decides per question whether to retrieve or answer from memory.", "Router"),
    Passage("citations#0", "Citations are checked: each mark must point at a numbered passage.", "Citations"),
    Passage("config#0", "Unknown configuration keys are rejected with an error naming the key.", "Configuration"),
]
#: question -> the passage it must be answered from.
QUESTIONS = {
    "How do I install agentkit?": "install#0",
    "What does the router decide per question?": "router#0",
    "How are citations checked?": "citations#0",
    "What happens to unknown configuration keys?": "config#0",
}


class SlowLLM(FakeLLM):
    """FakeLLM whose stream waits on `gate`, sleeps `delay` per token and records being closed."""

    def __init__(self, responses: Any = None, *, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__(responses)
        self.delay = delay
        self.gate = gate
        self.closed = threading.Event()
        self.produced = 0
        self.running = 0
        self.peak = 0
        self._count = threading.Lock()

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        inner = super().stream(messages, options)

        def run() -> Iterator[Delta]:
            with self._count:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                if self.gate is not None:
                    self.gate.wait(10)
                for delta in inner:
                    if delta.text:
                        time.sleep(self.delay)
                        self.produced += 1
                    yield delta
            finally:
                with self._count:
                    self.running -= 1
                self.closed.set()

        return run()


def docs() -> MemorySource:
    src = MemorySource("docs", "agentkit documentation: install, router, citations, configuration")
    src.add(CORPUS)
    return src


@pytest.fixture(scope="module")
def llm() -> SlowLLM:
    return SlowLLM(delay=0.005)


@pytest.fixture(scope="module")
def url(llm: SlowLLM) -> Iterator[str]:
    app = create_app(Agent(llm, [docs()]), token=TOKEN, max_body_bytes=32_768, max_concurrency=8)
    with ServerThread(app) as base:
        yield base


@pytest.fixture()
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0, timeout=20)


def ask(question: str) -> list[Any]:
    return [{"role": "user", "content": question}]


# --- the happy paths ---------------------------------------------------------------------------


def test_models_lists_the_agent_and_the_bare_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["agentkit", "agentkit/raw"]


def test_health_answers_without_a_token_but_names_nothing(url: str) -> None:
    # Anyone may ask whether it is up; the model and the sources are for token holders.
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    data = httpx.get(url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert data["status"] == "ok" and data["sources"] == ["docs"] and data["max_concurrency"] == 8
    assert data["model"] == "fake"


def test_answer_carries_citations_and_route_in_the_extra_field(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="agentkit", messages=ask("How do I install agentkit?"))
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert "” [1]" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extra = raw.http_response.json()["agentkit"]
    assert [c["passage_id"] for c in extra["citations"]] == ["install#0"]
    assert extra["route"]["targets"] == ["docs"]
    assert extra["passages"][0] == "install#0"
    assert extra["text"] == completion.choices[0].message.content
    assert set(extra["timings"]) >= {"route_ms", "retrieve_ms", "generate_ms", "total_ms"}


def collect(stream: Any) -> tuple[str, str, dict[str, Any], Any]:
    """(content, reasoning, agentkit field of the very last chunk, usage) of a streamed answer."""
    content, reasoning, usage = [], [], None
    chunk = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
    assert chunk is not None
    extra = (chunk.model_extra or {}).get("agentkit", {})
    return "".join(content), "".join(reasoning), extra, usage


def test_stream_sends_standard_chunks_and_ends_with_the_extra_field(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="agentkit", messages=ask("How do I install agentkit?"), stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, extra, usage = collect(stream)
    assert content == extra["text"] == (
        "The sources say: “Install agentkit with pip install -e .” [1] In short: Install agentkit with pip install -e.")
    # The quote reader's raw reply is reasoning; only the checked answer is content.
    assert reasoning.startswith('Quote: [1] "Install agentkit') and "\nAnswer: " in reasoning
    assert [c["passage_id"] for c in extra["citations"]] == ["install#0"]
    assert usage is not None and usage.completion_tokens > 0


def test_extra_field_carries_each_quote_with_its_span_in_the_evidence(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="agentkit", messages=ask("How are citations checked?"))
    extra = raw.http_response.json()["agentkit"]
    assert extra["kind"] == "model" and extra["withheld"] == ""
    [citation] = extra["citations"]
    evidence = {p["id"]: p for p in extra["evidence"]}
    assert [p["id"] for p in extra["evidence"]][: len(extra["passages"])] == extra["passages"]
    text = evidence[citation["passage_id"]]["text"]
    assert citation["quote"] and isinstance(citation["start"], int) and isinstance(citation["end"], int)
    assert text[citation["start"] : citation["end"]] == citation["quote"]
    assert citation["passage_id"] == "citations#0" and citation["inferred"] is False
    # A stream's final chunk says the same.
    _, _, streamed, _ = collect(client.chat.completions.create(model="agentkit", messages=ask("How are citations checked?"), stream=True))
    assert streamed["kind"] == "model" and streamed["citations"][0]["quote"] == citation["quote"]


def test_an_answer_that_did_not_hold_up_never_streams_as_content() -> None:
    reply = 'Quote: [1] "Install agentkit with pip install -e . from a checkout."\nAnswer: bananas'
    app = create_app(Agent(SlowLLM(reply), [docs()]))
    with ServerThread(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        content, reasoning, extra, _ = collect(
            client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True))
    assert extra["kind"] == "extractive" and extra["withheld"] == "bananas"
    assert content == extra["text"] and "bananas" not in content and "bananas" in reasoning
    quote = extra["citations"][0]["quote"]
    assert quote and quote in content  # the source sentence is shown instead, as a quote


def test_the_raw_sse_stream_ends_with_done(url: str) -> None:
    body = {"model": "agentkit", "messages": ask("How do I install agentkit?"), "stream": True}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_concurrent_streams_each_get_their_own_answer(url: str, llm: SlowLLM) -> None:
    llm.peak = 0

    def run(question: str) -> tuple[str, dict[str, Any]]:
        client = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0, timeout=30)
        content, _, extra, _ = collect(client.chat.completions.create(model="agentkit", messages=ask(question), stream=True))
        return content, extra

    questions = list(QUESTIONS) * 2
    with ThreadPoolExecutor(len(questions)) as pool:
        results = list(pool.map(run, questions))
    for question, (content, extra) in zip(questions, results, strict=True):
        assert [c["passage_id"] for c in extra["citations"]] == [QUESTIONS[question]], question
        assert content == extra["text"]
    assert llm.peak >= 2, "the streams should have overlapped"


def test_history_reaches_the_model_and_system_messages_are_dropped(client: openai.OpenAI, llm: SlowLLM) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "SYSTEM-FROM-CLIENT"},
        {"role": "user", "content": "EARLIER-QUESTION"},
        {"role": "assistant", "content": "EARLIER-ANSWER"},
        {"role": "user", "content": "How do I install agentkit?"},
    ]
    client.chat.completions.create(model="agentkit", messages=messages)
    sent = [m.content for m in llm.calls[-1][0]]
    assert "EARLIER-QUESTION" in sent and "EARLIER-ANSWER" in sent
    assert not any("SYSTEM-FROM-CLIENT" in c for c in sent)


def test_the_route_can_be_forced_through_extra_body(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="agentkit", messages=ask("How do I install agentkit?"), extra_body={"agentkit": {"route": ["parametric"]}}
    )
    extra = raw.http_response.json()["agentkit"]
    assert extra["route"]["targets"] == ["parametric"] and extra["from_memory"] is True


def test_raw_model_honours_a_json_schema(client: openai.OpenAI, llm: SlowLLM) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    completion = client.chat.completions.create(
        model="agentkit/raw",
        messages=[{"role": "system", "content": "Reply in JSON."}, *ask("Pick a number")],
        response_format=cast(Any, {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}}),
        max_tokens=20,
        temperature=0,
    )
    assert json.loads(completion.choices[0].message.content or "") == {"n": 0}
    messages, options = llm.calls[-1]
    assert options.json_schema == schema and options.max_tokens == 20
    assert [m.role for m in messages] == ["system", "user"]  # no agent prompt around it


def test_raw_model_takes_llama_cpp_style_grammar_and_schema(client: openai.OpenAI, llm: SlowLLM) -> None:
    client.chat.completions.create(model="agentkit/raw", messages=ask("yes?"), extra_body={"grammar": 'root ::= "yes"'})
    assert llm.calls[-1][1].grammar == 'root ::= "yes"'
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.chat.completions.create(
        model="agentkit/raw", messages=ask("a?"), response_format=cast(Any, {"type": "json_object", "schema": schema})
    )
    assert llm.calls[-1][1].json_schema == schema


def test_raw_model_streams(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="agentkit/raw", messages=ask("Say something"), stream=True, stream_options={"include_usage": True}
    )
    content, _, _, usage = collect(stream)
    assert content == "Reasoning: no sources were given.\nAnswer: I do not know."
    assert usage is not None and usage.completion_tokens > 0


# --- errors ----------------------------------------------------------------------------------------


def test_a_missing_or_wrong_token_is_401(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="agentkit", messages=ask("hi"))
    assert "Bearer" in str(err.value)
    for headers in ({}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = httpx.get(url + "/v1/models", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"


def test_an_unknown_model_is_400_naming_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o", messages=ask("hi"))
    assert err.value.code == "model_not_found"
    assert "agentkit/raw" in err.value.message


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"model": "agentkit"}', 400, "missing_messages"),
        (b'{"model": "agentkit", "messages": []}', 400, "missing_messages"),
        (b'{"model": "agentkit", "messages": [{"role": "assistant", "content": "hi"}]}', 422, "invalid_value"),
        (b'{"model": "agentkit", "messages": [{"role": "user", "content": "   "}]}', 422, "invalid_value"),
        (b'{"model": "agentkit", "messages": [{"role": "user", "content": "hi"}], "n": 2}', 422, "invalid_value"),
        (b'{"model": "agentkit/raw", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}', 422, "invalid_value"),
        (b'{"model": "agentkit", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}', 422, "unsupported_parameter"),
        (b'{"model": "agentkit", "messages": [{"role": "user", "content": "hi"}], "agentkit": {"route": ["nope"]}}', 400, "unknown_source"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(url: str, body: bytes, status: int, code: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    response = httpx.post(url + "/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


def test_a_body_over_the_limit_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="agentkit", messages=ask("x" * 40_000))
    assert err.value.status_code == 413
    assert "--max-body" in err.value.message


def test_unknown_paths_are_404_in_openai_shape(url: str) -> None:
    response = httpx.get(url + "/v1/embeddings")
    assert response.status_code == 404 and "/v1/chat/completions" in response.json()["error"]["message"]


def test_requests_over_the_concurrency_limit_get_429_with_retry_after() -> None:
    gate = threading.Event()
    app = create_app(Agent(SlowLLM(gate=gate), [docs()]), max_concurrency=2)
    with ServerThread(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        held = [client.chat.completions.create(model="agentkit", messages=ask(q), stream=True) for q in list(QUESTIONS)[:2]]
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"))
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.code == "concurrency_limit_exceeded"
        gate.set()
        for stream in held:
            assert collect(stream)[2]["citations"]
        # The slots are free again.
        deadline = time.monotonic() + 5
        while httpx.get(base + "/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?")).choices


def test_a_client_disconnecting_mid_stream_stops_generation() -> None:
    llm = SlowLLM("Reasoning: r.\nAnswer: " + "word " * 400 + "[1]", delay=0.01)
    app = create_app(Agent(llm, [docs()]))
    with ServerThread(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        stream = client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True)
        for i, _ in enumerate(stream):
            if i == 5:
                break
        stream.close()
        assert llm.closed.wait(5), "generation went on after the client left"
        assert llm.produced < 400
        deadline = time.monotonic() + 5
        while httpx.get(base + "/health").json()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(base + "/health").json()["active"] == 0


def test_a_model_failing_mid_stream_reaches_the_client_as_an_error() -> None:
    class Failing(FakeLLM):
        def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
            yield Delta("Answer: par")
            raise RuntimeError("GPU fell off the bus")

    with ServerThread(create_app(Agent(Failing(), [docs()]))) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.APIError, match="GPU fell off the bus"):
            collect(client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True))
        with pytest.raises(openai.InternalServerError, match="GPU fell off the bus"):
            client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"))


# --- the streamed reply's split into reasoning and answer -----------------------------------------


def split(pieces: list[str]) -> tuple[str, str, bool]:
    s = ReplySplitter()
    out = [x for p in pieces for x in s.feed(p)] + s.finish()
    return "".join(t for k, t in out if k == "reasoning_content"), "".join(t for k, t in out if k == "content"), s.answered


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_splitter_separates_reasoning_from_answer_however_tokens_fall(size: int) -> None:
    reply = "Reasoning: source [1] says so; the answer: is there.\n**Answer:** Tides follow the Moon [1]."
    pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
    assert split(pieces) == ("source [1] says so; the answer: is there.\n", "Tides follow the Moon [1].", True)


def test_splitter_streams_a_reply_without_labels_as_content() -> None:
    assert split(["Tides ", "follow ", "the Moon."]) == ("", "Tides follow the Moon.", True)
    assert split(["Answer:", " yes"]) == ("", "yes", True)
    assert split(["Answer: ", "yes"]) == ("", "yes", True)  # the label's space came with it


@pytest.mark.parametrize("size", [1, 2, 5, 100])
def test_splitter_streams_a_quote_reply_whole_as_reasoning(size: int) -> None:
    reply = 'Quote: [1] "Tides follow the Moon."\nAnswer: the Moon'
    pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
    assert split(pieces) == (reply, "", False)  # not answered: the checked text is sent at the end


def test_splitter_reports_a_reply_that_never_reached_its_answer() -> None:
    assert split(["Reasoning: ", "thinking\n", "Answ"]) == ("thinking\nAnsw", "", False)


# --- limits, sampling and the stream's shape (issue 13) ---------------------------------------------


def test_max_tokens_caps_the_agent_model_and_says_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), max_tokens=4)
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 4
    assert completion.choices[0].finish_reason == "length"
    extra = completion.model_extra["agentkit"]  # type: ignore[index]
    assert any("max_tokens (4 tokens, set by the request)" in w for w in extra["warnings"])
    # Streamed, the finish chunk says the same; without a limit the answer finishes.
    chunks = list(client.chat.completions.create(
        model="agentkit", messages=ask("How do I install agentkit?"), stream=True, max_completion_tokens=4))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    whole = client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"))
    assert whole.choices[0].finish_reason == "stop" and whole.usage is not None and whole.usage.completion_tokens > 4


def test_the_extra_field_is_on_the_very_last_chunk_when_usage_is_included(url: str) -> None:
    body = {"model": "agentkit", "messages": ask("How do I install agentkit?"), "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    assert [c["passage_id"] for c in last["agentkit"]["citations"]] == ["install#0"]
    assert last["agentkit"]["citations"][0]["quote"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert [e for e in events[1:-1] if "citations" in e.get("agentkit", {})] == []  # sent once


def cot_server(reply: Any = None, *, delay: float = 0.0) -> tuple[SlowLLM, Any]:
    """A server over the chain-of-thought reader, whose reply is free text."""
    llm = SlowLLM(reply, delay=delay)
    settings = AgentSettings(reader="cot", focus_embedder="none")
    return llm, ServerThread(create_app(Agent(llm, [docs()], settings=settings)))


def test_a_cot_answer_streams_as_content_while_the_model_is_still_writing() -> None:
    reply = "Reasoning: source [1] says how.\nAnswer: " + "Install agentkit with pip install -e . from a checkout [1]."
    llm, server = cot_server(reply, delay=0.05)
    with server as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        content, before_end = [], None
        for chunk in client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True):
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text and before_end is None:
                before_end = not llm.closed.is_set()
            content.append(text or "")
    assert before_end, "the first content delta should arrive before the model's reply ends"
    assert "".join(content).startswith("Install agentkit with pip")


def test_a_quote_answer_streams_as_content_while_the_model_copies_the_quote() -> None:
    reply = 'Quote: [1] "Install agentkit with pip install -e . from a checkout."\nAnswer: with pip'
    llm = SlowLLM(reply, delay=0.05)
    with ServerThread(create_app(Agent(llm, [docs()]))) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        early: list[bool] = []  # per content delta: did it arrive while the model was still writing?

        def watched(stream: Any) -> Iterator[Any]:
            for c in stream:
                if c.choices and c.choices[0].delta.content:
                    early.append(not llm.closed.is_set())
                yield c

        content, _, extra, _ = collect(watched(client.chat.completions.create(
            model="agentkit", messages=ask("How do I install agentkit?"), stream=True)))
    assert extra["kind"] == "model" and content == extra["text"] and extra.get("revised") is None
    assert early[0] and sum(early) > 3, "the quote should stream word by word before the model's reply ends"
    assert content.endswith("” [1] In short: with pip.")


@pytest.mark.real_model
def test_the_bundled_model_s_quote_answer_streams_as_content_as_it_is_generated() -> None:
    from agentkit.llm.llama_cpp import LlamaCppLLM

    with ServerThread(create_app(Agent(LlamaCppLLM(), [docs()]))) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=120)
        deltas, extra = [], {}
        for c in client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True):
            if c.choices:
                delta = c.choices[0].delta
                deltas += [("reasoning", r) for r in [(delta.model_extra or {}).get("reasoning_content")] if r]
                deltas += [("content", delta.content)] if delta.content else []
            extra = (c.model_extra or {}).get("agentkit") or extra
    kinds = [k for k, _ in deltas]
    last_reasoning = len(kinds) - 1 - kinds[::-1].index("reasoning")
    assert extra["kind"] in ("model", "extractive") and extra["citations"][0]["passage_id"] == "install#0"
    # The quote streams while the model is still writing: several content deltas come before the
    # model's last token, and together the content is exactly the final text.
    assert kinds.index("content") < last_reasoning and kinds[:last_reasoning].count("content") > 3
    assert "".join(t for k, t in deltas if k == "content") == extra["text"]


def test_a_streamed_answer_agentkit_withheld_is_followed_by_the_checked_text() -> None:
    from agentkit.reasoning.citations import REFUSAL

    _, server = cot_server("Reasoning: unsure.\nAnswer: Bananas are blue and square [1].")
    with server as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        content, _, extra, _ = collect(
            client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), stream=True))
    assert extra["kind"] == "refusal" and extra["text"] == REFUSAL and extra["revised"] is True
    assert content.endswith("\n\n" + REFUSAL)


def test_agent_mode_applies_temperature_and_seed_and_names_the_fields_it_ignores() -> None:
    llm, server = cot_server()
    with server as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=20)
        completion = client.chat.completions.create(
            model="agentkit", messages=ask("How do I install agentkit?"), temperature=0.7, seed=42, top_p=0.5,
            stop=["."], presence_penalty=0)
        options = llm.calls[-1][1]
        assert (options.temperature, options.seed) == (0.7, 42)
        [note] = [w for w in completion.model_extra["agentkit"]["warnings"] if w.startswith("ignored")]  # type: ignore[index]
        assert note.startswith("ignored top_p, stop:") and "'agentkit/raw'" in note  # a neutral 0 is not named
        _, _, extra, _ = collect(client.chat.completions.create(
            model="agentkit", messages=ask("How do I install agentkit?"), stream=True, top_p=0.5))
        assert any(w.startswith("ignored top_p:") for w in extra["warnings"])
        # Values that mean "off" are not ignored settings: top_k 0, min_p 0, repeat_penalty 1.
        plain = client.chat.completions.create(model="agentkit", messages=ask("How do I install agentkit?"), top_p=1,
                                               extra_body={"top_k": 0, "min_p": 0, "repeat_penalty": 1})
        assert not any(w.startswith("ignored") for w in plain.model_extra["agentkit"]["warnings"])  # type: ignore[index]
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model="agentkit", messages=ask("hi"), max_tokens=0)


def test_the_readme_streaming_example_reads_the_answer_and_its_quotes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("<!-- streaming-example -->")
    code = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'base_url="http://127.0.0.1:8000/v1"' in code
    code = code.replace("http://127.0.0.1:8000/v1", url + "/v1").replace('api_key="-"', f'api_key="{TOKEN}"')
    code = code.replace("What is agentkit?", "How do I install agentkit?")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Install agentkit with pip" in out and "[1] Install" in out
    assert "“Install agentkit with pip install -e .”" in out


# --- the command ------------------------------------------------------------------------------------

CONFIG = """
llm: {backend: fake}
sources:
  notes: {type: memory, description: "notes"}
"""


def test_agentkit_serve_runs_and_answers(tmp_path: Path) -> None:
    config = tmp_path / "agentkit.yaml"
    config.write_text(CONFIG)
    port = free_port()
    env = {**os.environ, "AGENTKIT_SERVER_TOKEN": TOKEN, "AGENTKIT_DATA_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "agentkit.cli", "--config", str(config), "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "agentkit serve did not come up within 30 s"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="agentkit", messages=ask("What is in my notes?"))
        assert raw.http_response.json()["agentkit"]["route"]["targets"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_binds_loopback_by_default_and_warns_when_exposed_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from agentkit.cli import cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("AGENTKIT_SERVER_TOKEN", raising=False)
    config = tmp_path / "agentkit.yaml"
    config.write_text(CONFIG)
    runner = CliRunner()
    quiet = runner.invoke(cli, ["--config", str(config), "serve"])
    assert quiet.exit_code == 0, quiet.output
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    assert "warning" not in quiet.output
    loud = runner.invoke(cli, ["--config", str(config), "serve", "--host", "0.0.0.0"])
    assert "without a token" in loud.output
    guarded = runner.invoke(cli, ["--config", str(config), "serve", "--host", "0.0.0.0", "--token", "t"])
    assert "without a token" not in guarded.output


# --- hardening: browsers, resource bounds (issue 12, items 6 and 8) ----------------------------------


def guarded(token: str | None = None, **kw: Any) -> ServerThread:
    return ServerThread(create_app(Agent(SlowLLM(), [docs()]), token=token, **kw))


def chat_body(question: str = "How do I install agentkit?", model: str = "agentkit") -> bytes:
    return json.dumps({"model": model, "messages": ask(question)}).encode()


def test_a_dns_rebinding_page_is_refused_by_its_host_name() -> None:
    # The page at http://evil.example:PORT made evil.example resolve to 127.0.0.1: the browser
    # sends the page's own name as Host and its own origin, so to the browser it is same-origin.
    with guarded() as base:
        port = base.rsplit(":", 1)[1]
        rebinding = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", "Content-Type": "application/json"}
        response = httpx.post(base + "/v1/chat/completions", content=chat_body(), headers=rebinding)
        assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed"
        assert "server.allowed_hosts" in response.json()["error"]["message"]
        assert "install#0" not in response.text
        assert httpx.get(base + "/health", headers={"Host": "evil.example"}).status_code == 403
        # The names a local client uses still work.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]"):
            assert httpx.get(base + "/v1/models", headers={"Host": host}).status_code == 200, host
    with guarded(allowed_hosts=["gpu.lan"]) as base:
        assert httpx.get(base + "/v1/models", headers={"Host": "gpu.lan:8000"}).status_code == 200
        assert httpx.get(base + "/v1/models", headers={"Host": "evil.example"}).status_code == 403
    with guarded(token=TOKEN) as base:  # a page cannot hold the token: any name may reach it
        auth = {"Authorization": f"Bearer {TOKEN}", "Host": "gpu.lan"}
        assert httpx.get(base + "/v1/models", headers=auth).status_code == 200


def test_a_cross_origin_page_cannot_post_text_plain_to_localhost() -> None:
    with guarded() as base:
        # A "simple" request, sent by any page without a preflight: refused by its Origin.
        simple = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
        response = httpx.post(base + "/v1/chat/completions", content=chat_body(), headers=simple)
        assert response.status_code == 403 and response.json()["error"]["code"] == "origin_not_allowed"
        assert "server.cors_origins" in response.json()["error"]["message"]
        assert "access-control-allow-origin" not in response.headers
        # Without an Origin (curl, a form-encoded post) the body must still be declared JSON.
        for kind in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": kind} if kind else {}
            response = httpx.post(base + "/v1/chat/completions", content=chat_body(), headers=headers)
            assert response.status_code == 415, kind
            assert response.json()["error"]["code"] == "unsupported_media_type"
            assert "Content-Type: application/json" in response.json()["error"]["message"]
        count = httpx.post(base + "/extras/tokenize/count", content=b'{"input": "a b"}', headers={"Content-Type": "text/plain"})
        assert count.status_code == 415


def test_a_page_served_from_the_same_origin_keeps_working() -> None:
    with guarded() as base:
        same = {"Origin": base, "Content-Type": "application/json; charset=utf-8"}
        response = httpx.post(base + "/v1/chat/completions", content=chat_body(), headers=same)
        assert response.status_code == 200, response.text
        assert response.json()["agentkit"]["passages"][0] == "install#0"
        assert "access-control-allow-origin" not in response.headers  # no CORS unless configured


def test_cors_headers_go_only_to_configured_origins() -> None:
    app_origin = "https://notes.example"
    with guarded(cors_origins=[app_origin]) as base:
        preflight = httpx.options(
            base + "/v1/chat/completions",
            headers={"Origin": app_origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == app_origin
        response = httpx.post(base + "/v1/chat/completions", content=chat_body(),
                              headers={"Origin": app_origin, "Content-Type": "application/json"})
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == app_origin
        other = httpx.post(base + "/v1/chat/completions", content=chat_body(),
                           headers={"Origin": "https://evil.example", "Content-Type": "application/json"})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_deeply_nested_json_is_a_400_not_a_500() -> None:
    with guarded() as base:
        headers = {"Content-Type": "application/json"}
        for body in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, json.dumps({"model": "agentkit/raw",
                     "messages": ask("x"), "response_format": {"type": "json_object", "schema": _nested(500)}}).encode()):
            response = httpx.post(base + "/v1/chat/completions", content=body, headers=headers)
            assert response.status_code == 400, response.text[:200]
            error = response.json()["error"]
            assert error["code"] == "invalid_json" and "64 levels" in error["message"]


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def test_a_grammar_or_schema_over_the_limit_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="agentkit/raw", messages=ask("x"), extra_body={"grammar": 'root ::= "' + "y" * 20_000 + '"'})
    assert err.value.code == "grammar_too_large" and "16384" in err.value.message
    assert "server.max_grammar_chars" in err.value.message
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(800)}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="agentkit/raw", messages=ask("x"), response_format=cast(Any, {"type": "json_object", "schema": schema}))
    assert err.value.code == "grammar_too_large" and err.value.param == "response_format"


def test_the_compiled_grammar_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama_cpp itself is not needed: the cache logic sits in front of its compiler.
    import types

    from agentkit.llm import llama_cpp as backend

    compiled: list[str] = []
    fake = types.ModuleType("llama_cpp.llama_grammar")
    fake.LlamaGrammar = types.SimpleNamespace(from_string=lambda gbnf, verbose=False: compiled.append(gbnf) or gbnf)  # type: ignore[attr-defined]
    fake.json_schema_to_gbnf = lambda schema: f"root ::= {schema!r}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_grammar", fake)
    monkeypatch.setattr(backend, "_check_grammar", lambda llama, gbnf, what: None)
    llm = backend.LlamaCppLLM()
    for i in range(10 * backend.GRAMMAR_CACHE_SIZE):
        llm._grammar(None, GenerationOptions(grammar=f'root ::= "{i}"'))
        llm._grammar(None, GenerationOptions(json_schema={"const": i}))
        llm._grammar(None, GenerationOptions(grammar='root ::= "hot"'))  # in use all along: stays cached
    assert len(llm._grammars) <= backend.GRAMMAR_CACHE_SIZE
    assert compiled.count('root ::= "hot"') == 1


def test_a_non_streaming_client_that_disconnects_stops_its_generation() -> None:
    for model in ("agentkit", "agentkit/raw"):
        llm = SlowLLM("Reasoning: r.\nAnswer: " + "word " * 400 + "[1]", delay=0.01)
        with ServerThread(create_app(Agent(llm, [docs()]))) as base:
            body = json.dumps({"model": model, "messages": ask("How do I install agentkit?"), "max_tokens": 2000}).encode()
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(base + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=0.5)
            assert llm.closed.wait(5), f"{model}: generation went on after the client left"
            assert llm.produced < 400, model
            deadline = time.monotonic() + 5
            while httpx.get(base + "/health").json()["active"] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert httpx.get(base + "/health").json()["active"] == 0


def test_token_counting_takes_a_concurrency_slot() -> None:
    gate = threading.Event()

    class Blocking(SlowLLM):
        def count_tokens(self, text: str) -> int:
            if text == "hold":
                gate.wait(10)
            return super().count_tokens(text)

    with ServerThread(create_app(Agent(Blocking(), [docs()]), max_concurrency=1)) as base:
        headers = {"Content-Type": "application/json"}
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.post, base + "/extras/tokenize/count", content=b'{"input": "hold"}', headers=headers, timeout=20)
            deadline = time.monotonic() + 5
            while httpx.get(base + "/health").json()["active"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            busy = httpx.post(base + "/extras/tokenize/count", content=b'{"input": "a b c"}', headers=headers)
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "concurrency_limit_exceeded"
            gate.set()
            assert held.result().json() == {"count": 1}
        assert httpx.post(base + "/extras/tokenize/count", content=b'{"input": "a b c"}', headers=headers).json() == {"count": 3}


def test_a_thousand_history_messages_are_trimmed_in_linear_time_and_leave_room_for_evidence() -> None:
    class Counting(SlowLLM):
        def __init__(self) -> None:
            super().__init__()
            self.counted = 0  # message tokens counted over all calls: the trimming's work

        def count_message_tokens(self, messages: Sequence[Message]) -> int:
            self.counted += len(messages)
            return super().count_message_tokens(messages)

    llm = Counting()
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "chatter " * 20} for i in range(1_000)]
    body = json.dumps({"model": "agentkit", "messages": [*history, *ask("How do I install agentkit?")]}).encode()
    manual = MemorySource("docs", "agentkit installation manual")
    manual.add([Passage(f"install#{i}", f"Install agentkit, step {i}: " + "details " * 40, "Install") for i in range(5)])
    # The chain-of-thought reader shows whole passages, as many as the evidence room takes.
    agent = Agent(llm, [manual], settings=AgentSettings(reader="cot", verify="off"))
    with ServerThread(create_app(agent, max_body_bytes=1 << 20)) as base:
        response = httpx.post(base + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    extra = response.json()["agentkit"]
    assert extra["route"]["targets"] == ["docs"] and not extra["warnings"], extra["warnings"]
    # Re-rendering after each dropped pair counted ~250,000 messages; once per prompt is ~ a few thousand.
    assert llm.counted < 10_000, llm.counted
    prompt = " ".join(m.content for m in llm.calls[-1][0])
    assert "turn 999 " in prompt  # the newest turns are kept
    # History gives way to the evidence: all five retrieved passages fit beside it.
    assert sorted(extra["passages"]) == [f"install#{i}" for i in range(5)]
    assert all(f"step {i}:" in prompt for i in range(5))


def test_serve_takes_allowed_hosts_and_cors_origins_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from agentkit.cli import cli

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.delenv("AGENTKIT_SERVER_TOKEN", raising=False)
    plain, configured = tmp_path / "plain.yaml", tmp_path / "configured.yaml"
    plain.write_text(CONFIG)
    configured.write_text(CONFIG + "server: {allowed_hosts: [testserver], cors_origins: ['https://notes.example'], max_grammar_chars: 100}\n")
    for config in (plain, configured):
        result = CliRunner().invoke(cli, ["--config", str(config), "serve"])
        assert result.exit_code == 0, result.output
    # TestClient calls itself "testserver": a name, refused unless the config lists it.
    assert TestClient(apps[0]).get("/v1/models").status_code == 403
    client = TestClient(apps[1])
    assert client.get("/v1/models").status_code == 200
    allowed = client.get("/v1/models", headers={"Origin": "https://notes.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://notes.example"
    body = {"model": "agentkit/raw", "messages": ask("x"), "grammar": "root ::= " + '"y" ' * 40}
    assert client.post("/v1/chat/completions", json=body).json()["error"]["code"] == "grammar_too_large"
