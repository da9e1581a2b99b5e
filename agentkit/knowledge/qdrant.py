"""A Qdrant knowledge source: BM25 sparse vectors, optionally dense vectors beside them, searched
alone or together (hybrid), in a Qdrant server or in an embedded store.

One class for three deployments: a server (`url=`), a store on disk (`path=`), one in memory.

Which engine runs the embedded store (`engine="auto"`)
-----------------------------------------------------
Embedded stores (`path=` or `location=":memory:"`) run on qdrant-edge (`EdgeShard`: Qdrant's
segment code in-process, in Rust) unless `engine="client"` asks for qdrant-client's local mode
(pure Python and numpy). Measured with `bench/embedded_store.py` on SciFact (5,183 abstracts as
whole passages, the 300 judged test queries, k=10, BM25 k1=1.2 b=0.75 avg_len=256, 2 CPU cores),
through `QdrantSource.add` (encode + upsert) and `QdrantSource.search` (encode, query, passages):

    engine                        ingest passages/s   query median / p95 ms   nDCG@10
    qdrant-edge, path                  7,100               0.29 / 0.36          0.683
    qdrant-edge, :memory:              7,900               0.29 / 0.35          0.683
    qdrant-client local, path            730                165 / 193           0.683
    qdrant-client local, :memory:      5,900                165 / 215           0.683
    bm25s 0.3 (peer, PyStemmer)        5,800               0.46 / 1.07          0.679

Local mode scores every stored vector in Python on each query, about 500 times slower than the
edge shard's inverted index; on disk it also writes through SQLite, 10 times slower, and
`import qdrant_client` alone takes about 1 s against 7 ms for qdrant_edge. Both engines get the
same vectors from the same encoder, so their scores and rankings are identical. (With other
processes loading both cores, edge ingestion fell to ~4,200/s and its median stayed under 0.3 ms.)
A `path` that already holds a qdrant-client local store (`meta.json`) keeps being opened with
qdrant-client, so what was ingested with it stays visible.

On disk, qdrant-client keeps its own layout under `path` (`meta.json`, `collection/NAME/`); the
edge engine keeps one shard per collection under `path/edge/NAME/`.

Dense and hybrid search (`dense:` and `mode:`)
----------------------------------------------
With a `dense:` encoder (see `agentkit.knowledge.embeddings`) every point carries two named
vectors: "bm25" (sparse, Qdrant's IDF modifier) and "dense" (cosine). `mode: bm25 | dense |
hybrid` picks what a search uses; hybrid (the default once `dense:` is given) is one Query API
call that prefetches the best `prefetch` (default 4 k) of each and fuses them with RRF (k=60,
`weights` for BM25 and dense), on either engine; ties are settled by passage id, so results
repeat from run to run. Measured with `bench/hybrid_retrieval.py` on SciFact (the 300 judged
queries; all-MiniLM-L6-v2 int8, encoding 19 passages/s on 2 cores; qdrant-edge):

    mode      nDCG@10   R@100   MRR@10   query median ms (dense: 5 ms of it encoding the query)
    bm25       0.683    0.921   0.647       0.4
    dense      0.647    0.922   0.605       6.4
    hybrid     0.714    0.968   0.679       7.7
    bm25s      0.679    0.913   0.643       0.8   (peer, no store)

A collection created without dense vectors cannot gain them: re-ingest into a new collection.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkit.errors import ConfigError, KnowledgeSourceError, SourceUnavailable, StoreLocked
from agentkit.knowledge.base import Filters, matches
from agentkit.knowledge.embeddings import Embedder, EmbedderConfig, build_embedder
from agentkit.knowledge.fusion import RRF_K, CrossEncoderReranker, RerankerConfig, build_reranker
from agentkit.knowledge.sparse import BM25Encoder
from agentkit.types import Passage

if TYPE_CHECKING:
    from qdrant_edge import SparseVector
    from typing_extensions import Self

Engine = Literal["auto", "client", "edge"]
Mode = Literal["bm25", "dense", "hybrid"]

#: The named sparse vector BM25 lives in, and the named dense vector beside it.
SPARSE_VECTOR = "bm25"
DENSE_VECTOR = "dense"
MEMORY = ":memory:"

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def point_id(passage_id: str) -> str:
    """The Qdrant point id of a passage: Qdrant takes only ints and UUIDs, so a UUID5 of the id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, passage_id))


