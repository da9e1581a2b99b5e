"""The Elasticsearch source without a cluster: the requests it sends and how it reads the answers.

`FakeCluster` sits behind the real client (as its node class), so every request goes through the
client's own serialisation and bulk helpers; it records them and answers in the shapes that the
Elasticsearch REST API documents. It does not search: a search gets every stored document (or
what a test's `on_search` returns), and the expected request bodies are literals written here
beside the builder, by the same hand. So these tests catch a change in what is sent
and in how answers are read; they cannot show that a cluster accepts the mappings or ranks,
filters, kNN-searches or RRF-fuses as intended. No Elasticsearch can be installed where agentkit
is developed, so that part has never run against a cluster: the contract suite and the hybrid
tests at the end do it when AGENTKIT_ES_URL is set.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from agentkit.errors import ConfigError, IngestError, KnowledgeSourceError, SourceUnavailable
from agentkit.knowledge.base import WritableSource
from agentkit.knowledge.fusion import rrf
from agentkit.knowledge.elasticsearch import (
    MAX_QUERY_WORDS,
    BulkIngestError,
    ElasticsearchSource,
    ElasticsearchSourceConfig,
    filter_clauses,
)
from agentkit.testing import WritableSourceContract
from agentkit.types import Passage

ROOT = Path(__file__).resolve().parent.parent
SOURCE_EXCLUDES = {"excludes": ["embedding"]}

# --- a cluster behind the real client --------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, a list of parsed ndjson lines, or None


Reply = tuple[int, dict[str, Any]]


def es_error(status: int, kind: str, reason: str, **extra: Any) -> Reply:
    """An error response in the shape Elasticsearch sends."""
    cause = {"type": kind, "reason": reason, **extra}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


def index_not_found(index: str) -> Reply:
    return es_error(404, "index_not_found_exception", f"no such index [{index}]", index=index)


@dataclass
class FakeCluster:
    """Records requests; keeps documents for bulk/mget/count; answers searches by `on_search`."""

    version: str = "9.1.0"
    index: str = "agentkit"
    exists: bool = False
    mapping: dict[str, Any] | None = None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    #: Answers a search body; the default lists every stored document, scores descending.
    on_search: Callable[[dict[str, Any]], Reply] | None = None
    #: Answers an index action with an error item instead of storing, when it returns one.
    reject: Callable[[str, dict[str, Any]], dict[str, Any] | None] = lambda _id, _source: None
    #: Answers any request before routing, when it returns a reply.
    intercept: Callable[[Request], Reply | None] = lambda _request: None

    def searches(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/_search")]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def handle(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        url = urlsplit(target)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        parsed: Any = None
        if body:
            text = body.decode()
            if url.path.endswith("/_bulk"):
                parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                parsed = json.loads(text)
        request = Request(method, url.path, params, headers, parsed)
        self.requests.append(request)
        early = self.intercept(request)
        if early is not None:
            return early
        return self._route(request)

    def _route(self, r: Request) -> Reply:
        idx = f"/{self.index}"
        if r.method == "GET" and r.path == "/":
            return 200, {
                "name": "node-1",
                "cluster_name": "test",
                "cluster_uuid": "abc",
                "version": {"number": self.version, "build_flavor": "default", "lucene_version": "9.12.0"},
                "tagline": "You Know, for Search",
            }
        if r.method == "HEAD" and r.path == idx:
            return (200 if self.exists else 404), {}
        if r.method == "PUT" and r.path == idx:
            if self.exists:
                return es_error(400, "resource_already_exists_exception", f"index [{self.index}] already exists")
            self.exists, self.mapping = True, r.body["mappings"]
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": self.index}
        if r.path == "/_bulk":
            return self._bulk(r.body)
        if not self.exists:
            return index_not_found(self.index)
        if r.method == "GET" and r.path == f"{idx}/_mapping":
            return 200, {self.index: {"mappings": self.mapping}}
        if r.path == f"{idx}/_mget":
            return 200, {"docs": [self._got(i) for i in r.body["ids"]]}
        if r.path == f"{idx}/_count":
            return 200, {"count": len(self.docs), "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}
        if r.path == f"{idx}/_search":
            return (self.on_search or self._all_docs)(r.body)
        raise AssertionError(f"unexpected request {r.method} {r.path}")

    def _got(self, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            return {"_index": self.index, "_id": doc_id, "found": False}
        return {
            "_index": self.index, "_id": doc_id, "_version": 1, "_seq_no": 0, "_primary_term": 1,
            "found": True, "_source": {k: v for k, v in self.docs[doc_id].items() if k != "embedding"},
        }  # fmt: skip

    def _bulk(self, lines: list[dict[str, Any]]) -> Reply:
        items: list[dict[str, Any]] = []
        i = 0
        while i < len(lines):
            [(op, meta)] = lines[i].items()
            doc_id = meta["_id"]
            base = {"_index": meta.get("_index", self.index), "_id": doc_id, "_version": 1}
            if op == "index":
                source = lines[i + 1]
                i += 2
                error = self.reject(doc_id, source)
                if error is not None:
                    items.append({op: {"_index": base["_index"], "_id": doc_id, "status": error["status"],
                                       "error": error["error"]}})  # fmt: skip
                    continue
                self.exists = True
                created = doc_id not in self.docs
                self.docs[doc_id] = source
                result, status = ("created", 201) if created else ("updated", 200)
            elif op == "delete":
                i += 1
                if doc_id in self.docs:
                    del self.docs[doc_id]
                    result, status = "deleted", 200
                else:
                    result, status = "not_found", 404
            else:
                raise AssertionError(f"unexpected bulk op {op}")
            shards = {"total": 2, "successful": 1, "failed": 0}
            items.append({op: {**base, "result": result, "_shards": shards, "_seq_no": 0, "_primary_term": 1,
                               "status": status}})  # fmt: skip
        errors = any("error" in next(iter(item.values())) for item in items)
        return 200, {"took": 3, "errors": errors, "items": items}

    def _all_docs(self, body: dict[str, Any]) -> Reply:
        ids = list(self.docs)[: body.get("size", 10)]
        return search_reply([(i, 10.0 - n, self.docs[i]) for n, i in enumerate(ids)])


def search_reply(hits: list[tuple[str, float | None, dict[str, Any]]], index: str = "agentkit") -> Reply:
    """A search response as documented: hits.hits[] with _index, _id, _score and _source."""
    return 200, {
        "took": 2,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(hits), "relation": "eq"},
            "max_score": hits[0][1] if hits else None,
            "hits": [{"_index": index, "_id": i, "_score": s, "_source": src} for i, s, src in hits],
        },
    }


def node_class(cluster: FakeCluster) -> type:
    from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders
    from elastic_transport._node import NodeApiResponse

    class FakeNode(BaseNode):
        def perform_request(self, method, target, body=None, headers=None, request_timeout=None):  # type: ignore[no-untyped-def]
            status, reply = cluster.handle(method, target, body, dict(headers or {}))
            meta = ApiResponseMeta(
                status=status,
                http_version="1.1",
                headers=HttpHeaders({"x-elastic-product": "Elasticsearch", "content-type": "application/json"}),
                duration=0.0,
                node=self.config,
            )
            return NodeApiResponse(meta, b"" if method == "HEAD" else json.dumps(reply).encode())

    return FakeNode


def fake_client(cluster: FakeCluster) -> Any:
    from elasticsearch import Elasticsearch

    return Elasticsearch("http://es.test:9200", node_class=node_class(cluster), max_retries=0)


class StubEmbedder:
    """Three dimensions; the query vector is fixed, a document's first component is its length."""

    dimension = 3

    def __init__(self, dimension: int = 3) -> None:
        self.dimension = dimension
        self.documents: list[str] = []

    def embed_query(self, text: str) -> list[float]:
        return [0.1, 0.2, 0.3]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents.extend(texts)
        return [[float(len(t)), 0.0, 1.0] for t in texts]


