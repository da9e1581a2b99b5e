"""The LangChain bridge, both directions, against real langchain-core objects (no imitations).

InMemoryVectorStore with DeterministicFakeEmbedding, and a bag-of-words Embeddings for the contract suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import subprocess
import sys

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool
from langchain_core.vectorstores import InMemoryVectorStore

from agentkit import Agent, MemorySource
from agentkit.errors import KnowledgeSourceError
from agentkit.integrations.langchain import (
    AgentkitRetriever,
    LangChainSource,
    WritableLangChainSource,
    as_langchain_tool,
    as_runnable,
    cited_documents,
)
from agentkit.knowledge.base import KnowledgeSource, WritableSource
from agentkit.types import Answer, Citation, Passage
from agentkit.testing import (
    CORPUS,
    FakeLLM,
    KnowledgeSourceContract,
    WritableSourceContract,
)


class BagOfWordsEmbeddings(Embeddings):
    """Hashed word counts, L2-normalised: a real LangChain Embeddings whose cosine means word overlap."""

    dim = 4096

    def _vec(self, text: str) -> list[float]:
        v = [0.0] * self.dim
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)


def fake_store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    store.add_documents(
        [Document(page_content=p.text, metadata={**p.metadata, "title": p.title, "uri": p.uri}, id=p.id)
         for p in CORPUS]
    )
    return store


@pytest.fixture()
def memory() -> MemorySource:
    src = MemorySource("notes", "earth science, software, biology")
    src.add(CORPUS)
    return src


# --- LangChain -> agentkit ------------------------------------------------------------------


class TestInMemoryVectorStoreContract(WritableSourceContract):
    """A real InMemoryVectorStore behind LangChainSource passes agentkit's writable contract."""

    @pytest.fixture()
    def source(self) -> LangChainSource:
        # min_score drops documents that share no word with the query (cosine 0).
        return LangChainSource(InMemoryVectorStore(BagOfWordsEmbeddings()), name="lc", min_score=1e-6)


class TestRetrieverContract(KnowledgeSourceContract):
    """A plain LangChain retriever (read-only) passes the read contract."""

    @pytest.fixture()
    def source(self) -> LangChainSource:
        store = InMemoryVectorStore(BagOfWordsEmbeddings())
        WritableLangChainSource(store).add(CORPUS)
        return LangChainSource(store.as_retriever(search_kwargs={"k": 5}), name="lc-retriever")


def test_vector_store_source_is_writable_and_retriever_source_is_not() -> None:
    store = fake_store()
    assert isinstance(LangChainSource(store, name="lc"), WritableLangChainSource)
    assert isinstance(LangChainSource(store, name="lc"), WritableSource)
    read_only = LangChainSource(store, name="lc", writable=False)
    assert isinstance(read_only, KnowledgeSource) and not isinstance(read_only, WritableSource)
    assert not isinstance(LangChainSource(store.as_retriever(), name="lc"), WritableSource)


def test_exact_text_comes_back_first_with_its_stable_id() -> None:
    src = LangChainSource(fake_store(), name="lc")
    query = CORPUS[3].text  # DeterministicFakeEmbedding: equal text, equal vector, cosine 1
    first = src.search(query, k=3)
    again = src.search(query, k=3)
    assert first[0].id == "bees#0" and first[0].source == "lc"
    assert first[0].title == "Bees" and first[0].uri == "doc://bees#chunk=0"
    assert first[0].metadata == {"topic": "biology", "year": 2019}
    assert first[0].score == pytest.approx(1.0)
    assert [p.id for p in first] == [p.id for p in again]
    assert [p.score for p in first] == sorted((p.score for p in first), reverse=True)


def test_documents_without_ids_get_content_hash_ids() -> None:
    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: object) -> list[Document]:
            return [Document(page_content="alpha text"), Document(page_content="beta", metadata={"id": "b-1"})]

    src = LangChainSource(Fixed(), name="fixed")
    found = src.search("anything", k=5)
    assert found[0].id.startswith("sha256:") and found[0].id == src.search("other", k=5)[0].id
    assert found[1].id == "b-1"
    assert found[0].score > found[1].score  # rank scores keep the retriever's order


def test_filters_on_vector_store_and_on_retriever() -> None:
    store = fake_store()
    for src in (LangChainSource(store, name="lc"), LangChainSource(store.as_retriever(search_kwargs={"k": 5}))):
        found = src.search("anything at all", k=5, filters={"topic": "biology"})
        assert {p.id for p in found} == {"bees#0", "coffee#0"}
        found = src.search("anything", k=5, filters={"topic": ["earth", "software"], "year": 2021})
        assert {p.id for p in found} == {"volcano#0", "rust#0"}
        assert src.search("anything", k=5, filters={"topic": "nothing"}) == []


