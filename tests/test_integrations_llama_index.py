"""The LlamaIndex bridge, both directions, against real llama-index-core objects (no imitations).

VectorStoreIndex with MockEmbedding, and a bag-of-words BaseEmbedding for the contract suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import Response
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from agentkit import Agent, MemorySource
from agentkit.integrations.llama_index import (
    AgentkitLlamaRetriever,
    LlamaIndexSource,
    WritableLlamaIndexSource,
    as_query_engine,
    metadata_filters,
)
from agentkit.knowledge.base import KnowledgeSource, WritableSource
from agentkit.types import Passage
from agentkit.testing import (
    CORPUS,
    FakeLLM,
    KnowledgeSourceContract,
    WritableSourceContract,
)


class BagOfWordsEmbedding(BaseEmbedding):
    """Hashed word counts, L2-normalised: a real LlamaIndex embedding whose cosine means word overlap."""

    def _vec(self, text: str) -> list[float]:
        v = [0.0] * 4096
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % 4096] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)


def corpus_nodes() -> list[TextNode]:
    return [TextNode(id_=p.id, text=p.text, metadata={**p.metadata, "title": p.title, "uri": p.uri}) for p in CORPUS]


def mock_index() -> VectorStoreIndex:
    return VectorStoreIndex(corpus_nodes(), embed_model=MockEmbedding(embed_dim=16))


@pytest.fixture()
def memory() -> MemorySource:
    src = MemorySource("notes", "earth science, software, biology")
    src.add(CORPUS)
    return src


# --- LlamaIndex -> agentkit -----------------------------------------------------------------


class TestVectorStoreIndexContract(WritableSourceContract):
    """A real VectorStoreIndex behind LlamaIndexSource passes agentkit's writable contract."""

    @pytest.fixture()
    def source(self) -> LlamaIndexSource:
        index = VectorStoreIndex([], embed_model=BagOfWordsEmbedding())
        return LlamaIndexSource(index, name="li", min_score=1e-6)


class TestRetrieverContract(KnowledgeSourceContract):
    """A plain LlamaIndex retriever (read-only) passes the read contract."""

    @pytest.fixture()
    def source(self) -> LlamaIndexSource:
        index = VectorStoreIndex(corpus_nodes(), embed_model=BagOfWordsEmbedding())
        return LlamaIndexSource(index.as_retriever(similarity_top_k=5), name="li-retriever")


def test_index_source_is_writable_and_retriever_source_is_not() -> None:
    index = mock_index()
    assert isinstance(LlamaIndexSource(index), WritableLlamaIndexSource)
    assert isinstance(LlamaIndexSource(index), WritableSource)
    read_only = LlamaIndexSource(index, writable=False)
    assert isinstance(read_only, KnowledgeSource) and not isinstance(read_only, WritableSource)
    assert not isinstance(LlamaIndexSource(index.as_retriever()), WritableSource)


def test_nodes_become_passages_with_node_ids() -> None:
    src = LlamaIndexSource(mock_index(), name="li")
    found = src.search("anything", k=len(CORPUS))
    assert {p.id for p in found} == {p.id for p in CORPUS}  # MockEmbedding: every node ties
    tides = next(p for p in found if p.id == "tides#0")
    assert (tides.title, tides.uri, tides.source, tides.text) == ("Tides", "doc://tides#chunk=0", "li", CORPUS[0].text)
    assert tides.metadata == {"topic": "earth", "year": 2020}
    assert [p.id for p in src.search("anything", k=len(CORPUS))] == [p.id for p in found]


def test_filters_on_index_and_on_retriever() -> None:
    index = mock_index()
    # Every node ties under MockEmbedding: k covers the whole corpus, so only the filter decides.
    k = len(CORPUS)
    for src in (LlamaIndexSource(index), LlamaIndexSource(index.as_retriever(similarity_top_k=k))):
        assert {p.id for p in src.search("x", k=k, filters={"topic": "biology"})} == {"bees#0", "coffee#0"}
        found = src.search("x", k=k, filters={"topic": ["earth", "software"], "year": 2021})
        assert {p.id for p in found} == {"volcano#0", "rust#0"}
        assert src.search("x", k=k, filters={"topic": "nothing"}) == []