def make(cluster: FakeCluster, **options: Any) -> ElasticsearchSource:
    return ElasticsearchSource("docs", "test corpus", client=fake_client(cluster), **options)


CORPUS = [
    Passage("tides#0", "Tides are caused by the Moon.", "Tides", metadata={"topic": "earth", "year": 2020},
            uri="doc://tides#chunk=0"),
    Passage("bees#0", "Bees dance to show where flowers are.", "Bees", metadata={"topic": "biology", "year": 2019}),
    Passage("rust#0", "Rust has a borrow checker.", "Rust", metadata={"topic": "software", "draft": True}),
]  # fmt: skip


def ids(passages: list[Passage]) -> list[str]:
    return [p.id for p in passages]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def loaded(cluster: FakeCluster) -> FakeCluster:
    """A cluster whose index already holds CORPUS, as agentkit made it."""
    make(cluster).add(CORPUS)
    cluster.requests.clear()
    return cluster


# --- the index ----------------------------------------------------------------------------

EXPECTED_MAPPINGS = {
    "dynamic": False,
    "properties": {
        "id": {"type": "keyword"},
        "doc_id": {"type": "keyword"},
        "title": {
            "type": "text",
            "analyzer": "english",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 512}},
        },
        "text": {"type": "text", "analyzer": "english"},
        "uri": {"type": "keyword", "ignore_above": 2048},
        "metadata": {"type": "flattened", "ignore_above": 1024},
    },
}


def test_is_a_writable_source(cluster: FakeCluster) -> None:
    assert isinstance(make(cluster), WritableSource)