class QdrantSourceConfig(BaseModel):
    """A Qdrant store searched with BM25: `url` for a server, else `path` (default) or `location`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["qdrant"] = "qdrant"
    description: str = "Documents you ingested, searched by keywords (BM25)."
    #: A directory for the embedded store; relative paths are under data_dir. Default: data_dir/qdrant.
    path: str | None = None
    url: str | None = None
    api_key: str | None = None
    #: ":memory:" for a store that lives as long as the process.
    location: str | None = None
    collection: str = "agentkit"
    engine: Engine = "auto"
    batch_size: int = Field(256, ge=1, description="Passages per upsert.")
    timeout: float = Field(10.0, gt=0, description="Seconds a server request may take.")
    k1: float = Field(1.2, ge=0.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    avg_len: float = Field(256.0, gt=0, description="Expected passage length in words, after stopwords.")
    language: str = Field("english", description="Snowball stemmer and stopword language.")
    #: A dense encoder, e.g. `{model: all-MiniLM-L6-v2}`; points then carry a dense vector too.
    dense: EmbedderConfig | None = None
    #: What a search uses; unset = hybrid with `dense`, bm25 without.
    mode: Mode | None = None
    #: Candidates each retriever hands to the fusion in hybrid search; unset = 4 k.
    prefetch: int | None = Field(default=None, ge=1)
    rrf_k: int = Field(default=RRF_K, ge=1, description="The RRF constant of hybrid search.")
    #: Weights of the BM25 and the dense ranking in hybrid search (Qdrant's weighted RRF).
    weights: tuple[float, float] = (1.0, 1.0)
    #: An offline cross-encoder that reorders the best results; off when unset.
    rerank: RerankerConfig | None = None

    @field_validator("location")
    @classmethod
    def _memory_only(cls, value: str | None) -> str | None:
        if value is not None and value != MEMORY:
            raise ValueError(f"only ':memory:' is allowed, got {value!r}; use url: for a server, path: for a folder")
        return value

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not _COLLECTION_NAME.match(value):
            raise ValueError(f"{value!r} is not a usable collection name; use letters, digits, '_', '-' and '.'")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> QdrantSourceConfig:
        given = [key for key in ("path", "url", "location") if getattr(self, key)]
        if len(given) > 1:
            raise ValueError(f"give one of path, url, location, not {' and '.join(given)}")
        if self.url and self.engine == "edge":
            raise ValueError("engine 'edge' is embedded and cannot talk to a server; drop engine or url")
        if self.mode in ("dense", "hybrid") and self.dense is None:
            raise ValueError(f"mode {self.mode!r} needs a dense encoder: add dense: {{model: all-MiniLM-L6-v2}}")
        if any(w < 0 for w in self.weights) or not any(self.weights):
            raise ValueError(f"weights must be >= 0 and not all 0, got {list(self.weights)}")
        return self


class QdrantSource:
    """BM25, dense or hybrid search over passages kept in Qdrant; writable, with metadata filters.

    `QdrantSource("docs", path="~/kb")` opens nothing: the store is opened on first use (or by
    `warm_up()`) and the collection is created by the first `add`; until then searches return [].
    With neither `path`, `url` nor `location` the store is in memory. `dense=EmbedderConfig()` (or
    an `embedder`) adds dense vectors and makes hybrid search the default `mode`.
    """

    config_model: ClassVar[type[BaseModel]] = QdrantSourceConfig

    def __init__(
        self,
        name: str = "qdrant",
        description: str = "",
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        collection: str = "agentkit",
        engine: Engine = "auto",
        batch_size: int = 256,
        timeout: float = 10.0,
        k1: float = 1.2,
        b: float = 0.75,
        avg_len: float = 256.0,
        language: str = "english",
        encoder: BM25Encoder | None = None,
        dense: EmbedderConfig | None = None,
        embedder: Embedder | None = None,
        mode: Mode | None = None,
        prefetch: int | None = None,
        rrf_k: int = RRF_K,
        weights: tuple[float, float] = (1.0, 1.0),
        rerank: RerankerConfig | None = None,
        reranker: CrossEncoderReranker | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if path is None and url is None and location is None:
            location = MEMORY
        try:
            QdrantSourceConfig(
                path=None if path is None else str(path), url=url, location=location, collection=collection,
                engine=engine, batch_size=batch_size, timeout=timeout, k1=k1, b=b, avg_len=avg_len,
                language=language, dense=dense if embedder is None else dense or EmbedderConfig(), mode=mode,
                prefetch=prefetch, rrf_k=rrf_k, weights=weights, rerank=rerank,
            )  # fmt: skip
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            reasons = "; ".join(
                ".".join(map(str, e["loc"])) + (": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()  # type: ignore[attr-defined]
            )
            raise ConfigError(f"qdrant source {name!r}: {reasons}") from None
        self.name = name
        self.description = description
        self.path = None if path is None else Path(path).expanduser()
        self.url = url
        self.api_key = api_key
        self.location = location
        self.collection = collection
        self.requested_engine: Engine = engine
        self.batch_size = batch_size
        self.timeout = timeout
        self.encoder = encoder or BM25Encoder(k1=k1, b=b, avg_len=avg_len, language=language)
        if embedder is None and dense is not None:
            # Vectors are cached beside the store they were made for, or in memory.
            if cache_dir is None and self.path is not None:
                cache_dir = self.path / "embeddings"
            embedder = build_embedder(dense, cache_dir)
        self.embedder: Embedder | None = embedder
        self.mode: Mode = mode or ("hybrid" if embedder is not None else "bm25")
        self.prefetch = prefetch
        self.rrf_k = rrf_k
        self.weights = (float(weights[0]), float(weights[1]))
        self.reranker = reranker if reranker is not None else build_reranker(rerank)
        self._store: _EdgeStore | _ClientStore | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, config: QdrantSourceConfig, data_dir: Path | str | None = None) -> QdrantSource:
        path: Path | None = None
        if config.path or not (config.url or config.location):
            path = Path(config.path or "qdrant").expanduser()
            if not path.is_absolute():
                path = Path(data_dir or ".").expanduser() / path
        return cls(
            name,
            config.description,
            path=path,
            url=config.url,
            api_key=config.api_key,
            location=config.location,
            collection=config.collection,
            engine=config.engine,
            batch_size=config.batch_size,
            timeout=config.timeout,
            k1=config.k1,
            b=config.b,
            avg_len=config.avg_len,
            language=config.language,
            dense=config.dense,
            mode=config.mode,
            prefetch=config.prefetch,
            rrf_k=config.rrf_k,
            weights=config.weights,
            rerank=config.rerank,
            cache_dir=Path(data_dir).expanduser() / "embeddings" if data_dir is not None else None,
        )

    def __repr__(self) -> str:
        return (
            f"QdrantSource({self.name!r}, {self._where}, collection={self.collection!r}, engine={self.engine!r}, "
            f"mode={self.mode!r})"
        )

    @property
    def engine(self) -> Literal["client", "edge"]:
        """The engine that runs (or will run) the store; `auto` resolved as the module docstring says."""
        if self.url or self.requested_engine == "client":
            return "client"
        if self.requested_engine == "edge":
            return "edge"
        if self.path is not None and (self.path / "meta.json").is_file():
            return "client"  # an existing qdrant-client local store
        return "edge"

    @property
    def _where(self) -> str:
        return f"url={self.url}" if self.url else f"path={self.path}" if self.path else "location=:memory:"

    # --- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Connect to the server or open the store now, and load the encoders, so that a problem
        shows before the first question."""
        self._open(create=False)
        for model in (self.embedder, self.reranker):
            warm = getattr(model, "warm_up", None)
            if warm is not None:
                warm()

    def cap_timeout(self, seconds: float) -> None:
        """Make a server request give up within `seconds` (the agent passes agent.source_timeout);
        an embedded store has no requests to bound."""
        if self.url and seconds < self.timeout:
            self.timeout = seconds
            store = self._store
            if isinstance(store, _ClientStore):
                store.timeout = seconds  # read when its client is made, on first use

    def close(self) -> None:
        """Release the store (and its lock on `path`); a later call opens it again."""
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            with self._errors("close"):
                store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, create: bool) -> _EdgeStore | _ClientStore | None:
        """The open store, or None when it does not exist yet and `create` is false."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._new_store()
                store = self._store
        with self._errors("open"):
            return store if store.open(create) else None

    def _new_store(self) -> _EdgeStore | _ClientStore:
        # The dense size is asked for lazily: a bundled model knows it without loading.
        embedder = self.embedder
        dense_size = (lambda: embedder.dimension) if embedder is not None else None
        store: _EdgeStore | _ClientStore
        if self.engine == "edge":
            store = _EdgeStore(None if self.path is None else self.path / "edge" / self.collection, dense_size)
        else:
            store = _ClientStore(
                self.collection,
                url=self.url,
                api_key=self.api_key,
                path=self.path,
                timeout=self.timeout,
                dense_size=dense_size,
            )
        store.describe = f"qdrant source '{self.name}': collection '{self.collection}' ({self._where})"
        store.fix = f"sources.{self.name}.collection"
        return store

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn an engine's exception into agentkit's, naming this source and what to do."""
        try:
            yield
        except KnowledgeSourceError:
            raise
        except Exception as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: Exception, action: str) -> KnowledgeSourceError:
        kind = type(exc).__name__
        text = str(exc)
        prefix = f"qdrant source '{self.name}'"
        transport = isinstance(exc, OSError) or type(exc).__module__.startswith("httpx")
        unreachable = kind == "ResponseHandlingException" or transport
        if self.url and unreachable:
            reason = getattr(exc, "source", None) or exc
            return SourceUnavailable(
                f"{prefix}: cannot reach {self.url}: {reason}; "
                f"start the server or fix sources.{self.name}.url in your config"
            )
        if self.url and kind == "UnexpectedResponse" and getattr(exc, "status_code", None) in (401, 403):
            return SourceUnavailable(
                f"{prefix}: {self.url} refused the API key ({exc.status_code}); "  # type: ignore[attr-defined]
                f"fix sources.{self.name}.api_key in your config"
            )
        if "already accessed by another instance" in text or "WouldBlock" in text:
            where = self.path if self.engine == "client" else self.path and self.path / "edge" / self.collection
            return StoreLocked(
                f"{prefix}: the store at {where} is held by another agentkit process (or another source "
                f"object in this one); stop that process, or serve the data from a Qdrant server "
                f"(sources.{self.name}.url) so that several processes can share it",
                path=where,
            )
        if kind == "UnexpectedResponse":
            text = f"{exc.status_code} {exc.content.decode(errors='replace')[:300]}"  # type: ignore[attr-defined]
        return KnowledgeSourceError(f"{prefix} ({self._where}): {action} failed: {kind}: {text}")

    # --- writing ---------------------------------------------------------------------------

    def add(self, passages: Sequence[Passage]) -> None:
        """Insert or replace `passages` by id, `batch_size` at a time."""
        # Within one call the last passage with an id wins, as a sequence of upserts would.
        unique = list({p.id: p for p in passages}.values())
        if not unique:
            return
        store = self._open(create=True)
        assert store is not None
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            texts = [_indexed_text(p) for p in batch]
            dense: Sequence[list[float] | None] = [None] * len(batch)
            if self.embedder is not None:
                dense = _as_lists(self.embedder.embed_documents(texts))
            points = [
                (point_id(p.id), self.encoder.embed_document(text), vec, _payload(p))
                for p, text, vec in zip(batch, texts, dense)
            ]
            with self._errors("add"):
                store.upsert(points)

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        store = self._open(create=False)
        if store is not None:
            with self._errors("delete"):
                store.delete([point_id(i) for i in dict.fromkeys(ids)])

    # --- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        store = self._open(create=False)
        if store is None:
            return 0
        with self._errors("count"):
            return store.count()

    def ids_where(self, filters: Filters) -> list[str]:
        """Ids of every stored passage whose metadata matches `filters` (a scroll, no ranking)."""
        terms = _filter_terms(filters)
        store = self._open(create=False) if terms is not None else None
        if store is None:
            return []
        native, _ = store.build_filter(terms)
        with self._errors("scroll"):
            payloads = store.scroll(native)
        # Conditions the engine could not express are checked here, as in search().
        return [str(pl["id"]) for pl in payloads if pl and matches(pl.get("metadata") or {}, filters)]

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """The stored passages among `ids`, in the order asked; missing ids are left out."""
        wanted = list(dict.fromkeys(ids))
        store = self._open(create=False) if wanted else None
        if store is None:
            return []
        with self._errors("get"):
            payloads = store.retrieve([point_id(i) for i in wanted])
        found = {pl["id"]: pl for pl in payloads if pl}
        return [self._passage(found[i], 0.0) for i in wanted if i in found]

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        """The `k` best passages for `query` among those matching `filters`: by BM25, by cosine
        similarity of dense vectors, or both fused by RRF, as `mode` says; then reranked if a
        reranker is set."""
        if k <= 0 or not query.strip():
            return []
        terms = _filter_terms(filters)
        if terms is None:  # a key filtered on an empty list of values matches nothing
            return []
        sparse = self.encoder.embed_query(query) if self.mode != "dense" else None
        if sparse is not None and not sparse.indices and self.mode == "bm25":
            return []  # only stopwords
        store = self._open(create=False)
        if store is None:
            return []
        dense: list[float] | None = None
        if self.mode != "bm25":
            assert self.embedder is not None
            dense = _as_lists([self.embedder.embed_query(query)])[0]
        if sparse is not None and not sparse.indices:
            sparse = None  # only stopwords: the dense half alone
        want = k if self.reranker is None else max(k, self.reranker.top_k)
        native, exact = store.build_filter(terms)
        # Conditions the engine cannot express are checked here, so fetch more than k of them.
        limit = want if exact else max(4 * want, 64)
        while True:
            prefetch = max(self.prefetch or 4 * want, limit)
            with self._errors("search"):
                hits = store.query(
                    sparse, dense, limit, native, prefetch=prefetch, rrf_k=self.rrf_k, weights=self.weights
                )
            out = [self._passage(pl, score) for score, pl in hits if matches(pl.get("metadata") or {}, filters)]
            if len(out) >= want or len(hits) < limit:
                break
            limit *= 4
        if self.reranker is not None:
            return self.reranker.rerank(query, out[:want], k)
        return out[:k]

    def _passage(self, payload: dict[str, Any], score: float) -> Passage:
        return Passage(
            id=str(payload["id"]),
            text=payload.get("text", ""),
            title=payload.get("title", ""),
            source=self.name,
            score=float(score),
            metadata=payload.get("metadata") or {},
            uri=payload.get("uri", ""),
        )