def test_agent_cites_the_passage_from_the_llama_index() -> None:
    index = VectorStoreIndex(corpus_nodes(), embed_model=BagOfWordsEmbedding())
    agent = Agent(FakeLLM(), [LlamaIndexSource(index, name="li", description="earth science facts")])
    answer = agent.ask("What causes the tides of the oceans?", route=["li"])
    assert answer.cited_ids == ["tides#0"] and answer.citations[0].passage.source == "li"


# --- agentkit -> LlamaIndex -----------------------------------------------------------------


def test_retriever_over_memory_source(memory: MemorySource) -> None:
    retriever = AgentkitLlamaRetriever(memory, k=3)
    assert isinstance(retriever, BaseRetriever)
    found = retriever.retrieve("What causes the tides of the oceans?")
    assert isinstance(found[0], NodeWithScore) and found[0].node.node_id == "tides#0"
    assert found[0].score and found[0].score > 0 and len(found) <= 3
    assert found[0].node.metadata["source"] == "notes" and found[0].node.metadata["uri"] == "doc://tides#chunk=0"
    afound = asyncio.run(retriever.aretrieve("What causes the tides of the oceans?"))
    assert [n.node.node_id for n in afound] == [n.node.node_id for n in found]
    biology = AgentkitLlamaRetriever(memory, filters={"topic": "biology"}).retrieve("bees coffee seeds flowers")
    assert {n.node.node_id for n in biology} == {"bees#0", "coffee#0"}


def test_retriever_in_a_llama_index_query_engine(memory: MemorySource) -> None:
    engine = RetrieverQueryEngine.from_args(AgentkitLlamaRetriever(memory, k=1), llm=MockLLM())
    response = engine.query("What causes the tides of the oceans?")
    assert [n.node.node_id for n in response.source_nodes] == ["tides#0"]
    assert "gravitational pull" in str(response)  # MockLLM echoes the prompt, evidence included


def test_retriever_takes_similarity_top_k_as_vector_index_retriever_does(memory: MemorySource) -> None:
    from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler

    question = "tides moon volcano lava rust borrow bees flowers coffee seeds espresso"  # all six match
    index = VectorStoreIndex(corpus_nodes(), embed_model=BagOfWordsEmbedding())
    theirs = index.as_retriever(similarity_top_k=2).retrieve(question)
    ours = AgentkitLlamaRetriever(memory, similarity_top_k=2)
    assert len(theirs) == len(ours.retrieve(question)) == 2 and ours.k == 2
    ours.similarity_top_k = 1  # settable, as on VectorIndexRetriever
    assert [n.node.node_id for n in ours.retrieve(question)] == [ours.retrieve(question)[0].node.node_id]
    assert len(AgentkitLlamaRetriever(memory, similarity_top_k=4, k=4).retrieve(question)) == 4
    # BaseRetriever's own keywords still reach it.
    debug = LlamaDebugHandler()
    engine = RetrieverQueryEngine.from_args(
        AgentkitLlamaRetriever(memory, similarity_top_k=3, callback_manager=CallbackManager([debug])), llm=MockLLM()
    )
    assert len(engine.query(question).source_nodes) == 3
    assert debug.get_event_pairs("retrieve")