def test_client_side_filters_fetch_past_k() -> None:
    src = LangChainSource(fake_store(), name="lc")
    src.filter_kwargs = None  # as for a store whose own filter syntax agentkit does not know
    found = src.search("anything", k=1, filters={"topic": "software"})
    assert [p.id for p in found] == ["rust#0"]


def test_agent_cites_the_passage_from_the_langchain_store() -> None:
    store = InMemoryVectorStore(BagOfWordsEmbeddings())
    store.add_documents([Document(page_content=p.text, metadata={"title": p.title}, id=p.id) for p in CORPUS])
    agent = Agent(FakeLLM(), [LangChainSource(store, name="lc", description="earth science facts")])
    answer = agent.ask("What causes the tides of the oceans?", route=["lc"])
    assert answer.cited_ids == ["tides#0"]
    assert answer.citations[0].passage.source == "lc"


# --- agentkit -> LangChain ------------------------------------------------------------------


def test_retriever_over_memory_source_returns_the_right_doc_first(memory: MemorySource) -> None:
    retriever = AgentkitRetriever(source=memory, k=3)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("What causes the tides of the oceans?")
    assert docs[0].id == "tides#0" and docs[0].page_content == CORPUS[0].text
    assert docs[0].metadata["id"] == "tides#0" and docs[0].metadata["source"] == "notes"
    assert docs[0].metadata["uri"] == "doc://tides#chunk=0" and docs[0].metadata["score"] > 0
    assert len(docs) <= 3
    adocs = asyncio.run(retriever.ainvoke("What causes the tides of the oceans?"))
    assert [d.id for d in adocs] == [d.id for d in docs]


def test_retriever_filters_and_round_trip(memory: MemorySource) -> None:
    retriever = AgentkitRetriever(source=memory, k=5, filters={"topic": "biology"})
    assert {d.id for d in retriever.invoke("bees coffee seeds flowers")} == {"bees#0", "coffee#0"}
    back = LangChainSource(AgentkitRetriever(source=memory), name="round")
    [p] = back.search("waggle dance of honey bees", k=1)
    assert (p.id, p.title, p.uri) == ("bees#0", "Bees", "doc://bees#chunk=0")


def test_retriever_in_a_langchain_chain(memory: MemorySource) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "Context: {context}\nQuestion: {question}")])
    chain = (
        {"context": AgentkitRetriever(source=memory, k=1), "question": lambda q: q}
        | prompt
        | FakeListChatModel(responses=["Because of the Moon."])
        | StrOutputParser()
    )
    assert chain.invoke("What causes the tides?") == "Because of the Moon."


def test_source_tool_outputs_numbered_passages(memory: MemorySource) -> None:
    tool = as_langchain_tool(memory, k=2)
    assert isinstance(tool, BaseTool) and tool.name == "search_notes"
    assert tool.description == "earth science, software, biology"
    text = tool.invoke({"query": "What causes the tides of the oceans?"})
    assert text.startswith("[1] Tides (doc://tides#chunk=0)\nTides are caused")
    msg = tool.invoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": {"query": "tides moon"}})
    assert msg.artifact[0].id == "tides#0"


def test_agent_as_tool_and_runnable(memory: MemorySource) -> None:
    agent = Agent(FakeLLM(), [memory])
    tool = as_langchain_tool(agent)
    text = tool.invoke({"question": "What causes the tides of the oceans?"})
    assert "[1]" in text and "Sources:\n[1] Tides — doc://tides#chunk=0" in text
    quote = tool.invoke({"type": "tool_call", "id": "c1", "name": tool.name,
                         "args": {"question": "What causes the tides of the oceans?"}}).artifact.citations[0].quote
    assert quote and f"“{quote}”" in text  # the calling model reads the quote the answer rests on
    runnable = as_runnable(agent)
    answer = runnable.invoke("What causes the tides of the oceans?")
    assert answer.cited_ids == ["tides#0"]
    answer = asyncio.run(runnable.ainvoke({"question": "What causes the tides of the oceans?"}))
    assert answer.cited_ids == ["tides#0"]


def test_cited_documents_carry_the_quote_and_its_span(memory: MemorySource) -> None:
    answer = Agent(FakeLLM(), [memory]).ask("What causes the tides of the oceans?")
    [doc] = cited_documents(answer)
    md = doc.metadata
    assert doc.id == "tides#0" and md["marker"] == 1 and md["kind"] == answer.kind
    assert md["quote"] and doc.page_content[md["start"] : md["end"]] == md["quote"]
    assert md["inferred"] is False and md["source"] == "notes" and md["uri"] == "doc://tides#chunk=0"