# --- payloads and filters -----------------------------------------------------------------


def _indexed_text(p: Passage) -> str:
    # The title is searchable too, as in MemorySource.
    return f"{p.title}\n{p.text}" if p.title else p.text


def _payload(p: Passage) -> dict[str, Any]:
    # A JSON round trip gives every engine the same plain values (dates as ISO strings, tuples as
    # lists), so what comes back does not depend on the engine.
    metadata = json.loads(json.dumps(p.metadata, default=str)) if p.metadata else {}
    return {"id": p.id, "text": p.text, "title": p.title, "uri": p.uri, "metadata": metadata}


#: (payload path or None when the key cannot be written as one, accepted values) per filter key.
_Terms = list[tuple[str | None, list[Any]]]


def _filter_terms(filters: Filters | None) -> _Terms | None:
    terms: _Terms = []
    for key, want in (filters or {}).items():
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        if not values:
            return None
        if _PLAIN_KEY.match(key):
            path: str | None = f"metadata.{key}"
        elif '"' not in key:
            path = f'metadata."{key}"'
        else:
            path = None
        terms.append((path, values))
    return terms


def _pushable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float))


#: (point id, BM25 vector, dense vector or None, payload): one point as the stores take it.
_Point = tuple[str, "SparseVector", "list[float] | None", dict[str, Any]]