def test_retriever_refuses_keywords_it_does_not_honour(memory: MemorySource) -> None:
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) 'top_k', 'vector_store_query_mode'; it takes similarity_top_k"):
        AgentkitLlamaRetriever(memory, top_k=3, vector_store_query_mode="hybrid")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="similarity_top_k=2 and k=3 are the same setting"):
        AgentkitLlamaRetriever(memory, similarity_top_k=2, k=3)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="similarity_top_k must be a whole number of at least 1"):
            AgentkitLlamaRetriever(memory, similarity_top_k=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^AgentkitLlamaRetriever: k must be a whole number of at least 1, got 0$"):
        AgentkitLlamaRetriever(memory, k=0)  # the error names the keyword given
    with pytest.raises(TypeError, match="filters must map metadata keys"):
        AgentkitLlamaRetriever(memory, filters=metadata_filters({"topic": "biology"}))  # type: ignore[arg-type]


def test_agent_as_query_engine(memory: MemorySource) -> None:
    engine = as_query_engine(Agent(FakeLLM(), [memory]))
    response = engine.query("What causes the tides of the oceans?")
    assert isinstance(response, Response) and "[1]" in str(response)
    assert response.source_nodes[0].node.node_id == "tides#0"
    assert response.metadata and response.metadata["cited_ids"] == ["tides#0"]
    aresponse = asyncio.run(engine.aquery("What causes the tides of the oceans?"))
    assert aresponse.metadata and aresponse.metadata["cited_ids"] == ["tides#0"]


def test_query_engine_source_nodes_carry_the_quote_and_its_span() -> None:
    guide = MemorySource("guide", "how to install agentkit")
    guide.add([Passage("install#0", "agentkit answers from your sources. Install agentkit with pip install agentkit. "
                       "It needs Python 3.10.", "Install", uri="doc://install")])
    llm = FakeLLM('Quote: [1] "Install agentkit with pip install agentkit."\nAnswer: with pip install agentkit')
    response = as_query_engine(Agent(llm, [guide])).query("How do I install agentkit?")
    assert response.metadata is not None
    answer = response.metadata["answer"]
    assert response.metadata["kind"] == answer.kind and answer.kind in ("model", "extractive")
    [citation] = response.metadata["citations"]
    node = response.source_nodes[citation["marker"] - 1].node
    md = node.metadata
    assert node.node_id == citation["passage_id"] == "install#0"
    assert md["quote"] == citation["quote"] and md["quote"]
    assert md["quote"] == "Install agentkit with pip install agentkit." and md["start"] > 0
    assert node.get_content()[md["start"] : md["end"]] == md["quote"]
    assert (md["marker"], md["inferred"], md["kind"]) == (citation["marker"], False, answer.kind)
    # Bookkeeping stays out of what LlamaIndex shows a model.
    assert "quote" not in node.get_content(metadata_mode=MetadataMode.LLM)


def test_errors_name_the_input() -> None:
    with pytest.raises(TypeError, match="KnowledgeSource"):
        AgentkitLlamaRetriever("not a source")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="index or retriever"):
        LlamaIndexSource(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agentkit Agent"):
        as_query_engine(object())  # type: ignore[arg-type]


# --- the ids users set, and filters on fields that exist ------------------------------------


def test_passages_carry_the_document_ids_the_user_set() -> None:
    from llama_index.core import Document as LlamaDocument
    from llama_index.core.node_parser import SentenceSplitter

    long_text = " ".join(f"Sentence {i} tells how the moon pulls the tides of the ocean." for i in range(40))
    docs = [
        LlamaDocument(text=long_text, doc_id="tides-guide", metadata={"topic": "earth"}),
        LlamaDocument(text="Honey bees dance to show where flowers are.", doc_id="bees-note", metadata={"topic": "biology"}),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=BagOfWordsEmbedding(),
                                            transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)])
    for src in (LlamaIndexSource(index, name="li"), LlamaIndexSource(index.as_retriever(similarity_top_k=20))):
        found = src.search("moon tides ocean bees flowers", k=20)
        ids = {p.id for p in found}
        assert "bees-note#0" in ids and {"tides-guide#0", "tides-guide#1"} <= ids
        assert {p.doc_id for p in found} == {"tides-guide", "bees-note"}
        assert all(p.id.startswith(p.doc_id + "#") for p in found)  # no node UUIDs
    assert src.search("moon tides", k=3) and [p.id for p in src.search("bees", k=1)] == ["bees-note#0"]


def test_unknown_filter_keys_name_the_filterable_fields(memory: MemorySource) -> None:
    from agentkit.errors import InputError

    with pytest.raises(InputError, match=r"no metadata field 'topics'.*filterable fields: .*topic"):
        LlamaIndexSource(mock_index(), name="li").search("x", k=5, filters={"topics": "biology"})
    with pytest.raises(InputError, match=r"'notes' has no metadata field 'yr'"):
        AgentkitLlamaRetriever(memory, filters={"yr": 2020}).retrieve("tides")
