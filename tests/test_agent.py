"""The agent loop with FakeLLM and in-memory sources: routes taken, passages retrieved and cited."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentkit import Agent, MemorySource, Passage
from agentkit.config import AgentSettings
from agentkit.errors import InputError, UnknownSource
from agentkit.testing import FakeLLM
from agentkit.types import PARAMETRIC, AnswerEvent, RetrievalEvent, RouteEvent, StepEvent, TokenEvent


def corpus() -> MemorySource:
    src = MemorySource("docs", "agentkit documentation: installation, configuration and ingestion")
    src.add([
        Passage("install#0", "Install agentkit with pip install -e . from a checkout.", "Installation"),
        Passage("config#0", "Unknown configuration keys are rejected with an error naming the key.", "Configuration"),
        Passage("ingest#0", "Ingestion chunks documents by tokens with overlap.", "Ingestion"),
        Passage("cats#0", "Cats sleep for most of the day.", "Cats"),
    ])
    return src


class Broken:
    name = "broken"
    description = "agentkit documentation mirror"

    def search(self, query: str, k: int = 5, filters: object = None) -> list[Passage]:
        raise ConnectionError("connection refused")


def test_retrieves_and_cites_the_right_passage() -> None:
    agent = Agent(FakeLLM(), [corpus()])
    answer = agent.ask("How do I install agentkit?")
    assert answer.route.targets == ["docs"]
    assert answer.passages[0].id == "install#0"
    assert answer.cited_ids == ["install#0"]
    assert answer.citations[0].passage.source == "docs"
    assert not answer.from_memory and answer.warnings == []
    assert set(answer.timings) >= {"route_ms", "retrieve_ms", "generate_ms", "total_ms"}
    assert answer.usage.completion_tokens > 0


def test_prompt_contains_numbered_evidence_and_question() -> None:
    llm = FakeLLM()
    Agent(llm, [corpus()]).ask("How are configuration keys checked?")
    prompt = llm.last_prompt
    assert prompt.startswith("<sources>\n[1] Configuration")
    assert prompt.rstrip().endswith("Question: How are configuration keys checked?")


def test_events_come_in_order() -> None:
    events = list(Agent(FakeLLM(), [corpus()]).stream("How does ingestion chunk documents?"))
    kinds = [type(e) for e in events]
    assert kinds[0] is RouteEvent and kinds[1] is RetrievalEvent and kinds[-1] is AnswerEvent
    assert TokenEvent in kinds
    streamed = "".join(e.text for e in events if isinstance(e, TokenEvent))
    answer = events[-1].answer
    # The reader's reply streams as it is written; the answer is its short answer, cited.
    assert streamed.startswith('Quote: [1] "') and "\nAnswer: " in streamed
    short = answer.text.split(" — ")[0]
    assert answer.kind == "model" and f"Answer: {short}" in streamed


def test_parametric_route_uses_no_sources() -> None:
    llm = FakeLLM("Reasoning: simple sum.\nAnswer: 5")
    answer = Agent(llm, [corpus()]).ask("what is 2 + 3")
    assert answer.route.targets == [PARAMETRIC]
    assert answer.text == "5" and answer.reasoning == "simple sum."
    assert answer.passages == [] and answer.from_memory and answer.citations == []
    assert "Sources:" not in llm.last_prompt


def test_no_match_falls_back_to_memory_and_says_so() -> None:
    answer = Agent(FakeLLM(), [corpus()]).ask("Who painted the Mona Lisa?")
    assert answer.route.targets == ["docs"]
    assert answer.from_memory and answer.passages == []
    assert any("model's own memory" in w for w in answer.warnings)


def test_failing_source_is_reported_and_others_still_answer() -> None:
    agent = Agent(FakeLLM(), [corpus(), Broken()])
    answer = agent.ask("How do I install agentkit?", route=["docs", "broken"])
    assert answer.cited_ids == ["install#0"]
    assert any("'broken' failed" in w and "connection refused" in w for w in answer.warnings)


def test_only_source_failing_answers_from_memory() -> None:
    answer = Agent(FakeLLM(), [Broken()]).ask("How do I install agentkit?")
    assert answer.from_memory
    assert any("'broken' failed" in w for w in answer.warnings)
    assert any("model's own memory" in w for w in answer.warnings)


def test_citation_to_nothing_is_dropped_and_reported() -> None:
    llm = FakeLLM("Reasoning: r\nAnswer: pip install works [1]. See also [4].")
    answer = Agent(llm, [corpus()], settings=AgentSettings(reader="cot")).ask("How do I install agentkit?")
    assert answer.cited_ids == [answer.passages[0].id]
    assert "[4]" not in answer.text
    assert any("[4]" in w for w in answer.warnings)


def test_empty_question_is_an_input_error() -> None:
    with pytest.raises(InputError, match="empty"):
        Agent(FakeLLM(), [corpus()]).ask("   ")


def test_unknown_forced_route() -> None:
    with pytest.raises(UnknownSource, match="'nope'.*configured: parametric, docs"):
        Agent(FakeLLM(), [corpus()]).ask("q", route=["nope"])


def test_over_long_question_is_trimmed_with_a_warning() -> None:
    llm = FakeLLM(context_length=600)
    agent = Agent(llm, [corpus()], settings=AgentSettings(max_tokens=100))
    answer = agent.ask("install " * 2000)
    assert any("trimmed" in w and "600" in w for w in answer.warnings)
    assert llm.count_message_tokens(llm.calls[-1][0]) <= 600 - 100


def test_evidence_fits_the_token_budget() -> None:
    src = MemorySource("docs", "docs")
    src.add([Passage(f"p{i}", "agentkit install guide " + "filler " * 100) for i in range(20)])
    llm = FakeLLM()
    answer = Agent(llm, [src], settings=AgentSettings(evidence_tokens=300, top_k=20)).ask("agentkit install")
    assert 1 <= len(answer.passages) < 20
    assert sum(len(p.text.split()) for p in answer.passages) <= 300


def test_history_reaches_the_model() -> None:
    llm = FakeLLM()
    from agentkit.types import Message

    Agent(llm, [corpus()]).ask("How do I install it?", history=[Message("user", "Tell me about agentkit"), Message("assistant", "It is a framework.")])
    roles = [m.content for m in llm.calls[-1][0]]
    assert "Tell me about agentkit" in roles and "It is a framework." in roles


def test_multi_step_searches_again_with_the_models_query() -> None:
    def respond(messages, options):
        if options.json_schema is not None:
            searched = "Ingestion" in messages[-1].content
            return {"action": "answer" if searched else "search", "source": "docs", "query": "ingestion chunks tokens"}
        return "Reasoning: found it.\nAnswer: Ingestion chunks by tokens [1]."

    llm = FakeLLM(respond)
    # The reply's [1] need not be the ingestion passage; re-retrieval is tested on its own below.
    agent = Agent(llm, [corpus()], settings=AgentSettings(max_steps=3, reretrieve=False))
    events = list(agent.stream("How do I install agentkit?"))
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert [(s.action, s.query) for s in steps] == [("search", "ingestion chunks tokens"), ("answer", "")]
    answer = events[-1].answer
    assert {p.id for p in answer.passages} >= {"install#0", "ingest#0"}
    schema_calls = [o for _, o in llm.calls if o.json_schema]
    assert schema_calls[0].json_schema["properties"]["source"]["enum"] == ["docs"]


def test_closing_the_stream_stops_generation() -> None:
    llm = FakeLLM("Reasoning: long.\nAnswer: " + "word " * 200)
    stream = Agent(llm, [corpus()]).stream("How do I install agentkit?")
    tokens = 0
    for event in stream:
        if isinstance(event, TokenEvent):
            tokens += 1
            if tokens == 3:
                break
    stream.close()
    assert tokens == 3


def test_aask_and_json() -> None:
    answer = asyncio.run(Agent(FakeLLM(), [corpus()]).aask("How do I install agentkit?"))
    data = json.loads(answer.to_json())
    assert data["citations"][0]["passage_id"] == "install#0"
    assert data["route"]["targets"] == ["docs"]


def test_from_config_builds_sources_and_model(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"data_dir: {tmp_path}\nllm: {{backend: fake}}\nsources:\n  notes: {{type: memory, description: my notes}}\nagent: {{top_k: 2}}\n")
    agent = Agent.from_config(f)
    assert list(agent.sources) == ["notes"] and agent.settings.top_k == 2
    assert isinstance(agent.llm, FakeLLM)


def test_mixed_route_adds_the_models_draft_as_citable_evidence() -> None:
    def respond(messages, options):
        if "own knowledge" in messages[0].content and len(messages) == 2:
            return "agentkit is installed with pip."  # the closed-book draft
        return "Reasoning: both agree.\nAnswer: Use pip install -e . [1]. The model recalls pip too [2]."

    llm = FakeLLM(respond)
    events = list(Agent(llm, [corpus()]).stream("How do I install agentkit?", route=["docs", PARAMETRIC]))
    retrieved = [e.source for e in events if isinstance(e, RetrievalEvent)]
    assert retrieved == ["docs", PARAMETRIC]
    answer = events[-1].answer
    draft = [p for p in answer.passages if p.source == PARAMETRIC]
    assert len(draft) == 1 and draft[0].uri == "model://fake"
    assert draft[0].id in answer.cited_ids and "install#0" in answer.cited_ids
    assert not answer.from_memory


# --- failing and hung sources, while routing too (issue 12, item 2) ------------------------------


class Counting(Broken):
    def __init__(self) -> None:
        self.calls = 0

    def search(self, query: str, k: int = 5, filters: object = None) -> list[Passage]:
        self.calls += 1
        return super().search(query, k, filters)


class Hung:
    """A source whose server accepted the connection and never replies."""

    name = "hung"
    description = "agentkit documentation mirror"

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds

    def search(self, query: str, k: int = 5, filters: object = None) -> list[Passage]:
        import time

        time.sleep(self.seconds)
        return []


def _probing_agent(*sources, timeout: float = 30.0) -> Agent:  # type: ignore[no-untyped-def]
    from agentkit.routing.probe import ProbePolicy
    from agentkit.routing.router import PolicyRouter

    return Agent(FakeLLM(), list(sources), router=PolicyRouter([ProbePolicy()]),
                 settings=AgentSettings(source_timeout=timeout))


def test_source_failing_while_routing_is_a_warning_not_a_silent_memory_answer() -> None:
    broken = Counting()
    answer = _probing_agent(broken).ask("How do I install agentkit?")
    # Before: the probe took the error for "no match", routed to the model, warnings == [].
    assert answer.route.targets == ["broken"]
    assert any("'broken' failed while routing" in w and "connection refused" in w for w in answer.warnings)
    assert any("no source could be searched" in w for w in answer.warnings)
    assert not any("no passage matched" in w for w in answer.warnings)
    assert broken.calls == 1  # not searched again after it failed in routing


def test_a_failing_source_while_routing_does_not_hide_the_others() -> None:
    answer = _probing_agent(corpus(), Counting()).ask("How do I install agentkit?")
    assert answer.cited_ids == ["install#0"]
    assert any("'broken' failed while routing" in w for w in answer.warnings)


def test_source_timeout_bounds_a_lone_source() -> None:
    import time

    t0 = time.monotonic()
    answer = Agent(FakeLLM(), [Hung()], settings=AgentSettings(source_timeout=0.3)).ask(
        "How do I install agentkit?", route=["hung"])
    # Before: one source was searched without the timeout: the full 5 s.
    assert time.monotonic() - t0 < 2.5
    assert any("'hung' did not answer within 0.3 s" in w for w in answer.warnings)


def test_source_timeout_bounds_routing_and_the_search_after_it() -> None:
    import time

    t0 = time.monotonic()
    answer = _probing_agent(Hung(), timeout=0.3).ask("How do I install agentkit?")
    # Before: the probe waited 5 s, took the silence for "no match" and answered from memory.
    assert time.monotonic() - t0 < 2.5
    assert answer.route.targets == ["hung"]
    assert [w for w in answer.warnings if "did not answer" in w] == [
        "source 'hung' did not answer within 0.3 s while routing (agent.source_timeout); answering without it"]


def test_a_silent_server_socket_is_bounded_by_source_timeout() -> None:
    """A real TCP server that accepts and never replies, behind the DICT client."""
    import socket
    import threading
    import time

    from agentkit.knowledge.dictionary import DictionarySource

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accepted, never answered
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        source = DictionarySource("dict", server=f"dict://127.0.0.1:{server.getsockname()[1]}", timeout=30)
        t0 = time.monotonic()
        answer = Agent(FakeLLM(), [source], settings=AgentSettings(source_timeout=0.5)).ask(
            "define serendipity", route=["dict"])
        assert time.monotonic() - t0 < 3
        assert any("'dict' did not answer within 0.5 s" in w for w in answer.warnings)
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()


def test_source_timeout_reaches_the_server_clients() -> None:
    """The clients' own bounds fit in agent.source_timeout, so their precise error comes first
    (before: an Elasticsearch request retried on timeout 4 times, 40 s, while saying "within 10 s")."""
    from agentkit.knowledge.elasticsearch import ElasticsearchSource
    from agentkit.knowledge.qdrant import QdrantSource

    es = ElasticsearchSource("es", url="http://127.0.0.1:9", request_timeout=10, max_retries=3)
    qd = QdrantSource("qd", url="http://127.0.0.1:9", timeout=10)
    Agent(FakeLLM(), [es, qd], settings=AgentSettings(source_timeout=25))
    assert (es.request_timeout, es.max_retries) == (10, 1)  # two tries of 10 s fit in 25 s
    assert qd.timeout == 10
    Agent(FakeLLM(), [es, qd], settings=AgentSettings(source_timeout=4))
    assert (es.request_timeout, es.max_retries) == (4, 0)
    assert qd.timeout == 4