def test_first_add_creates_the_index_with_explicit_mappings(cluster: FakeCluster) -> None:
    make(cluster, number_of_shards=2, number_of_replicas=1).add(CORPUS[:1])
    assert cluster.paths() == ["HEAD /agentkit", "PUT /agentkit", "PUT /_bulk"]
    create = cluster.requests[1].body
    assert create == {
        "mappings": EXPECTED_MAPPINGS,
        "settings": {"index": {"number_of_shards": 2, "number_of_replicas": 1}},
    }


def test_an_embedder_adds_a_dense_vector_field(cluster: FakeCluster) -> None:
    body = make(cluster, embedder=StubEmbedder(dimension=384)).index_body()
    assert body["mappings"]["properties"]["embedding"] == {
        "type": "dense_vector", "dims": 384, "index": True, "similarity": "cosine"
    }  # fmt: skip
    assert "settings" not in body
    assert cluster.requests == []


def test_bulk_indexes_each_passage_under_its_id(cluster: FakeCluster) -> None:
    embedder = StubEmbedder()
    make(cluster, embedder=embedder, refresh="wait_for").add(CORPUS[:2])
    bulk = cluster.requests[-1]
    assert bulk.params == {"refresh": "wait_for"}
    assert bulk.body[0] == {"index": {"_id": "tides#0", "_index": "agentkit"}}
    assert bulk.body[1] == {
        "id": "tides#0", "doc_id": "tides", "title": "Tides", "text": "Tides are caused by the Moon.",
        "uri": "doc://tides#chunk=0", "metadata": {"topic": "earth", "year": 2020},
        "embedding": [float(len("Tides\nTides are caused by the Moon.")), 0.0, 1.0],
    }  # fmt: skip
    assert bulk.body[2] == {"index": {"_id": "bees#0", "_index": "agentkit"}}
    assert embedder.documents == ["Tides\nTides are caused by the Moon.", "Bees\nBees dance to show where flowers are."]


def test_an_agentkit_index_is_reused_without_creating_it(loaded: FakeCluster) -> None:
    make(loaded).add([Passage("new#0", "new")])
    assert loaded.paths() == ["HEAD /agentkit", "GET /agentkit/_mapping", "PUT /_bulk"]


def test_an_index_with_a_foreign_mapping_is_refused(cluster: FakeCluster) -> None:
    cluster.exists = True
    cluster.mapping = {"properties": {"body": {"type": "text"}, "title": {"type": "keyword"}}}
    with pytest.raises(KnowledgeSourceError, match=r"index 'agentkit' exists but its mapping does not fit") as info:
        make(cluster).add(CORPUS)
    message = str(info.value)
    assert "text is missing" in message and "title is keyword (want text)" in message
    assert "sources.docs.index" in message
    assert not any(r.path == "/_bulk" for r in cluster.requests)


def test_an_index_with_other_vector_dimensions_is_refused(loaded: FakeCluster) -> None:
    assert loaded.mapping is not None
    loaded.mapping["properties"]["embedding"] = {"type": "dense_vector", "dims": 768}
    with pytest.raises(KnowledgeSourceError, match="embedding has 768 dimensions but the embedder gives 3"):
        make(loaded, embedder=StubEmbedder()).add(CORPUS)


def test_a_concurrently_created_index_is_used(cluster: FakeCluster) -> None:
    def created_meanwhile(r: Request) -> Reply | None:
        if r.method == "HEAD":
            return 404, {}
        return None

    cluster.exists, cluster.mapping = True, EXPECTED_MAPPINGS
    cluster.intercept = created_meanwhile
    make(cluster).add(CORPUS[:1])
    assert cluster.paths() == ["HEAD /agentkit", "PUT /agentkit", "GET /agentkit/_mapping", "PUT /_bulk"]


# --- bulk errors, get, delete, count ------------------------------------------------------


def test_refused_documents_are_reported_and_the_others_stay(cluster: FakeCluster) -> None:
    def refuse_bees(doc_id: str, source: dict[str, Any]) -> dict[str, Any] | None:
        if doc_id != "bees#0":
            return None
        return {"status": 400, "error": {
            "type": "document_parsing_exception",
            "reason": "[1:120] failed to parse field [metadata] of type [flattened]",
            "caused_by": {"type": "illegal_argument_exception", "reason": "depth limit exceeded"},
        }}  # fmt: skip

    cluster.reject = refuse_bees
    source = make(cluster)
    with pytest.raises(BulkIngestError) as info:
        source.add(CORPUS)
    error = info.value
    assert isinstance(error, IngestError)
    assert error.failures == {
        "bees#0": "400 document_parsing_exception: [1:120] failed to parse field [metadata] of type [flattened]: "
        "depth limit exceeded"
    }
    assert error.written == 2
    assert "1 of 3 passages were refused" in str(error) and "bees#0: 400 document_parsing_exception" in str(error)
    assert ids(source.get(["tides#0", "bees#0", "rust#0"])) == ["tides#0", "rust#0"]