def _check_dense(have: dict[str, int] | None, want: int, describe: str, fix: str) -> None:
    """Refuse to use a collection whose dense vectors are missing or of another size."""
    if have is not None and have.get(DENSE_VECTOR) == want:
        return
    found = (
        f"has {have[DENSE_VECTOR]}-dimensional dense vectors"
        if have and DENSE_VECTOR in have
        else "was created without dense vectors (BM25 only)"
    )
    raise KnowledgeSourceError(
        f"{describe} {found}, but the configured encoder makes {want}-dimensional ones; a collection "
        f"cannot change its vectors: re-ingest into a new collection (set {fix} to a new name and run "
        f"agentkit ingest), or remove dense: to keep searching this one by BM25"
    )


#: Points per page when listing ids by filter (`ids_where`).
_SCROLL_PAGE = 1024

#: Fused results fetched past the limit, so that ties at the cut are settled by `_settle_ties`.
TIE_MARGIN = 8


def _settle_ties(hits: list[tuple[float, dict[str, Any]]], limit: int) -> list[tuple[float, dict[str, Any]]]:
    """Order fused hits by score, then passage id, and cut to `limit`.

    RRF gives equal scores to, say, the 5th BM25 hit and the 5th dense hit; qdrant-edge returns
    such ties in an order that changes from run to run (about 0.007 nDCG@10 on SciFact), so the
    engine's order is replaced by a reproducible one that is the same on every engine.
    """
    hits.sort(key=lambda hit: (-hit[0], str(hit[1].get("id", ""))))
    return hits[:limit]


