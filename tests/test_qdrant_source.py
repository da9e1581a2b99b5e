"""Behaviour of the Qdrant knowledge source on both embedded engines (BM25, dense and hybrid
search), and of its BM25 encoder.

Every store here is in memory or under tmp_path; no server is needed (an unreachable one is).
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from agentkit.errors import ConfigError, KnowledgeSourceError, SourceUnavailable
from agentkit.knowledge.base import WritableSource
from agentkit.knowledge.embeddings import CachedEmbedder, EmbedderConfig, EmbeddingCache
from agentkit.knowledge.fusion import CrossEncoderReranker
from agentkit.knowledge.qdrant import QdrantSource, QdrantSourceConfig
from agentkit.knowledge.sparse import BM25Encoder
from agentkit.types import Passage

ENGINES = ["edge", "client"]

CORPUS = [
    Passage(
        "fox", "The quick brown fox jumps over the lazy dog.", title="Foxes", metadata={"lang": "en", "year": 2020}
    ),
    Passage("run", "She runs every morning along the river.", metadata={"lang": "en", "year": 2021, "draft": True}),
    Passage("tea", "Green tea is brewed cooler than black tea.", metadata={"lang": "fr", "year": 2021}),
    Passage("sea", "The sea was calm and the boats stayed in the harbour.", metadata={"lang": "de", "year": 2020.0}),
    Passage("uni", "Tōkyō Tower and the café naïve: 東京タワー", uri="file:///u.md#c=0", metadata={"lang": "ja"}),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def source(engine: str) -> QdrantSource:
    src = QdrantSource("docs", "test corpus", location=":memory:", engine=engine)
    src.add(CORPUS)
    yield src
    src.close()


def ids(passages: list[Passage]) -> list[str]:
    return [p.id for p in passages]


# --- the contract -------------------------------------------------------------------------


def test_is_a_writable_source(source: QdrantSource) -> None:
    assert isinstance(source, WritableSource)
    assert source.count() == len(CORPUS)


def test_passage_with_the_query_terms_ranks_first(source: QdrantSource) -> None:
    hits = source.search("brown fox", k=3)
    assert ids(hits)[0] == "fox"
    assert all(p.source == "docs" for p in hits)
    assert hits[0].score > 0
    assert [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)


def test_title_counts_towards_the_text(source: QdrantSource) -> None:
    assert ids(source.search("foxes", k=1)) == ["fox"]


def test_stemming_matches_word_forms(source: QdrantSource) -> None:
    assert ids(source.search("running", k=1)) == ["run"]
    assert ids(source.search("brewing teas", k=1)) == ["tea"]


def test_returns_at_most_k(source: QdrantSource) -> None:
    assert len(source.search("the tea sea fox runs", k=2)) == 2
    assert source.search("fox", k=0) == []


def test_empty_and_stopword_queries_return_nothing(source: QdrantSource) -> None:
    assert source.search("") == []
    assert source.search("   ") == []
    assert source.search("the and of") == []
    assert source.search("zyxwvut") == []


def test_payload_round_trips(source: QdrantSource) -> None:
    [hit] = source.search("Tōkyō café", k=1)
    assert hit.id == "uni"
    assert hit.text == CORPUS[4].text
    assert hit.uri == "file:///u.md#c=0"
    assert hit.metadata == {"lang": "ja"}
    [fox] = source.get(["fox"])
    assert (fox.title, fox.metadata) == ("Foxes", {"lang": "en", "year": 2020})


def test_unicode_terms_are_searchable(source: QdrantSource) -> None:
    assert ids(source.search("東京タワー", k=1)) == ["uni"]
    assert ids(source.search("naïve", k=1)) == ["uni"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"lang": "en"}, {"fox", "run"}),
        ({"lang": ["fr", "de"]}, {"tea", "sea"}),
        ({"lang": "en", "year": 2021}, {"run"}),
        ({"year": 2020}, {"fox", "sea"}),  # 2020 == 2020.0, as in `matches`
        ({"draft": True}, {"run"}),
        ({"year": None}, {"uni"}),
        ({"lang": []}, set()),
        ({"lang": "xx"}, set()),
    ],
)
def test_filters_follow_matches_semantics(source: QdrantSource, filters: dict, expected: set[str]) -> None:
    query = "fox runs tea sea tower morning calm"
    assert set(ids(source.search(query, k=10, filters=filters))) == expected


def test_filter_on_a_key_with_dots(engine: str) -> None:
    with QdrantSource("docs", engine=engine) as src:
        src.add([Passage("a", "alpha beta", metadata={"a.b": "x"}), Passage("b", "alpha beta", metadata={"a.b": "y"})])
        assert ids(src.search("alpha", filters={"a.b": "y"})) == ["b"]


def test_filter_checked_in_python_still_fills_k(engine: str) -> None:
    # Many better-ranked passages fail the filter; the ones that pass must still come back.
    noise = [Passage(f"n{i}", "apple apple apple", metadata={"ok": False}) for i in range(40)]
    good = [Passage(f"g{i}", "apple and other fruit in a long sentence", metadata={"ok": True}) for i in range(3)]
    with QdrantSource("docs", engine=engine) as src:
        src.add(noise + good)
        assert set(ids(src.search("apple", k=3, filters={"ok": True}))) == {"g0", "g1", "g2"}


def test_add_with_same_id_replaces(source: QdrantSource) -> None:
    source.add([Passage("tea", "Coffee beans are roasted.", metadata={"lang": "it"})])
    assert source.count() == len(CORPUS)
    [tea] = source.get(["tea"])
    assert tea.text == "Coffee beans are roasted." and tea.metadata == {"lang": "it"}
    assert ids(source.search("coffee", k=1)) == ["tea"]
    assert "tea" not in ids(source.search("green tea", k=5))


def test_duplicate_ids_in_one_call_keep_the_last(engine: str) -> None:
    with QdrantSource("docs", engine=engine) as src:
        src.add([Passage("a", "first version"), Passage("a", "second version")])
        assert src.count() == 1
        assert src.get(["a"])[0].text == "second version"


def test_delete(source: QdrantSource) -> None:
    source.delete(["fox", "not-there"])
    assert source.count() == len(CORPUS) - 1
    assert source.get(["fox"]) == []
    assert "fox" not in ids(source.search("fox", k=5))
    source.delete([])
    assert source.count() == len(CORPUS) - 1


def test_get_keeps_the_order_asked_and_skips_missing(source: QdrantSource) -> None:
    assert ids(source.get(["sea", "missing", "fox", "sea"])) == ["sea", "fox"]
    assert source.get([]) == []


def test_same_scores_on_both_engines() -> None:
    results = {}
    for eng in ENGINES:
        with QdrantSource("docs", engine=eng) as src:
            src.add(CORPUS)
            results[eng] = [(p.id, round(p.score, 4)) for p in src.search("the calm sea and tea", k=5)]
    assert results["edge"] == results["client"]


# --- lifecycle and storage ----------------------------------------------------------------


def test_an_empty_store_answers_without_being_created(engine: str, tmp_path: Path) -> None:
    src = QdrantSource("docs", path=tmp_path / "kb", engine=engine)
    assert src.search("anything") == []
    assert src.count() == 0
    assert src.get(["a"]) == []
    src.delete(["a"])
    src.close()
    if engine == "edge":
        assert not (tmp_path / "kb" / "edge").exists()


def test_store_survives_reopening(engine: str, tmp_path: Path) -> None:
    with QdrantSource("docs", path=tmp_path, engine=engine, collection="notes") as src:
        src.add(CORPUS)
    with QdrantSource("docs", path=tmp_path, engine=engine, collection="notes") as again:
        assert again.count() == len(CORPUS)
        assert ids(again.search("brown fox", k=1)) == ["fox"]
    with QdrantSource("docs", path=tmp_path, engine=engine, collection="other") as other:
        assert other.count() == 0


def test_a_held_path_is_unavailable(engine: str, tmp_path: Path) -> None:
    with QdrantSource("docs", path=tmp_path, engine=engine) as first:
        first.add(CORPUS[:1])
        second = QdrantSource("docs", path=tmp_path, engine=engine)
        with pytest.raises(SourceUnavailable, match="another agentkit process") as info:
            second.count()
        assert str(tmp_path) in str(info.value)


def test_auto_keeps_an_existing_qdrant_client_store(tmp_path: Path) -> None:
    with QdrantSource("docs", path=tmp_path, engine="client") as old:
        old.add(CORPUS)
    auto = QdrantSource("docs", path=tmp_path)
    assert auto.engine == "client"
    assert auto.count() == len(CORPUS)
    auto.close()
    assert QdrantSource("docs", path=tmp_path / "fresh").engine == "edge"
    assert QdrantSource("docs").engine == "edge"


def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    src = QdrantSource("docs", url=url, timeout=2)
    assert src.engine == "client"
    with pytest.raises(SourceUnavailable, match=f"cannot reach {url}.*sources.docs.url"):
        src.search("fox")


# --- configuration ------------------------------------------------------------------------


def test_from_config_puts_paths_under_data_dir(tmp_path: Path) -> None:
    default = QdrantSource.from_config("docs", QdrantSourceConfig(), tmp_path)
    assert default.path == tmp_path / "qdrant"
    relative = QdrantSource.from_config("docs", QdrantSourceConfig(path="kb", collection="c"), tmp_path)
    assert relative.path == tmp_path / "kb" and relative.collection == "c"
    absolute = QdrantSource.from_config("docs", QdrantSourceConfig(path=str(tmp_path / "abs")), Path("/elsewhere"))
    assert absolute.path == tmp_path / "abs"
    memory = QdrantSource.from_config("docs", QdrantSourceConfig(location=":memory:"), tmp_path)
    assert memory.path is None and memory.location == ":memory:"
    server = QdrantSource.from_config("docs", QdrantSourceConfig(url="http://q:6333", api_key="k"), tmp_path)
    assert (server.url, server.api_key, server.path) == ("http://q:6333", "k", None)
    assert QdrantSource.config_model is QdrantSourceConfig


def test_from_config_store_works(tmp_path: Path) -> None:
    config = QdrantSourceConfig(description="my notes", k1=0.9, b=0.4)
    with QdrantSource.from_config("notes", config, tmp_path) as src:
        src.add(CORPUS)
        assert src.description == "my notes"
        assert ids(src.search("green tea", k=1)) == ["tea"]
    assert (tmp_path / "qdrant" / "edge" / "agentkit").is_dir()


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "a", "url": "http://q"},
        {"location": "/tmp/x"},
        {"url": "http://q", "engine": "edge"},
        {"collection": "../escape"},
        {"b": 2.0},
        {"pth": "typo"},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        QdrantSourceConfig(**bad)


def test_constructor_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match="qdrant source 'docs'.*one of path, url, location"):
        QdrantSource("docs", path="a", url="http://q")
    with pytest.raises(ConfigError, match="language 'klingon'"):
        QdrantSource("docs", language="klingon").search("fox")


# --- the encoder ----------------------------------------------------------------------------


def test_query_encoding_weighs_each_unique_term_once() -> None:
    indices, values = BM25Encoder().encode_query("running runs run the tea")
    assert len(indices) == 2  # run (stemmed) and tea; "the" is a stopword
    assert values == [1.0, 1.0]


def test_document_encoding_saturates_term_frequency() -> None:
    enc = BM25Encoder(k1=1.2, b=0.75, avg_len=10)
    [tea], [once] = enc.encode_query("tea")
    doc = dict(zip(*enc.encode_document("tea leaves and tea cups with more tea")))
    single = dict(zip(*enc.encode_document("tea leaves and bone cups with more milk")))
    assert single[tea] < doc[tea] < 1.2 + 1
    assert once == 1.0
    # Same words in a longer document weigh less (length normalisation, b > 0).
    longer = dict(zip(*enc.encode_document("tea leaves and bone cups with more milk, sugar, honey and lemon")))
    assert longer[tea] < single[tea]


def test_encoder_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="b must be within"):
        BM25Encoder(b=1.5)
    with pytest.raises(ConfigError, match="avg_len"):
        BM25Encoder(avg_len=0)


# --- dense vectors and hybrid search --------------------------------------------------------

#: Words of one meaning share a dimension, so the fake embedder matches paraphrases by meaning.
CONCEPTS = {
    "car": 0, "automobile": 0, "vehicle": 0, "engine": 0, "battery": 0, "start": 0,
    "food": 1, "pasta": 1, "dinner": 1, "cooking": 1, "sauce": 1, "meal": 1,
    "sea": 2, "boats": 2, "harbour": 2, "ocean": 2, "ships": 2, "port": 2,
}  # fmt: skip


class ConceptEmbedder:
    """A deterministic stand-in for a sentence encoder: a bag of concepts, unit length."""

    name = "concepts-v1"
    dimension = 4

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def _vector(self, text: str) -> np.ndarray:
        v = np.full(self.dimension, 0.01, dtype=np.float32)
        for word in text.lower().replace(".", " ").replace(",", " ").split():
            if word in CONCEPTS:
                v[CONCEPTS[word]] += 1.0
        return v / np.linalg.norm(v)

    def embed_documents(self, texts):  # type: ignore[no-untyped-def]
        self.encoded.extend(texts)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)


HYBRID_CORPUS = [
    Passage("car", "The automobile would not start because its battery was flat.", metadata={"lang": "en"}),
    Passage("cook", "She boiled pasta and made a tomato sauce for dinner.", metadata={"lang": "en"}),
    Passage("sea", "The sea was calm and the boats stayed in the harbour.", metadata={"lang": "de"}),
    Passage("fleet", "Ships of the fleet carried food and a list of names.", metadata={"lang": "de"}),
]
PARAPHRASE = "vehicle engine trouble"  # shares no word with the "car" passage


def hybrid_source(engine: str, mode: str | None = None, **kwargs) -> QdrantSource:  # type: ignore[no-untyped-def]
    src = QdrantSource("docs", engine=engine, embedder=kwargs.pop("embedder", ConceptEmbedder()), mode=mode, **kwargs)
    src.add(HYBRID_CORPUS)
    return src


def test_mode_defaults_to_hybrid_with_an_embedder() -> None:
    assert QdrantSource("docs").mode == "bm25"
    assert QdrantSource("docs", embedder=ConceptEmbedder()).mode == "hybrid"
    assert QdrantSource("docs", dense=EmbedderConfig()).mode == "hybrid"
    with pytest.raises(ConfigError, match="mode 'dense' needs a dense encoder"):
        QdrantSource("docs", mode="dense")
    with pytest.raises(ValueError, match="weights"):
        QdrantSourceConfig(dense=EmbedderConfig(), weights=(0, 0))


def test_paraphrase_found_by_dense_and_hybrid_but_not_bm25(engine: str) -> None:
    for mode, expected in (("bm25", []), ("dense", ["car"]), ("hybrid", ["car"])):
        with hybrid_source(engine, mode) as src:
            assert ids(src.search(PARAPHRASE, k=1)) == expected, mode


def test_hybrid_puts_a_passage_both_retrievers_like_first(engine: str) -> None:
    # "fleet" has the word "ships" (BM25) but is less about the sea (dense) than "sea", which BM25 misses.
    with hybrid_source(engine, "dense") as dense:
        assert ids(dense.search("ships", k=2))[0] == "sea"
    with hybrid_source(engine, "hybrid") as src:
        hits = src.search("ships", k=2)
        assert ids(hits) == ["fleet", "sea"]
        assert hits[0].score > hits[1].score > 0


def test_hybrid_with_only_stopwords_falls_back_to_dense(engine: str) -> None:
    with hybrid_source(engine) as src:
        # No BM25 term survives; the dense half still answers (a 4-d fake puts something first).
        assert len(src.search("the and of", k=2)) == 2
    with hybrid_source(engine, "bm25") as src:
        assert src.search("the and of", k=2) == []


def test_filters_apply_in_dense_and_hybrid_modes(engine: str) -> None:
    for mode in ("dense", "hybrid"):
        with hybrid_source(engine, mode) as src:
            assert set(ids(src.search("boats harbour", k=5, filters={"lang": "en"}))) == {"car", "cook"}, mode
            assert ids(src.search("boats harbour", k=1, filters={"lang": "de"})) == ["sea"], mode


def test_same_hybrid_ranking_and_scores_on_both_engines() -> None:
    results = {}
    for eng in ENGINES:
        with hybrid_source(eng, rrf_k=10, weights=(1.0, 2.0)) as src:
            results[eng] = [(p.id, round(p.score, 5)) for p in src.search("harbour boats dinner", k=4)]
    assert results["edge"] == results["client"]
    assert results["edge"][0][0] == "sea"


def test_dense_vectors_survive_reopening(engine: str, tmp_path: Path) -> None:
    with hybrid_source(engine, "dense", path=tmp_path) as src:
        assert src.count() == len(HYBRID_CORPUS)
    with QdrantSource("docs", path=tmp_path, engine=engine, embedder=ConceptEmbedder(), mode="dense") as again:
        assert ids(again.search(PARAPHRASE, k=1)) == ["car"]


def test_a_bm25_only_collection_asks_for_a_reingest(engine: str, tmp_path: Path) -> None:
    with QdrantSource("docs", path=tmp_path, engine=engine) as old:
        old.add(HYBRID_CORPUS)
    newer = QdrantSource("docs", path=tmp_path, engine=engine, embedder=ConceptEmbedder())
    with pytest.raises(KnowledgeSourceError, match="without dense vectors.*re-ingest into a new collection"):
        newer.search("boats")
    newer.close()
    with QdrantSource("docs", path=tmp_path, engine=engine) as same:  # BM25 alone still works
        assert ids(same.search("boats", k=1)) == ["sea"]


def test_a_collection_of_another_dimension_is_refused(engine: str, tmp_path: Path) -> None:
    with hybrid_source(engine, path=tmp_path):
        pass

    class Wider(ConceptEmbedder):
        dimension = 8

    src = QdrantSource("docs", path=tmp_path, engine=engine, embedder=Wider())
    with pytest.raises(KnowledgeSourceError, match="4-dimensional dense vectors.*makes 8-dimensional"):
        src.count()
    src.close()


def test_reingest_encodes_only_changed_passages() -> None:
    inner = ConceptEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache())
    with hybrid_source("edge", embedder=cached) as src:
        assert len(inner.encoded) == len(HYBRID_CORPUS)
        src.add([*HYBRID_CORPUS[:3], Passage("fleet", "Ships and boats of the fleet.")])
        assert inner.encoded[len(HYBRID_CORPUS) :] == ["Ships and boats of the fleet."]


def test_from_config_caches_vectors_under_data_dir(tmp_path: Path) -> None:
    config = QdrantSourceConfig.model_validate({"dense": {"model": "all-MiniLM-L6-v2", "batch_size": 8}})
    src = QdrantSource.from_config("docs", config, tmp_path)
    assert src.mode == "hybrid"
    assert isinstance(src.embedder, CachedEmbedder)
    assert src.embedder.cache.directory == tmp_path / "embeddings"
    assert src.embedder.dimension == 384
    no_cache = QdrantSourceConfig(dense=EmbedderConfig(cache=False), mode="bm25")
    assert not isinstance(QdrantSource.from_config("docs", no_cache, tmp_path).embedder, CachedEmbedder)


def test_a_reranker_reorders_what_the_source_found(engine: str) -> None:
    class PreferDinner(CrossEncoderReranker):
        def score(self, query: str, texts):  # type: ignore[no-untyped-def]
            return [1.0 if "dinner" in t else 0.0 for t in texts]

    with hybrid_source(engine, "bm25", reranker=PreferDinner("/unused", top_k=10)) as src:
        hits = src.search("the sea and a dinner of pasta by the harbour", k=2)
        assert ids(hits)[0] == "cook"
        assert "first_stage_score" in hits[0].metadata


@pytest.mark.real_model
def test_real_encoder_finds_the_paraphrase_only_with_dense_vectors() -> None:
    with QdrantSource("docs", dense=EmbedderConfig(cache=False)) as src:
        src.add(HYBRID_CORPUS)
        for mode, expected in (("bm25", []), ("dense", ["car"]), ("hybrid", ["car"])):
            src.mode = mode  # type: ignore[assignment]
            assert ids(src.search("Why won't my vehicle's motor turn over?", k=1)) == expected, mode
