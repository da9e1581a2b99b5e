"""The agent loop with FakeLLM and in-memory sources: routes taken, passages retrieved and cited."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentkit import Agent, MemorySource, Passage
from agentkit.config import AgentSettings
from agentkit.errors import InputError, UnknownSource
from agentkit.testing import FakeLLM
from agentkit.types import PARAMETRIC, AnswerEvent, ContentEvent, RetrievalEvent, RouteEvent, StepEvent, TokenEvent


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
    # The reader's reply streams as it is written; the answer (its quote, then its short answer,
    # cited) streams as content, the quote while the model still writes.
    assert streamed.startswith('Quote: [1] "') and "\nAnswer: " in streamed
    short = answer.text.split(" In short: ")[1].rstrip(".")
    assert answer.kind == "model" and f"Answer: {short}" in streamed
    assert "".join(e.text for e in events if isinstance(e, ContentEvent)) == answer.text
    assert kinds.index(ContentEvent) < len(kinds) - 1 - kinds[::-1].index(TokenEvent)


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


# --- the Python API as documented: overrides by section, filters, astream, timings ------------


def write_config(tmp_path) -> object:
    f = tmp_path / "c.yaml"
    f.write_text(f"data_dir: {tmp_path}\nllm: {{backend: fake}}\nsources:\n  notes: {{type: memory}}\nagent: {{top_k: 2}}\n")
    return f


def test_from_config_overrides_merge_into_their_section(tmp_path) -> None:
    agent = Agent.from_config(write_config(tmp_path), agent={"max_tokens": 48},
                              sources={"extra": {"type": "memory", "description": "more"}})
    assert (agent.settings.max_tokens, agent.settings.top_k) == (48, 2)  # merged, not replaced
    assert list(agent.sources) == ["notes", "extra"] and agent.sources["extra"].description == "more"
    assert agent.config.agent.max_tokens == 48


def test_from_config_none_with_overrides(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTKIT_CONFIG", raising=False)
    # The packaged default (llama_cpp, a qdrant source); a new backend replaces the whole llm section.
    agent = Agent.from_config(None, agent={"max_tokens": 48}, llm={"backend": "fake"},
                              data_dir=str(tmp_path), router={"policy": "simple"})
    assert agent.settings.max_tokens == 48 and isinstance(agent.llm, FakeLLM)
    assert agent.ask("What is agentkit?", route=["docs"]).route.targets == ["docs"]


def test_from_config_tools_override_replaces_the_configs_tools(tmp_path) -> None:
    f = tmp_path / "tools.yaml"
    f.write_text(f"data_dir: {tmp_path}\nllm: {{backend: fake}}\ntools: [calculate]\nsources:\n  notes: {{type: memory}}\n")
    assert list(Agent.from_config(f).tools) == ["calculate"]
    for none in ([], ()):  # an explicit empty list means no tools, not "the config's"
        agent = Agent.from_config(f, tools=none)
        assert agent.tools == {} and agent.config.tools == []

    def lookup(term: str) -> str:
        """Look a term up."""
        return term

    assert list(Agent.from_config(f, tools=[lookup]).tools) == ["lookup"]  # objects replace too
    assert list(Agent.from_config(f, tools=["convert_units"]).tools) == ["convert_units"]


def test_from_config_override_errors_name_the_key(tmp_path) -> None:
    from agentkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"agent\.max_tokens"):
        Agent.from_config(write_config(tmp_path), agent={"max_tokens": 0})
    with pytest.raises(ConfigError, match=r"unknown key 'max_token'.*max_tokens"):
        Agent.from_config(write_config(tmp_path), agent={"max_token": 48})
    with pytest.raises(TypeError, match=r"'agnet'.*agent"):
        Agent.from_config(write_config(tmp_path), agnet={"max_tokens": 48})


def test_from_config_still_takes_ready_objects(tmp_path) -> None:
    from agentkit import AgentSettings as Exported

    llm = FakeLLM()
    agent = Agent.from_config(write_config(tmp_path), llm=llm, agent=Exported(max_tokens=64, top_k=3))
    assert agent.llm is llm and (agent.settings.max_tokens, agent.settings.top_k) == (64, 3)


def lang_corpus() -> MemorySource:
    src = MemorySource("docs", "agentkit documentation")
    src.add([
        Passage("en#0", "Install agentkit with pip.", "Install", metadata={"lang": "en"}),
        Passage("fr#0", "Installez agentkit avec pip install agentkit.", "Installer", metadata={"lang": "fr"}),
    ])
    return src


def test_filters_reach_the_source_search_in_ask_stream_aask_and_astream() -> None:
    agent = Agent(FakeLLM(), [lang_corpus()])
    q = "How do I install agentkit with pip?"
    assert [p.id for p in agent.ask(q, route=["docs"], filters={"lang": "en"}).passages] == ["en#0"]
    retrieved = [e for e in agent.stream(q, route=["docs"], filters={"lang": "fr"}) if isinstance(e, RetrievalEvent)]
    assert [p.id for p in retrieved[0].passages] == ["fr#0"]
    assert [p.id for p in asyncio.run(agent.aask(q, route=["docs"], filters={"lang": ["fr"]})).passages] == ["fr#0"]

    async def collect() -> list:
        return [e async for e in agent.astream(q, route=["docs"], filters={"lang": "en"})]

    events = asyncio.run(collect())
    assert [p.id for p in events[-1].answer.passages] == ["en#0"]


def test_astream_yields_the_same_events_and_stops_generation_when_left() -> None:
    finished: list[bool] = []

    class Watched(FakeLLM):
        def stream(self, messages, options=None):
            done = False
            try:
                yield from super().stream(messages, options)
                done = True
            finally:
                finished.append(done)

    agent = Agent(Watched("Reasoning: a long one. " * 20 + "\nAnswer: Use pip [1]."), [corpus()],
                  settings=AgentSettings(reader="cot"))

    async def first_tokens() -> list:
        out = []
        async for event in agent.astream("How do I install agentkit?"):
            out.append(event)
            if isinstance(event, TokenEvent) and len(out) > 5:
                break
        return out

    async def everything() -> list:
        return [type(e) for e in [e async for e in agent.astream("How do I install agentkit?")]]

    asyncio.run(first_tokens())
    assert finished == [False]  # the model's stream was closed mid-answer
    kinds = asyncio.run(everything())
    assert kinds == [type(e) for e in agent.stream("How do I install agentkit?")]
    with pytest.raises(InputError):
        asyncio.run(_astream_empty(agent))


async def _astream_empty(agent: Agent) -> None:
    async for _ in agent.astream("  "):
        pass


def test_tool_decisions_have_their_own_timing() -> None:
    import time

    from agentkit.tools import tool

    @tool
    def slow(text: str) -> str:
        """Echo a text, slowly.

        Args:
            text: what to echo
        """
        time.sleep(0.3)
        return text

    llm = FakeLLM([{"action": "call", "tool": "slow", "arguments": {"text": "hi"}}, {"action": "answer"},
                   "Answer: hi [1]."])
    answer = Agent(llm, [corpus()], tools=[slow], settings=AgentSettings(max_steps=3)).ask(
        "How do I install agentkit?", route=["docs"])
    assert answer.timings["act_ms"] >= 300
    assert answer.timings["retrieve_ms"] < 300  # the search alone


def test_memory_source_accepts_documents_and_names_what_it_takes() -> None:
    from agentkit import Document

    src = MemorySource("notes")
    src.add([Document("guide.md", "Tides follow the moon. " * 100, "Guide", {"lang": "en"})])
    assert src.count() > 1  # chunked
    hit = src.search("tides moon", k=1)[0]
    assert hit.doc_id == "guide.md" and hit.id.startswith("guide.md#") and hit.metadata["lang"] == "en"
    with pytest.raises(TypeError, match=r"item 0 is a builtins\.dict.*agentkit\.Document.*agentkit\.Passage"):
        src.add([{"id": "x", "text": "y"}])


def test_an_unknown_filter_key_is_an_error_naming_the_filterable_fields() -> None:
    src = lang_corpus()
    with pytest.raises(InputError, match=r"no metadata field 'language'.*filterable fields: lang"):
        src.search("install", filters={"language": "en"})
    assert src.search("install", filters={"lang": "de"}) == []  # a known key with no match is no error


def test_a_per_call_temperature_that_is_not_a_number_is_named() -> None:
    agent = Agent(FakeLLM("fine"), [])
    with pytest.raises(InputError, match="temperature must be between 0 and 2, got 'hot'"):
        agent.ask("hello", temperature="hot")  # type: ignore[arg-type]