def _as_lists(rows: Any) -> list[list[float]]:
    # An embedder may return an array (fast path) or lists; the engines take lists of floats.
    if hasattr(rows, "tolist"):
        return rows.tolist()  # a float array gives Python floats, ten times faster than a loop
    return [[float(x) for x in row] for row in rows]


def _vectors(sparse: Any, dense: list[float] | None) -> dict[str, Any]:
    return {SPARSE_VECTOR: sparse} if dense is None else {SPARSE_VECTOR: sparse, DENSE_VECTOR: dense}


# --- engines ------------------------------------------------------------------------------


class _EdgeStore:
    """One qdrant-edge shard: in `directory`, or in a temporary one removed with the store."""

    def __init__(self, directory: Path | None, dense_size: Callable[[], int] | None = None) -> None:
        self.temporary = directory is None
        self.directory = directory
        self.dense_size = dense_size
        self.describe = "the qdrant-edge store"
        self.fix = "collection"
        self._shard: Any = None
        self._qe: Any = None
        self._lock = threading.Lock()

    def open(self, create: bool) -> bool:
        if self._shard is not None:
            return True
        with self._lock:
            if self._shard is not None:
                return True
            import qdrant_edge as qe

            self._qe = qe
            config_file = None if self.directory is None else self.directory / "edge_config.json"
            if config_file is not None and config_file.is_file():
                if self.dense_size is not None:
                    vectors = json.loads(config_file.read_text(encoding="utf-8")).get("vectors") or {}
                    sizes = {name: int(params.get("size", 0)) for name, params in vectors.items()}
                    _check_dense(sizes, self.dense_size(), self.describe, self.fix)
                self._shard = qe.EdgeShard.load(str(self.directory))
            elif create:
                if self.directory is None:
                    self.directory = Path(tempfile.mkdtemp(prefix="agentkit-qdrant-"))
                    weakref.finalize(self, shutil.rmtree, self.directory, True)
                self.directory.mkdir(parents=True, exist_ok=True)
                dense = None
                if self.dense_size is not None:
                    dense = {DENSE_VECTOR: qe.EdgeVectorParams(size=self.dense_size(), distance=qe.Distance.Cosine)}
                config = qe.EdgeConfig(
                    vectors=dense,
                    sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                    # A store that dies with the process needs no write-ahead log.
                    wal_enabled=False if self.temporary else None,
                )
                self._shard = qe.EdgeShard.create(str(self.directory), config)
            else:
                return False
        return True

    def close(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            if not self.temporary:
                shard.flush()
            shard.close()
        if self.temporary and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def build_filter(self, terms: _Terms) -> tuple[Any, bool]:
        qe = self._qe
        must: list[Any] = []
        exact = True
        for path, values in terms:
            # qdrant-edge 0.9 turns MatchValue(True) into MatchValue(1), which never matches a
            # stored boolean, so booleans are filtered in Python.
            if path is None or not all(_pushable(v) and not isinstance(v, bool) for v in values):
                exact = False
                continue
            conds = [self._condition(path, v) for v in values]
            must.append(conds[0] if len(conds) == 1 else qe.Filter(should=conds))
        return (qe.Filter(must=must) if must else None), exact

    def _condition(self, path: str, value: Any) -> Any:
        qe = self._qe
        if value is None:
            return qe.IsEmptyCondition(path)
        if isinstance(value, str):
            return qe.FieldCondition(key=path, match=qe.MatchValue(value))
        # A range matches ints and floats alike, as Python's 3 == 3.0 does.
        return qe.FieldCondition(key=path, range=qe.RangeFloat(gte=float(value), lte=float(value)))

    def upsert(self, points: list[_Point]) -> None:
        qe = self._qe
        batch = [qe.Point(pid, _vectors(sparse, dense), payload) for pid, sparse, dense, payload in points]
        self._shard.update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: list[str]) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points(ids))

    def count(self) -> int:
        return int(self._shard.count(self._qe.CountRequest(exact=True)))

    def scroll(self, native_filter: Any) -> list[dict[str, Any]]:
        qe = self._qe
        out: list[dict[str, Any]] = []
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=_SCROLL_PAGE, filter=native_filter, with_payload=["id", "metadata"], with_vector=False
            )
            records, offset = self._shard.scroll(request)
            out.extend(r.payload for r in records)
            if offset is None:
                return out

    def retrieve(self, ids: list[str]) -> list[dict[str, Any]]:
        return [r.payload for r in self._shard.retrieve(ids, with_payload=True, with_vector=False)]

    def query(
        self,
        sparse: SparseVector | None,
        dense: list[float] | None,
        limit: int,
        native_filter: Any,
        *,
        prefetch: int,
        rrf_k: int,
        weights: tuple[float, float],
    ) -> list[tuple[float, dict[str, Any]]]:
        """By one vector, or (both given) by RRF over a prefetch of each."""
        qe = self._qe
        nearest = [
            qe.Query.Nearest(vec, using=name)
            for name, vec in ((SPARSE_VECTOR, sparse), (DENSE_VECTOR, dense))
            if vec is not None
        ]
        if not nearest:
            return []
        options: dict[str, Any] = {"query": nearest[0]}
        if len(nearest) == 2:
            options = {
                # The filter goes into each prefetch too, so that each fills its limit with matches.
                "prefetches": [qe.Prefetch(limit=prefetch, query=q, filter=native_filter) for q in nearest],
                "query": qe.Fusion.Rrf(k=rrf_k, weights=list(weights)),
            }
        fused = len(nearest) == 2
        request = qe.QueryRequest(
            limit=limit + TIE_MARGIN if fused else limit,
            filter=native_filter,
            with_payload=True,
            with_vector=False,
            **options,
        )
        hits = [(p.score, p.payload) for p in self._shard.query(request)]
        return _settle_ties(hits, limit) if fused else hits