def test_cited_documents_mark_attributed_citations_and_the_answer_kind() -> None:
    guide = Passage("guide#0", "agentkit answers from your sources. Install it with pip. It needs Python 3.10.",
                    "Guide", source="docs", uri="doc://guide")
    quote = "Install it with pip."
    start = guide.text.index(quote)
    answer = Answer("q", f"The sources say: “{quote}” [1]", kind="extractive", citations=[
        Citation(1, guide, quote, quote=quote, start=start, end=start + len(quote), support=1.0, supported=True),
        Citation(2, CORPUS[3], "Bees dance.", inferred=True),
    ])
    docs = cited_documents(answer)
    assert [(d.id, d.metadata["inferred"], d.metadata["kind"]) for d in docs] == [
        ("guide#0", False, "extractive"), ("bees#0", True, "extractive")]
    md = docs[0].metadata
    assert md["start"] > 0 and docs[0].page_content[md["start"] : md["end"]] == quote
    assert (docs[1].metadata["quote"], docs[1].metadata["start"]) == ("", None)


def test_errors_name_the_input() -> None:
    with pytest.raises(TypeError, match="KnowledgeSource"):
        AgentkitRetriever(source="not a source")
    with pytest.raises(TypeError, match="KnowledgeSource or Agent"):
        as_langchain_tool(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BaseRetriever or VectorStore"):
        LangChainSource(object(), name="x")  # type: ignore[arg-type]
    assert WritableLangChainSource(fake_store(), name="lc", count=lambda: 99).count() == 99
    opaque = WritableLangChainSource(fake_store(), name="lc")
    opaque.obj.store = None  # type: ignore[attr-defined]  # as for a store with no countable dict
    with pytest.raises(KnowledgeSourceError, match="pass count="):
        opaque.count()


def test_import_agentkit_imports_neither_library() -> None:
    code = (
        "import sys, agentkit, agentkit.integrations; from agentkit import Agent, MemorySource; "
        "print(sorted(m for m in sys.modules if m.startswith(('langchain', 'llama_index'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("agentkit.integrations.langchain", "langchain_core", "langchain"),
     ("agentkit.integrations.llama_index", "llama_index", "llama-index")],
)
def test_missing_library_raises_missing_dependency_with_hint(module: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\n"
        f"except Exception as e:\n    print(type(e).__name__, e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingDependency") and f'pip install "agentkit[{extra}]"' in out


# --- search_kwargs and filters as LangChain users write them ---------------------------------


def test_retriever_honours_search_kwargs_k_and_filter(memory: MemorySource) -> None:
    everything = "tides volcano rust bees coffee"
    assert len(AgentkitRetriever(source=memory).invoke(everything)) == 5
    assert len(AgentkitRetriever(source=memory, search_kwargs={"k": 2}).invoke(everything)) == 2
    retriever = AgentkitRetriever(source=memory, search_kwargs={"k": 5, "filter": {"topic": "biology"}})
    assert {d.id for d in retriever.invoke("bees coffee seeds flowers")} == {"bees#0", "coffee#0"}
    # invoke() keywords win for one call, as with LangChain's vector-store retrievers
    assert [d.id for d in retriever.invoke("bees coffee seeds flowers", k=1)] == ["bees#0"]
    assert asyncio.run(retriever.ainvoke("bees", k=1, filters={"topic": "earth"})) == []


def test_retriever_rejects_unknown_search_kwargs(memory: MemorySource) -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'score_threshold'.*k, filter, filters"):
        AgentkitRetriever(source=memory, search_kwargs={"k": 2, "score_threshold": 0.5})
    with pytest.raises(ValueError, match="k must be a whole number"):
        AgentkitRetriever(source=memory, search_kwargs={"k": 0})
    with pytest.raises(ValueError, match="'fetch_k'"):
        AgentkitRetriever(source=memory).invoke("bees", fetch_k=20)


def test_unknown_filter_keys_are_an_error_naming_the_filterable_fields(memory: MemorySource) -> None:
    from agentkit.errors import InputError

    with pytest.raises(InputError, match=r"no metadata field 'topics'.*filterable fields: .*topic"):
        AgentkitRetriever(source=memory, search_kwargs={"filter": {"topics": "biology"}}).invoke("bees")
    store_source = LangChainSource(fake_store(), name="lc")
    with pytest.raises(InputError, match=r"'lc' has no metadata field 'yr'.*topic, uri, year"):
        store_source.search("anything", k=5, filters={"yr": 2021})
    assert store_source.search("anything", k=5, filters={"year": 1900}) == []  # known key: no error