def test_get_reads_mget_docs_in_the_order_asked(loaded: FakeCluster) -> None:
    got = make(loaded).get(["rust#0", "missing#0", "tides#0", "rust#0"])
    assert loaded.requests[-1].path == "/agentkit/_mget"
    assert loaded.requests[-1].params == {"_source_excludes": "embedding"}
    assert loaded.requests[-1].body == {"ids": ["rust#0", "missing#0", "tides#0"]}
    assert ids(got) == ["rust#0", "tides#0"]
    rust, tides = got
    assert rust.metadata == {"topic": "software", "draft": True} and rust.source == "docs"
    assert (tides.text, tides.title, tides.uri) == ("Tides are caused by the Moon.", "Tides", "doc://tides#chunk=0")


def test_delete_sends_bulk_deletes_and_ignores_missing_ids(loaded: FakeCluster) -> None:
    source = make(loaded, refresh=True)
    source.delete(["tides#0", "never-stored#0", "tides#0"])
    bulk = loaded.requests[-1]
    assert bulk.params == {"refresh": "true"}
    assert bulk.body == [{"delete": {"_id": "tides#0", "_index": "agentkit"}},
                         {"delete": {"_id": "never-stored#0", "_index": "agentkit"}}]  # fmt: skip
    assert source.count() == 2
    assert loaded.requests[-1].path == "/agentkit/_count"


def test_an_empty_store_answers_without_creating_the_index(cluster: FakeCluster) -> None:
    source = make(cluster)
    assert source.count() == 0
    assert source.get(["tides#0"]) == []
    assert source.search("tides", k=3) == []
    source.delete(["tides#0"])
    source.add([])
    assert not cluster.exists
    assert not any(r.method == "PUT" for r in cluster.requests)


def test_ids_longer_than_elasticsearch_allows_are_hashed(cluster: FakeCluster) -> None:
    long_id = "file:///" + "x" * 600 + "#chunk=0"
    source = make(cluster)
    source.add([Passage(long_id, "long")])
    [stored_id] = cluster.docs
    assert stored_id.startswith("sha256:") and len(stored_id) < 512
    assert ids(source.get([long_id])) == [long_id]


# --- search request bodies ----------------------------------------------------------------


def test_bm25_body_and_hits(loaded: FakeCluster) -> None:
    loaded.on_search = lambda body: search_reply(
        [("bees#0", 3.5, loaded.docs["bees#0"]), ("tides#0", 1.25, loaded.docs["tides#0"])]
    )
    found = make(loaded).search("Why do bees dance?", k=4)
    assert loaded.searches() == [{
        "query": {"multi_match": {"query": "Why do bees dance?", "fields": ["title^2", "text"], "type": "most_fields"}},
        "size": 4,
        "_source": SOURCE_EXCLUDES,
    }]  # fmt: skip
    assert ids(found) == ["bees#0", "tides#0"]
    assert [p.score for p in found] == [3.5, 1.25]
    assert all(p.source == "docs" for p in found)
    assert found[0].metadata == {"topic": "biology", "year": 2019}


def test_boosts_and_match_type_are_configurable(loaded: FakeCluster) -> None:
    make(loaded, title_boost=3, text_boost=1.5, match_type="best_fields").search("bees", k=1)
    assert loaded.searches()[0]["query"]["multi_match"]["fields"] == ["title^3", "text^1.5"]
    assert loaded.searches()[0]["query"]["multi_match"]["type"] == "best_fields"


def test_filters_become_bool_filter_terms(loaded: FakeCluster) -> None:
    make(loaded).search("bees", k=2, filters={"topic": ["earth", "biology"], "draft": True})
    assert loaded.searches()[0]["query"] == {
        "bool": {
            "must": [{"multi_match": {"query": "bees", "fields": ["title^2", "text"], "type": "most_fields"}}],
            "filter": [
                {"terms": {"metadata.topic": ["earth", "biology"]}},
                {"term": {"metadata.draft": "true"}},
            ],
        }
    }


def test_filter_clauses_follow_the_reference_semantics() -> None:
    assert filter_clauses(None) == []
    assert filter_clauses({"topic": "earth"}) == [{"term": {"metadata.topic": "earth"}}]
    # flattened indexes numbers as their JSON text: 2021 is "2021", 2021.0 is "2021.0"
    assert filter_clauses({"year": 2021}) == [{"terms": {"metadata.year": ["2021", "2021.0"]}}]
    assert filter_clauses({"score": 0.5}) == [{"term": {"metadata.score": "0.5"}}]
    assert filter_clauses({"draft": False}) == [{"term": {"metadata.draft": "false"}}]
    assert filter_clauses({"lang": None}) == [{"bool": {"must_not": [{"exists": {"field": "metadata.lang"}}]}}]
    assert filter_clauses({"lang": ["en", None]}) == [{"bool": {"should": [
        {"term": {"metadata.lang": "en"}},
        {"bool": {"must_not": [{"exists": {"field": "metadata.lang"}}]}},
    ], "minimum_should_match": 1}}]  # fmt: skip
    assert filter_clauses({"topic": []}) is None
    with pytest.raises(KnowledgeSourceError, match="not a string, number, boolean or null"):
        filter_clauses({"nested": {"a": 1}})


