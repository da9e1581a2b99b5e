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
from agentkit.llm.base import Delta, GenerationOptions
from agentkit.server.app import create_app
from agentkit.server.background import ServerThread, free_port
from agentkit.server.protocol import ReplySplitter
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


def test_health_answers_without_a_token(url: str) -> None:
    data = httpx.get(url + "/health").json()
    assert data["status"] == "ok" and data["sources"] == ["docs"] and data["max_concurrency"] == 8


def test_answer_carries_citations_and_route_in_the_extra_field(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="agentkit", messages=ask("How do I install agentkit?"))
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert (completion.choices[0].message.content or "").endswith("[1]")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extra = raw.http_response.json()["agentkit"]
    assert [c["passage_id"] for c in extra["citations"]] == ["install#0"]
    assert extra["route"]["targets"] == ["docs"]
    assert extra["passages"][0] == "install#0"
    assert extra["text"] == completion.choices[0].message.content
    assert set(extra["timings"]) >= {"route_ms", "retrieve_ms", "generate_ms", "total_ms"}


def collect(stream: Any) -> tuple[str, str, dict[str, Any], Any]:
    """(content, reasoning, agentkit field of the final chunk, usage) of a streamed answer."""
    content, reasoning, extra, usage = [], [], {}, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
            if choice.finish_reason is not None:
                extra = (chunk.model_extra or {}).get("agentkit", {})
    return "".join(content), "".join(reasoning), extra, usage


def test_stream_sends_standard_chunks_and_ends_with_the_extra_field(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="agentkit", messages=ask("How do I install agentkit?"), stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, extra, usage = collect(stream)
    assert content == extra["text"] == "Install agentkit with pip install -e — “Install agentkit with pip install -e .” [1]"
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


@pytest.mark.parametrize("size", [1, 2, 5, 100])
def test_splitter_streams_a_quote_reply_whole_as_reasoning(size: int) -> None:
    reply = 'Quote: [1] "Tides follow the Moon."\nAnswer: the Moon'
    pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
    assert split(pieces) == (reply, "", False)  # not answered: the checked text is sent at the end


def test_splitter_reports_a_reply_that_never_reached_its_answer() -> None:
    assert split(["Reasoning: ", "thinking\n", "Answ"]) == ("thinking\nAnsw", "", False)


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