class _ClientStore:
    """A collection reached through qdrant-client: on a server, or in its local (Python) mode."""

    def __init__(
        self,
        collection: str,
        *,
        url: str | None,
        api_key: str | None,
        path: Path | None,
        timeout: float,
        dense_size: Callable[[], int] | None = None,
    ) -> None:
        self.collection = collection
        self.dense_size = dense_size
        self.describe = f"collection '{collection}'"
        self.fix = "collection"
        self.url = url
        self.api_key = api_key
        self.path = path
        self.timeout = timeout
        self._client: Any = None
        self._models: Any = None
        self._exists = False
        self._open_lock = threading.Lock()
        # Local mode is plain Python over shared arrays, with no locking of its own.
        self._op_lock: Any = nullcontext() if url else threading.RLock()

    def open(self, create: bool) -> bool:
        if self._exists:
            return True
        with self._open_lock:
            if self._client is None:
                from qdrant_client import QdrantClient, models

                self._models = models
                if self.url:
                    self._client = QdrantClient(
                        url=self.url,
                        api_key=self.api_key,
                        timeout=math.ceil(self.timeout),  # qdrant-client takes whole seconds
                        check_compatibility=False,  # one request fewer; reachability is checked next
                    )
                elif self.path is not None:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = QdrantClient(path=str(self.path))
                else:
                    self._client = QdrantClient(location=MEMORY)
            if not self._exists:
                self._exists = self._client.collection_exists(self.collection)
                if self._exists and self.dense_size is not None:
                    self._check_dense()
            if not self._exists and create:
                self._create()
                self._exists = True
        return self._exists

    def _check_dense(self) -> None:
        vectors = self._client.get_collection(self.collection).config.params.vectors
        sizes = {name: int(params.size) for name, params in vectors.items()} if isinstance(vectors, dict) else {}
        assert self.dense_size is not None
        try:
            _check_dense(sizes, self.dense_size(), self.describe, self.fix)
        except KnowledgeSourceError:
            self._exists = False
            raise

    def _create(self) -> None:
        models = self._models
        dense = {}
        if self.dense_size is not None:
            dense = {DENSE_VECTOR: models.VectorParams(size=self.dense_size(), distance=models.Distance.COSINE)}
        try:
            self._client.create_collection(
                self.collection,
                vectors_config=dense,
                sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        except Exception:
            # Another process may have created it between our check and our create.
            if not self._client.collection_exists(self.collection):
                raise

    def close(self) -> None:
        client, self._client = self._client, None
        self._exists = False
        if client is not None:
            client.close()

    def build_filter(self, terms: _Terms) -> tuple[Any, bool]:
        models = self._models
        must: list[Any] = []
        exact = True
        for path, values in terms:
            if path is None or not all(_pushable(v) for v in values):
                exact = False
                continue
            if len(values) > 1 and all(isinstance(v, str) for v in values):
                must.append(models.FieldCondition(key=path, match=models.MatchAny(any=values)))
                continue
            conds = [self._condition(path, v) for v in values]
            must.append(conds[0] if len(conds) == 1 else models.Filter(should=conds))
        return (models.Filter(must=must) if must else None), exact

    def _condition(self, path: str, value: Any) -> Any:
        models = self._models
        if value is None:
            return models.IsEmptyCondition(is_empty=models.PayloadField(key=path))
        if isinstance(value, (str, bool)):
            return models.FieldCondition(key=path, match=models.MatchValue(value=value))
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))

    def upsert(self, points: list[_Point]) -> None:
        models = self._models
        structs = [
            models.PointStruct(
                id=pid,
                vector=_vectors(models.SparseVector(indices=sparse.indices, values=sparse.values), dense),
                payload=payload,
            )
            for pid, sparse, dense, payload in points
        ]
        with self._op_lock:
            self._client.upsert(self.collection, points=structs, wait=True)

    def delete(self, ids: list[str]) -> None:
        with self._op_lock:
            self._client.delete(self.collection, points_selector=self._models.PointIdsList(points=ids), wait=True)

    def count(self) -> int:
        with self._op_lock:
            return int(self._client.count(self.collection, exact=True).count)

    def scroll(self, native_filter: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = None
        while True:
            with self._op_lock:
                records, offset = self._client.scroll(
                    self.collection, scroll_filter=native_filter, limit=_SCROLL_PAGE, offset=offset,
                    with_payload=["id", "metadata"], with_vectors=False,
                )
            out.extend(r.payload for r in records)
            if offset is None:
                return out

    def retrieve(self, ids: list[str]) -> list[dict[str, Any]]:
        with self._op_lock:
            records = self._client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=False)
        return [r.payload for r in records]

    def query(
        self,
        sparse: SparseVector | None,
        dense: list[float] | None,
        limit: int,
        native_filter: Any,
        *,
        prefetch: int,
        rrf_k: int,
        weights: tuple[float, float],
    ) -> list[tuple[float, dict[str, Any]]]:
        """By one vector, or (both given) by RRF over a prefetch of each (Qdrant >= 1.16 on a server)."""
        models = self._models
        nearest: list[tuple[Any, str]] = []
        if sparse is not None:
            nearest.append((models.SparseVector(indices=sparse.indices, values=sparse.values), SPARSE_VECTOR))
        if dense is not None:
            nearest.append((dense, DENSE_VECTOR))
        if not nearest:
            return []
        options: dict[str, Any] = {"query": nearest[0][0], "using": nearest[0][1]}
        if len(nearest) == 2:
            options = {
                "prefetch": [
                    models.Prefetch(query=vec, using=name, limit=prefetch, filter=native_filter)
                    for vec, name in nearest
                ],
                "query": models.RrfQuery(rrf=models.Rrf(k=rrf_k, weights=list(weights))),
            }
        fused = len(nearest) == 2
        with self._op_lock:
            response = self._client.query_points(
                self.collection,
                limit=limit + TIE_MARGIN if fused else limit,
                query_filter=native_filter,
                with_payload=True,
                with_vectors=False,
                **options,
            )
        hits = [(p.score, p.payload) for p in response.points]
        return _settle_ties(hits, limit) if fused else hits