def test_a_filter_on_no_values_matches_nothing_without_a_request(loaded: FakeCluster) -> None:
    assert make(loaded).search("bees", filters={"topic": []}) == []
    assert loaded.requests == []


def test_empty_queries_and_k_zero_send_nothing(loaded: FakeCluster) -> None:
    source = make(loaded)
    assert source.search("", k=3) == [] and source.search("  ", k=3) == [] and source.search("bees", k=0) == []
    assert loaded.requests == []


def test_a_huge_query_is_cut_to_its_first_distinct_words(loaded: FakeCluster) -> None:
    make(loaded).search(" ".join(["moon tides ocean gravity"] * 2500), k=3)
    assert loaded.searches()[0]["query"]["multi_match"]["query"] == "moon tides ocean gravity"
    words = [f"w{i}" for i in range(3000)]
    make(loaded).search(" ".join(words), k=3)
    assert loaded.searches()[1]["query"]["multi_match"]["query"].split() == words[:MAX_QUERY_WORDS]


def test_dense_body_is_a_knn_search(loaded: FakeCluster) -> None:
    make(loaded, mode="dense", embedder=StubEmbedder(), num_candidates=50).search(
        "bees", k=5, filters={"topic": "biology"}
    )
    assert loaded.searches() == [{
        "knn": {
            "field": "embedding",
            "query_vector": [0.1, 0.2, 0.3],
            "k": 5,
            "num_candidates": 50,
            "filter": [{"term": {"metadata.topic": "biology"}}],
        },
        "size": 5,
        "_source": SOURCE_EXCLUDES,
    }]  # fmt: skip


def test_num_candidates_is_at_least_k(loaded: FakeCluster) -> None:
    make(loaded, mode="dense", embedder=StubEmbedder(), num_candidates=10).search("bees", k=20)
    assert loaded.searches()[0]["knn"]["num_candidates"] == 20


# --- hybrid -------------------------------------------------------------------------------

RRF_BODY = {
    "retriever": {
        "rrf": {
            "retrievers": [
                {"standard": {"query": {"bool": {
                    "must": [{"multi_match": {"query": "bees", "fields": ["title^2", "text"], "type": "most_fields"}}],
                    "filter": [{"term": {"metadata.topic": "biology"}}],
                }}}},
                {"knn": {"field": "embedding", "query_vector": [0.1, 0.2, 0.3], "k": 40, "num_candidates": 100,
                         "filter": [{"term": {"metadata.topic": "biology"}}]}},
            ],
            "rank_window_size": 40,
            "rank_constant": 30,
        }
    },
    "size": 3,
    "_source": SOURCE_EXCLUDES,
}  # fmt: skip


def hybrid(cluster: FakeCluster, **options: Any) -> ElasticsearchSource:
    return make(cluster, mode="hybrid", embedder=StubEmbedder(), **options)


def test_hybrid_uses_the_servers_rrf_retriever(loaded: FakeCluster) -> None:
    loaded.version = "8.15.3"
    loaded.on_search = lambda body: search_reply([("bees#0", 0.032, loaded.docs["bees#0"])])
    found = hybrid(loaded, rank_window_size=40, rank_constant=30).search("bees", k=3, filters={"topic": "biology"})
    assert loaded.paths() == ["GET /", "POST /agentkit/_search"]
    assert loaded.searches() == [RRF_BODY]
    assert ids(found) == ["bees#0"] and found[0].score == pytest.approx(0.032)


def lexical_and_dense(cluster: FakeCluster, refuse: Reply) -> None:
    """Refuse the rrf retriever; answer BM25 with tides, bees, rust and kNN with rust, tides, new."""
    doc = cluster.docs

    def answer(body: dict[str, Any]) -> Reply:
        if "retriever" in body:
            return refuse
        if "knn" in body:
            return search_reply([("rust#0", 0.9, doc["rust#0"]), ("tides#0", 0.8, doc["tides#0"]),
                                 ("new#0", 0.7, {"id": "new#0", "text": "new"})])  # fmt: skip
        return search_reply([("tides#0", 7.0, doc["tides#0"]), ("bees#0", 5.0, doc["bees#0"]),
                             ("rust#0", 1.0, doc["rust#0"])])  # fmt: skip

    cluster.on_search = answer


LICENCE = es_error(
    403, "security_exception", "current license is non-compliant for [Reciprocal Rank Fusion (RRF)]",
    **{"license.expired.feature": "Reciprocal Rank Fusion (RRF)"},
)  # fmt: skip


