"""The openai_compat backend against agentkit serve, a scripted misbehaving server, and llama.cpp's own.

Retries, timeouts and request bodies are checked on a stdlib HTTP server; `real_model` tests start
`python -m llama_cpp.server` on the bundled GGUF.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typing_extensions import Self

from agentkit import Agent, MemorySource, Passage
from agentkit.config import parse_config
from agentkit.errors import ModelError, PromptTooLong
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.llm.openai_compat import (
    CHARS_PER_TOKEN,
    ModelUnavailable,
    OpenAICompatConfig,
    OpenAICompatLLM,
)
from agentkit.server.app import create_app
from agentkit.server.background import ServerThread, free_port
from agentkit.testing import FakeLLM
from agentkit.types import Message

TOKEN = "k3y"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
}


def docs() -> MemorySource:
    src = MemorySource("docs", "agentkit documentation: install, router")
    src.add(
        [
            Passage("install#0", "Install agentkit with pip install -e . from a checkout.", "Install"),
            Passage("router#0", "The router decides per question whether to retrieve.", "Router"),
        ]
    )
    return src


def user(text: str) -> list[Message]:
    return [Message("user", text)]


# --- against agentkit serve ------------------------------------------------------------------------


class Tracking(FakeLLM):
    """FakeLLM that streams slowly and says when its stream was closed."""

    def __init__(self) -> None:
        super().__init__(context_length=1234)
        self.closed = threading.Event()

    def stream(self, messages: Any, options: GenerationOptions | None = None) -> Iterator[Any]:
        inner = super().stream(messages, options)

        def run() -> Iterator[Any]:
            try:
                for delta in inner:
                    time.sleep(0.01)
                    yield delta
            finally:
                self.closed.set()

        return run()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Tracking]]:
    llm = Tracking()
    with ServerThread(create_app(Agent(llm, [docs()]), token=TOKEN)) as url:
        yield url + "/v1", llm


@pytest.fixture()
def remote(served: tuple[str, Tracking]) -> Iterator[OpenAICompatLLM]:
    llm = OpenAICompatLLM(served[0], "agentkit/raw", api_key=TOKEN, max_retries=0)
    yield llm
    llm.close()


def test_it_is_an_llm_and_registered_as_openai_compat(remote: OpenAICompatLLM) -> None:
    from agentkit.plugins import registry

    assert isinstance(remote, LLM)
    assert registry().llm("openai_compat") is OpenAICompatLLM


def test_chat_and_stream_through_agentkit_serve(remote: OpenAICompatLLM) -> None:
    completion = remote.chat(user("hello"), GenerationOptions(max_tokens=50))
    assert completion.text == "Reasoning: no sources were given.\nAnswer: I do not know."
    assert completion.usage.completion_tokens > 0 and completion.finish_reason == "stop"
    deltas = list(remote.stream(user("hello")))
    assert "".join(d.text for d in deltas) == completion.text
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None
    assert deltas[-1].usage.prompt_tokens > 0


def test_context_and_token_counts_come_from_the_server(remote: OpenAICompatLLM) -> None:
    assert remote.context_length == 1234  # the served FakeLLM's
    assert remote.count_tokens("one two three four") == 4  # FakeLLM counts words, not characters
    assert remote.count_message_tokens(user("one two")) == 2 + 4 + 2


def test_constraints_reach_the_served_model(remote: OpenAICompatLLM, served: tuple[str, Tracking]) -> None:
    reply = remote.chat(user("weather?"), GenerationOptions(json_schema=SCHEMA))
    assert json.loads(reply.text) == {"city": "", "sunny": False}
    assert served[1].calls[-1][1].json_schema == SCHEMA
    remote.chat(user("yes?"), GenerationOptions(grammar='root ::= "yes"'))
    assert served[1].calls[-1][1].grammar == 'root ::= "yes"'


def test_an_agent_on_a_served_model_answers_with_citations(
    served: tuple[str, Tracking], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentkit.plugins import build_llm

    monkeypatch.setenv("TEST_MODEL_KEY", TOKEN)
    config = parse_config(
        f'llm: {{backend: openai_compat, base_url: "{served[0]}", model: agentkit/raw, api_key: "${{TEST_MODEL_KEY}}"}}',
        origin="test.yaml",
    )
    assert config.llm["api_key"] == TOKEN
    agent = Agent(build_llm(config.llm), [docs()])
    assert isinstance(agent.llm, OpenAICompatLLM)
    answer = agent.ask("How do I install agentkit?")
    assert answer.route is not None and answer.route.targets == ["docs"]
    assert answer.cited_ids == ["install#0"]
    assert answer.usage.completion_tokens > 0


def test_closing_a_stream_stops_the_served_model(served: tuple[str, Tracking]) -> None:
    url, llm = served
    long = OpenAICompatLLM(url, "agentkit/raw", api_key=TOKEN)
    llm.closed.clear()
    stream = long.stream(user("hello"))
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert llm.closed.wait(5)
    long.close()


def test_a_wrong_key_is_an_error_that_names_the_setting(served: tuple[str, Tracking]) -> None:
    llm = OpenAICompatLLM(served[0], "agentkit/raw", api_key="wrong", max_retries=0)
    with pytest.raises(ModelError, match="llm.api_key"):
        llm.chat(user("hi"))


def test_an_unreachable_server_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAICompatLLM(url, "m", max_retries=1)
    with pytest.raises(ModelUnavailable) as err:
        llm.chat(user("hi"))
    assert url in str(err.value) and "llm.base_url" in str(err.value) and "2 attempt" in str(err.value)
    assert llm.context_length == 4096  # a type check or budget must not fail because the server is down


def test_the_config_rejects_a_url_without_a_scheme() -> None:
    with pytest.raises(ValueError, match="http://"):
        OpenAICompatConfig(base_url="gpu-box:8080/v1")


# --- against a scripted, misbehaving server ---------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]
Script = Callable[[str, str, dict[str, Any]], Reply]


class Scripted:
    """A stdlib HTTP server answering by `script(method, path, body)`; it records every request."""

    def __init__(self, script: Script) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, method: str) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                outer.requests.append((method, self.path, body))
                status, headers, data = script(method, self.path, body)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [b for m, p, b in self.requests if m == "POST" and p == path]


def ok(text: str = "fine") -> Reply:
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    return 200, {}, json.dumps(body).encode()


def models(owner: str, **extra: Any) -> Reply:
    return 200, {}, json.dumps({"object": "list", "data": [{"id": "served-model", "owned_by": owner, **extra}]}).encode()


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, headers or {}, json.dumps({"error": {"message": message, "type": "x", "code": None}}).encode()


def test_503_twice_then_200_is_retried() -> None:
    count = {"n": 0}

    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        count["n"] += 1
        return error(503, "loading model") if count["n"] <= 2 else ok("third time")

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url, "m", max_retries=2, constraints="openai")
        assert llm.chat(user("hi")).text == "third time"
        assert count["n"] == 3
        count["n"] = 0
        impatient = OpenAICompatLLM(server.url, "m", max_retries=1, constraints="openai")
        with pytest.raises(ModelUnavailable, match="kept failing.*503.*loading model"):
            impatient.chat(user("hi"))


def test_429_waits_for_retry_after() -> None:
    count = {"n": 0}

    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        count["n"] += 1
        return error(429, "slow down", {"Retry-After": "0.3"}) if count["n"] == 1 else ok()

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url, "m", constraints="openai")
        t = time.perf_counter()
        llm.chat(user("hi"))
        assert time.perf_counter() - t >= 0.3


def test_a_slow_server_times_out_with_a_hint() -> None:
    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        time.sleep(1.0)
        return ok()

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url, "m", timeout=0.2, constraints="openai")
        t = time.perf_counter()
        with pytest.raises(ModelUnavailable, match="llm.timeout"):
            llm.chat(user("hi"))
        assert time.perf_counter() - t < 0.9  # a read timeout is not retried


def test_a_context_overflow_becomes_prompt_too_long() -> None:
    overflow = error(400, "Requested tokens (5000) exceed context window of 2048")
    with Scripted(lambda m, p, b: overflow) as server, pytest.raises(PromptTooLong, match="llm.context_length"):
        OpenAICompatLLM(server.url, "m", constraints="openai").chat(user("hi"))


def test_vllm_is_detected_and_gets_its_own_fields() -> None:
    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        if path == "/v1/models":
            return models("vllm", max_model_len=8192)
        if path == "/tokenize":
            n = len(body["prompt"].split())
            return 200, {}, json.dumps({"count": n, "tokens": [1] * n, "max_model_len": 8192}).encode()
        return ok('{"city": "Oslo", "sunny": true}')

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url)  # no model: the first one listed
        assert llm.context_length == 8192
        llm.chat(user("hi"), GenerationOptions(json_schema=SCHEMA, repeat_penalty=1.1))
        body = server.posts("/v1/chat/completions")[-1]
        assert body["model"] == "served-model"
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "agentkit", "schema": SCHEMA}}
        assert body["repetition_penalty"] == 1.1 and "repeat_penalty" not in body
        llm.chat(user("hi"), GenerationOptions(grammar='root ::= "a"'))
        assert server.posts("/v1/chat/completions")[-1]["guided_grammar"] == 'root ::= "a"'
        assert llm.count_tokens("some more text") == 3
        assert server.posts("/tokenize")[-1] == {"model": "served-model", "prompt": "some more text", "add_special_tokens": False}


def test_llama_server_is_detected_by_its_models_list_and_props() -> None:
    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        if path == "/v1/models":
            return models("llamacpp")
        if path == "/props":
            return 200, {}, json.dumps({"default_generation_settings": {"n_ctx": 2048}}).encode()
        if path == "/tokenize":
            return 200, {}, json.dumps({"tokens": list(range(len(body["content"].split())))}).encode()
        return ok("{}")

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url, "m")
        assert llm.context_length == 2048
        llm.chat(user("hi"), GenerationOptions(json_schema=SCHEMA, logprobs=2))
        body = server.posts("/v1/chat/completions")[-1]
        assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}
        assert body["logprobs"] is True and body["top_logprobs"] == 2
        assert llm.count_tokens("a b c") == 3


def test_sampling_fields_go_out_in_each_servers_spelling() -> None:
    owner = {"value": "llamacpp"}

    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        return models(owner["value"]) if path == "/v1/models" else ok()

    sampling = GenerationOptions(top_p=0.5, top_k=5, min_p=0.1, presence_penalty=0.3, frequency_penalty=-0.2, repeat_penalty=1.1)
    standard = {"top_p": 0.5, "presence_penalty": 0.3, "frequency_penalty": -0.2}
    for served, extra in [
        ("llamacpp", {"top_k": 5, "min_p": 0.1, "repeat_penalty": 1.1}),
        ("vllm", {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1}),
        ("openai", {}),  # OpenAI has no such fields: sending them would be a 400
    ]:
        owner["value"] = served
        with Scripted(script) as server:
            OpenAICompatLLM(server.url, "m").chat(user("hi"), sampling)
            body = server.posts("/v1/chat/completions")[-1]
        assert {k: body[k] for k in standard} == standard, served
        assert {k: body[k] for k in ("top_k", "min_p", "repeat_penalty", "repetition_penalty") if k in body} == extra, served
    with Scripted(script) as server:
        OpenAICompatLLM(server.url, "m").chat(user("hi"), GenerationOptions())
        body = server.posts("/v1/chat/completions")[-1]
    assert not {"top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty"} & body.keys()  # unset: the server's defaults


def test_plain_openai_refuses_a_grammar_and_counts_by_characters() -> None:
    def script(method: str, path: str, body: dict[str, Any]) -> Reply:
        return models("openai") if path == "/v1/models" else error(404, "not found") if "tokenize" in path else ok()

    with Scripted(script) as server:
        llm = OpenAICompatLLM(server.url, "m")
        with pytest.raises(NotImplementedError, match="json_schema"):
            llm.chat(user("hi"), GenerationOptions(grammar='root ::= "a"'))
        assert llm.count_tokens("x" * 30) == int(30 / CHARS_PER_TOKEN)
        none = OpenAICompatLLM(server.url, "m", constraints="none")
        with pytest.raises(NotImplementedError, match="constraints"):
            none.chat(user("hi"), GenerationOptions(json_schema=SCHEMA))


def test_logprobs_are_parsed() -> None:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Hi"},
        "finish_reason": "stop",
        "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5}]}]},
    }
    reply: Reply = (200, {}, json.dumps({"choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode())
    with Scripted(lambda m, p, b: reply) as server:
        out = OpenAICompatLLM(server.url, "m", constraints="openai").chat(user("hi"), GenerationOptions(logprobs=2))
    assert out.logprobs is not None and out.logprobs[0].token == "Hi"
    assert out.logprobs[0].top == {"Hi": -0.1, "Yo": -2.5}


def test_an_error_event_mid_stream_raises() -> None:
    events = b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\ndata: {"error": {"message": "out of memory"}}\n\n'
    with Scripted(lambda m, p, b: (200, {"Content-Type": "text/event-stream"}, events)) as server:
        stream = OpenAICompatLLM(server.url, "m", constraints="openai").stream(user("hi"))
        assert next(stream).text == "par"
        with pytest.raises(ModelError, match="out of memory"):
            next(stream)


SSE = {"Content-Type": "text/event-stream"}


def piece(text: str, finish: str | None = None) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_a_complete_stream_keeps_its_finish_reason() -> None:
    events = piece("Hel") + piece("lo", "length") + b"data: [DONE]\n\n"
    with Scripted(lambda m, p, b: (200, SSE, events)) as server:
        deltas = list(OpenAICompatLLM(server.url, "m", constraints="openai").stream(user("hi")))
    assert "".join(d.text for d in deltas) == "Hello" and deltas[-1].finish_reason == "length"


def test_a_stream_that_ends_without_a_finish_reason_is_an_error_not_a_stop() -> None:
    # The server (or a proxy) closed the stream cleanly mid-answer: no finish_reason, no [DONE].
    events = piece("The answer is")
    with Scripted(lambda m, p, b: (200, SSE, events)) as server:
        stream = OpenAICompatLLM(server.url, "m", constraints="openai").stream(user("hi"))
        assert next(stream).text == "The answer is"
        with pytest.raises(ModelUnavailable, match="without a finish_reason.*cut off") as err:
            next(stream)
    assert server.url in str(err.value)


def test_a_connection_dropped_mid_stream_is_an_error() -> None:
    events = piece("The answer is")
    # Promise more bytes than are sent, then close: the client sees the body end early.
    headers = {**SSE, "Content-Length": str(len(events) + 500), "Connection": "close"}
    with Scripted(lambda m, p, b: (200, headers, events)) as server:
        stream = OpenAICompatLLM(server.url, "m", constraints="openai", timeout=5).stream(user("hi"))
        with pytest.raises(ModelUnavailable, match="stopped sending mid-answer") as err:
            list(stream)
    assert server.url in str(err.value) and "llm.timeout" in str(err.value)


def test_an_unparseable_event_is_an_error_that_shows_the_event() -> None:
    events = piece("par") + b"data: {'not': json\n\n" + piece("tial", "stop")
    with Scripted(lambda m, p, b: (200, SSE, events)) as server:
        stream = OpenAICompatLLM(server.url, "m", constraints="openai").stream(user("hi"))
        assert next(stream).text == "par"
        with pytest.raises(ModelError, match="not JSON") as err:
            next(stream)
    assert "{'not': json" in str(err.value) and server.url in str(err.value)


def test_openai_environment_variables_do_not_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client would read these for api.openai.com; a self-hosted server must not receive them.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-send")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-do-not-send")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://elsewhere.invalid/v1")
    seen: list[dict[str, str]] = []

    with Scripted(lambda m, p, b: ok()) as server:
        handler = server.httpd.RequestHandlerClass
        answer = handler._answer

        def record(self: Any, method: str) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            answer(self, method)

        handler._answer = record  # type: ignore[method-assign]
        OpenAICompatLLM(server.url, "m", constraints="openai").chat(user("hi"))
        OpenAICompatLLM(server.url, "m", api_key="mine", constraints="openai").chat(user("hi"))
    assert "authorization" not in seen[0] and "openai-organization" not in seen[0]
    assert seen[1]["authorization"] == "Bearer mine"


def test_a_non_openai_answer_names_the_url() -> None:
    with Scripted(lambda m, p, b: (200, {"Content-Type": "text/html"}, b"<html>login</html>")) as server:
        llm = OpenAICompatLLM(server.url, "m", constraints="openai")
        with pytest.raises(ModelError, match="base_url") as err:
            llm.chat(user("hi"))
    assert server.url in str(err.value)


def test_an_old_backoff_setting_still_loads_and_says_it_is_unused(caplog: pytest.LogCaptureFixture) -> None:
    config = OpenAICompatConfig(base_url="http://127.0.0.1:9/v1", backoff=0.5)
    with caplog.at_level("WARNING", logger="agentkit.llm.openai_compat"):
        OpenAICompatLLM.from_config(config)
    assert "remove backoff" in caplog.text


# --- against llama-cpp-python's own server, on the bundled model --------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from agentkit.llm.models import bundled_model_path

    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--seed", "0", "--verbose", "false",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "AGENTKIT_FORBID_REAL_MODELS"}
    # A file, not a pipe: llama.cpp logs enough to fill a pipe and block the server.
    log = tmp_path_factory.mktemp("llama_server") / "log.txt"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"python -m llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("python -m llama_cpp.server did not answer within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.real_model
def test_llama_cpp_server_honours_the_json_schema(llama_server: str) -> None:
    llm = OpenAICompatLLM(llama_server, context_length=2048)
    reply = llm.chat(
        [Message("user", "Describe the weather in Paris as JSON with keys city and sunny.")],
        GenerationOptions(json_schema=SCHEMA, max_tokens=40, temperature=0.0),
    )
    data = json.loads(reply.text)
    assert set(data) == {"city", "sunny"} and isinstance(data["sunny"], bool)


@pytest.mark.real_model
def test_llama_cpp_server_streams_and_counts_with_the_model_tokenizer(llama_server: str) -> None:
    from agentkit.llm.llama_cpp import LlamaCppLLM

    llm = OpenAICompatLLM(llama_server, context_length=2048)
    deltas = list(llm.stream(user("Say hello."), GenerationOptions(max_tokens=8)))
    assert "".join(d.text for d in deltas).strip()
    assert deltas[-1].finish_reason in ("stop", "length") and deltas[-1].usage is not None
    text = "Tides are caused mainly by the Moon."
    assert llm.count_tokens(text) == LlamaCppLLM(n_ctx=512).count_tokens(text)


@pytest.mark.real_model
def test_an_agent_on_llama_cpp_server_retrieves_and_answers(llama_server: str) -> None:
    from agentkit.config import AgentSettings

    agent = Agent(OpenAICompatLLM(llama_server, context_length=2048), [docs()], settings=AgentSettings.model_validate({"max_tokens": 24}))
    answer = agent.ask("How do I install agentkit?")
    assert answer.route is not None and answer.route.targets == ["docs"]
    assert answer.passages[0].id == "install#0"
    assert answer.usage.completion_tokens > 0


def test_the_example_config_is_valid() -> None:
    path = Path(__file__).parents[1] / "configs" / "openai_compat.yaml"
    config = parse_config(path.read_text(), origin=str(path))
    assert config.llm["backend"] == "openai_compat"