def test_hybrid_fuses_here_when_the_licence_lacks_rrf(loaded: FakeCluster) -> None:
    loaded.version = "8.17.0"
    lexical_and_dense(loaded, LICENCE)
    source = hybrid(loaded, rank_window_size=10)
    found = source.search("tides", k=3)
    # RRF with rank_constant 60: tides 1/61 + 1/62, rust 1/63 + 1/61, bees 1/62, new 1/63
    assert ids(found) == ["tides#0", "rust#0", "bees#0"]
    assert [p.score for p in found] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    bodies = loaded.searches()
    assert [next(iter(b)) for b in bodies] == ["retriever", "query", "knn"]
    assert bodies[1]["size"] == 10 and bodies[2]["knn"]["k"] == 10
    # Once refused, the server is not asked again.
    loaded.requests.clear()
    assert ids(source.search("tides", k=3)) == ["tides#0", "rust#0", "bees#0"]
    assert [next(iter(b)) for b in loaded.searches()] == ["query", "knn"]


def test_hybrid_fuses_here_when_the_server_does_not_know_retrievers(loaded: FakeCluster) -> None:
    loaded.version = "8.14.0"
    lexical_and_dense(loaded, es_error(400, "parsing_exception", "Unknown key for a START_OBJECT in [retriever]."))
    assert ids(hybrid(loaded).search("tides", k=2)) == ["tides#0", "rust#0"]


def test_hybrid_on_a_server_before_retrievers_fuses_here_without_trying(loaded: FakeCluster) -> None:
    loaded.version = "8.13.4"
    lexical_and_dense(loaded, es_error(500, "should_not_be_sent", "no"))
    assert ids(hybrid(loaded).search("tides", k=2)) == ["tides#0", "rust#0"]
    assert [next(iter(b)) for b in loaded.searches()] == ["query", "knn"]


def test_fusion_client_never_asks_the_server(loaded: FakeCluster) -> None:
    lexical_and_dense(loaded, es_error(500, "should_not_be_sent", "no"))
    assert ids(hybrid(loaded, fusion="client").search("tides", k=2)) == ["tides#0", "rust#0"]
    assert "GET /" not in loaded.paths()


def test_fusion_server_reports_the_licence(loaded: FakeCluster) -> None:
    lexical_and_dense(loaded, LICENCE)
    with pytest.raises(KnowledgeSourceError, match=r"licence does not cover .*non-compliant.*fusion to auto or client"):
        hybrid(loaded, fusion="server").search("tides", k=2)


def test_reciprocal_rank_fusion() -> None:
    a, b, c = (Passage(i, i) for i in "abc")
    fused = rrf([[a, b], [b, c]], k=1, limit=5)
    assert ids(fused) == ["b", "a", "c"]
    assert [p.score for p in fused] == pytest.approx([1 / 3 + 1 / 2, 1 / 2, 1 / 3])
    assert ids(rrf([[a, b], [b, a]], limit=1)) == ["a"]  # a tie keeps first appearance


# --- connection, credentials, errors ------------------------------------------------------


class RecordingElasticsearch:
    """Stands in for `elasticsearch.Elasticsearch` to see how the source builds its client."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingElasticsearch.calls.append(kwargs)

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import elasticsearch

    RecordingElasticsearch.calls = []
    monkeypatch.setattr(elasticsearch, "Elasticsearch", RecordingElasticsearch)
    return RecordingElasticsearch.calls


def test_client_options(recorded: list[dict[str, Any]], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    ElasticsearchSource("docs", url=["https://es1:9200", "https://es2:9200"], api_key="ZW5jb2RlZA==", ca_certs=ca,
                        request_timeout=5, max_retries=2, retry_on_timeout=False)._connect()  # fmt: skip
    ElasticsearchSource("docs", url="http://localhost:9200", username="elastic", password="pw")._connect()
    ElasticsearchSource("docs", url="https://es1:9200", api_key="key-id:secret", verify_certs=False)._connect()
    assert recorded == [
        {"hosts": ["https://es1:9200", "https://es2:9200"], "request_timeout": 5, "max_retries": 2,
         "retry_on_timeout": False, "api_key": "ZW5jb2RlZA==", "verify_certs": True, "ca_certs": str(ca)},
        {"hosts": ["http://localhost:9200"], "request_timeout": 10.0, "max_retries": 3, "retry_on_timeout": True,
         "basic_auth": ("elastic", "pw")},
        {"hosts": ["https://es1:9200"], "request_timeout": 10.0, "max_retries": 3, "retry_on_timeout": True,
         "api_key": ("key-id", "secret"), "verify_certs": False},
    ]  # fmt: skip


def test_a_missing_ca_file_is_a_config_error(recorded: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca_certs: no file at .*nope.pem; fix sources.docs.ca_certs"):
        ElasticsearchSource("docs", url="https://es:9200", ca_certs=tmp_path / "nope.pem").count()


def test_credentials_go_in_the_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    import elasticsearch

    cluster = FakeCluster()
    real = elasticsearch.Elasticsearch
    monkeypatch.setattr(elasticsearch, "Elasticsearch", lambda **kw: real(node_class=node_class(cluster), **kw))
    ElasticsearchSource("docs", url="http://es.test:9200", api_key="ZW5jb2RlZA==").count()
    ElasticsearchSource("docs", url="http://es.test:9200", username="elastic", password="pw").count()
    assert cluster.requests[0].headers["authorization"] == "ApiKey ZW5jb2RlZA=="
    assert cluster.requests[1].headers["authorization"] == "Basic " + base64.b64encode(b"elastic:pw").decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_cluster_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = ElasticsearchSource("docs", url=url, max_retries=0, request_timeout=2)
    for call in (lambda: source.search("tides"), source.count, lambda: source.add(CORPUS), source.warm_up):
        with pytest.raises(
            SourceUnavailable,
            match=rf"'docs': cannot reach {url}: .*refused.*start the cluster or fix sources.docs.url",
        ):
            call()


def auth_failure(request: Request) -> Reply:
    return es_error(401, "security_exception", "unable to authenticate with provided credentials and anonymous "
                    "access is not allowed for this request", additional_unsuccessful_credentials="API key")  # fmt: skip


@pytest.mark.parametrize(
    ("options", "fix"),
    [({"api_key": "bad"}, "sources.docs.api_key"), ({"username": "u", "password": "p"}, "sources.docs.username and password"),
     ({}, "set sources.docs.api_key")],
)  # fmt: skip
def test_refused_credentials_name_the_key_to_fix(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], fix: str
) -> None:
    import elasticsearch

    cluster = FakeCluster(intercept=auth_failure)
    real = elasticsearch.Elasticsearch
    monkeypatch.setattr(elasticsearch, "Elasticsearch", lambda **kw: real(node_class=node_class(cluster), **kw))
    with pytest.raises(SourceUnavailable, match=rf"http://es.test:9200 .*\(401.*{fix}"):
        ElasticsearchSource("docs", url="http://es.test:9200", **options).search("tides")


def test_missing_privileges_are_named(cluster: FakeCluster) -> None:
    cluster.intercept = lambda r: es_error(
        403, "security_exception", "action [indices:data/read/search] is unauthorized for API key id [x]"
    )
    with pytest.raises(SourceUnavailable, match=r"may not search on index 'agentkit' \(403: action .*unauthorized"):
        make(cluster).search("tides")


def test_a_client_newer_than_the_server_says_which_client_to_install(cluster: FakeCluster) -> None:
    cluster.intercept = lambda r: (400, {"error": {
        "root_cause": [{"type": "media_type_header_exception", "reason": "Invalid media-type value on headers [Accept]"}],
        "type": "media_type_header_exception", "reason": "Invalid media-type value on headers [Accept]",
        "caused_by": {"type": "status_exception", "reason": "Accept version must be either version 8 or 7, but found 9."},
    }, "status": 400})  # fmt: skip
    with pytest.raises(KnowledgeSourceError, match=r"found 9.*pip install \"elasticsearch>=8.12,<9\""):
        make(cluster).count()


def test_other_api_errors_name_the_index_and_the_action(loaded: FakeCluster) -> None:
    loaded.on_search = lambda body: es_error(400, "search_phase_execution_exception", "all shards failed")
    with pytest.raises(
        KnowledgeSourceError, match=r"index 'agentkit' at http://es.test:9200\): search failed: 400 search_phase"
    ):
        make(loaded).search("tides")


def test_close_keeps_a_client_it_was_given(loaded: FakeCluster) -> None:
    source = make(loaded)
    source.close()
    assert source.count() == 3


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"api_key": "k", "username": "u", "password": "p"}, "api_key or username/password"),
        ({"username": "u"}, "both username and password"),
        ({"url": "http://es:9200", "ca_certs": "/ca.pem"}, "ca_certs is for https"),
        ({"mode": "hybrid"}, "needs an embedder"),
        ({"url": "http://es"}, "has no port"),
        ({"url": "es:9200"}, "not a URL"),
        ({"url": []}, "at least one URL"),
        ({"index": "Docs"}, "not a usable index name"),
        ({"index": "_docs"}, "not a usable index name"),
        ({"embedder": "no colon"}, "not an import path"),
        ({"mode": "sparse"}, "mode"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_config_rejects_bad_values(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        ElasticsearchSourceConfig.model_validate({"type": "elasticsearch", **bad})


def test_constructor_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match=r"elasticsearch source 'docs': .*needs an embedder"):
        ElasticsearchSource("docs", mode="dense")
    with pytest.raises(ConfigError, match=r"elasticsearch source 'docs': url: .*has no port"):
        ElasticsearchSource("docs", url="http://es")


def test_embedder_from_an_import_path(monkeypatch: pytest.MonkeyPatch, loaded: FakeCluster) -> None:
    module = types.ModuleType("agentkit_test_embedders")
    module.Stub = StubEmbedder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    config = ElasticsearchSourceConfig.model_validate(
        {"mode": "dense", "embedder": "agentkit_test_embedders:Stub", "embedder_options": {"dimension": 3}}
    )
    source = ElasticsearchSource.from_config("docs", config)
    source._client = fake_client(loaded)
    source.search("bees")
    assert loaded.searches()[0]["knn"]["query_vector"] == [0.1, 0.2, 0.3]
    bad = ElasticsearchSource("docs", mode="dense", embedder="agentkit_test_embedders:Missing", client=source._client)
    with pytest.raises(
        ConfigError, match=r"embedder 'agentkit_test_embedders:Missing' cannot be imported.*sources.docs.embedder"
    ):
        bad.search("bees")


def test_hits_without_scores_keep_their_order(loaded: FakeCluster) -> None:
    loaded.on_search = lambda body: search_reply([("bees#0", None, loaded.docs["bees#0"]),
                                                  ("tides#0", None, loaded.docs["tides#0"])])  # fmt: skip
    found = make(loaded).search("bees")
    assert ids(found) == ["bees#0", "tides#0"] and found[0].score > found[1].score


def test_the_cluster_config_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.config import load_config
    from agentkit.plugins import build_source, registry

    monkeypatch.setitem(registry().knowledge_classes, "elasticsearch", ElasticsearchSource)
    monkeypatch.setenv("ES_API_KEY", "ZW5jb2RlZA==")
    config = load_config(ROOT / "configs" / "elasticsearch.yaml")
    [(name, spec)] = [(n, s) for n, s in config.sources.items() if s["type"] == "elasticsearch"]
    source = build_source(name, spec, config.data_dir)
    assert isinstance(source, ElasticsearchSource)
    assert len(source.urls) > 1 and all(u.startswith("https://") for u in source.urls)
    assert source.api_key == "ZW5jb2RlZA==" and source.verify_certs and source.ca_certs is not None
    assert config.ingest.source == name


def test_importing_the_module_does_not_import_the_client() -> None:
    code = "import sys, agentkit.knowledge.elasticsearch; print('elasticsearch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# --- a real cluster -----------------------------------------------------------------------

ES_URL = os.environ.get("AGENTKIT_ES_URL")
SKIP_REASON = (
    "never run against a real Elasticsearch (index mappings, BM25 ranking, filters, kNN and RRF are "
    "checked only as request bodies); set AGENTKIT_ES_URL=http://localhost:9200 (and AGENTKIT_ES_API_KEY "
    "or AGENTKIT_ES_USERNAME/AGENTKIT_ES_PASSWORD, AGENTKIT_ES_CA_CERTS) to run it against one"
)
live = pytest.mark.skipif(not ES_URL, reason=SKIP_REASON)


def live_source(**options: Any) -> Iterator[ElasticsearchSource]:
    index = f"agentkit-test-{uuid.uuid4().hex[:12]}"
    source = ElasticsearchSource(
        "live", "contract test index", url=ES_URL or "", index=index, refresh="wait_for",
        api_key=os.environ.get("AGENTKIT_ES_API_KEY"), username=os.environ.get("AGENTKIT_ES_USERNAME"),
        password=os.environ.get("AGENTKIT_ES_PASSWORD"), ca_certs=os.environ.get("AGENTKIT_ES_CA_CERTS"), **options,
    )  # fmt: skip
    try:
        yield source
    finally:
        source._connect().options(ignore_status=404).indices.delete(index=index)
        source.close()


@live
class TestLiveContract(WritableSourceContract):
    @pytest.fixture()
    def source(self) -> Iterator[ElasticsearchSource]:
        yield from live_source()


class HashEmbedder:
    """Words hashed into 64 buckets: a toy embedding, enough to exercise kNN and fusion."""

    dimension = 64

    def embed_query(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        for word in text.lower().split():
            vec[int.from_bytes(word.strip(".,?!").encode()[:8].ljust(8, b"_"), "little") % self.dimension] += 1.0
        return vec if any(vec) else [1.0] + [0.0] * (self.dimension - 1)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


@live
@pytest.mark.parametrize("fusion", ["auto", "client"])
def test_live_hybrid_finds_the_answer(fusion: str) -> None:
    from agentkit.testing import CORPUS as CONTRACT_CORPUS

    for source in live_source(mode="hybrid", embedder=HashEmbedder(), fusion=fusion):
        source.add(CONTRACT_CORPUS)
        found = source.search("What causes the tides of the oceans?", k=3, filters={"topic": "earth"})
        assert ids(found)[0] == "tides#0"
        assert set(ids(found)) <= {"tides#0", "volcano#0"}
