"""The Qdrant knowledge source: BM25 sparse vectors, optionally dense vectors beside them, searched
alone or together (hybrid), in a Qdrant server or in an embedded store.

One class for three deployments: a server (`url=`), a store on disk (`path=`), one in memory. Its
options are stated once, in `QdrantSourceConfig`; the engines live in `engine_edge.py` and
`engine_client.py` behind the `Store` interface of `engine.py`.

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
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agentkit.errors import ConfigError, KnowledgeSourceError, SourceUnavailable, StoreLocked
from agentkit.knowledge.base import Filters, matches
from agentkit.knowledge.embeddings import Embedder, EmbedderConfig, build_embedder
from agentkit.knowledge.fusion import RRF_K, CrossEncoderReranker, RerankerConfig, build_reranker
from agentkit.knowledge.options import EMBEDDER_GIVEN, SettingsAttributes, settings_from_options
from agentkit.knowledge.qdrant.engine import MEMORY, Store, Terms
from agentkit.knowledge.qdrant.engine_client import ClientStore
from agentkit.knowledge.qdrant.engine_edge import EdgeStore
from agentkit.knowledge.sparse import BM25Encoder
from agentkit.types import Passage

if TYPE_CHECKING:
    from typing_extensions import Self

Engine = Literal["auto", "client", "edge"]
Mode = Literal["bm25", "dense", "hybrid"]

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
    def _one_place(self, info: ValidationInfo) -> QdrantSourceConfig:
        given = [key for key in ("path", "url", "location") if getattr(self, key)]
        if len(given) > 1:
            raise ValueError(f"give one of path, url, location, not {' and '.join(given)}")
        if self.url and self.engine == "edge":
            raise ValueError("engine 'edge' is embedded and cannot talk to a server; drop engine or url")
        embedder_given = bool(info.context and info.context.get(EMBEDDER_GIVEN))
        if self.mode in ("dense", "hybrid") and self.dense is None and not embedder_given:
            raise ValueError(f"mode {self.mode!r} needs a dense encoder: add dense: {{model: all-MiniLM-L6-v2}}")
        if any(w < 0 for w in self.weights) or not any(self.weights):
            raise ValueError(f"weights must be >= 0 and not all 0, got {list(self.weights)}")
        return self




class QdrantSource(SettingsAttributes):
    """BM25, dense or hybrid search over passages kept in Qdrant; writable, with metadata filters.

    `QdrantSource("docs", path="~/kb")` opens nothing: the store is opened on first use (or by
    `warm_up()`) and the collection is created by the first `add`; until then searches return [].
    With neither `path`, `url` nor `location` the store is in memory. `dense=EmbedderConfig()` (or
    an `embedder`) adds dense vectors and makes hybrid search the default `mode`.

    The options are the fields of `QdrantSourceConfig`: pass them as keywords, or a ready model as
    `settings=`; each reads as an attribute (`source.collection`). Besides them the source takes
    objects that no config file names: a BM25 `encoder`, a dense `embedder`, a `reranker`, and the
    `cache_dir` of dense vectors.
    """

    config_model: ClassVar[type[BaseModel]] = QdrantSourceConfig
    settings: QdrantSourceConfig

    def __init__(
        self,
        name: str = "qdrant",
        description: str | None = None,
        *,
        settings: QdrantSourceConfig | None = None,
        encoder: BM25Encoder | None = None,
        embedder: Embedder | None = None,
        reranker: CrossEncoderReranker | None = None,
        cache_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        if settings is None:
            if isinstance(options.get("path"), Path):
                options["path"] = str(options["path"])
            options.setdefault("description", description or "")
            context = {EMBEDDER_GIVEN: embedder is not None}
            settings = settings_from_options(QdrantSourceConfig, options, kind="qdrant", name=name, context=context)
        elif options:
            raise TypeError(
                f"qdrant source {name!r}: give settings= or keyword options ({', '.join(options)}), not both"
            )
        elif description is not None:
            settings = settings.model_copy(update={"description": description})
        if not (settings.path or settings.url or settings.location):
            # A config's default folder, data_dir/qdrant, is resolved by from_config; alone, memory.
            settings = settings.model_copy(update={"location": MEMORY})
        self.name = name
        self.settings = settings
        self.encoder = encoder or BM25Encoder(
            k1=settings.k1, b=settings.b, avg_len=settings.avg_len, language=settings.language
        )
        if embedder is None and settings.dense is not None:
            # Vectors are cached beside the store they were made for, or in memory.
            if cache_dir is None and self.path is not None:
                cache_dir = self.path / "embeddings"
            embedder = build_embedder(settings.dense, cache_dir)
        self.embedder: Embedder | None = embedder
        if settings.mode in ("dense", "hybrid") and embedder is None:
            raise ConfigError(f"qdrant source {name!r}: mode {settings.mode!r} needs a dense encoder or an embedder")
        self.reranker = reranker if reranker is not None else build_reranker(settings.rerank)
        self._store: Store | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, config: QdrantSourceConfig, data_dir: Path | str | None = None) -> QdrantSource:
        """The source `config` describes; a relative `path` (default: qdrant) is under `data_dir`."""
        if config.path or not (config.url or config.location):
            path = Path(config.path or "qdrant").expanduser()
            if not path.is_absolute():
                path = Path(data_dir or ".").expanduser() / path
            config = config.model_copy(update={"path": str(path)})
        cache_dir = Path(data_dir).expanduser() / "embeddings" if data_dir is not None else None
        return cls(name, settings=config, cache_dir=cache_dir)

    def __repr__(self) -> str:
        return (
            f"QdrantSource({self.name!r}, {self._where}, collection={self.settings.collection!r}, "
            f"engine={self.engine!r}, mode={self.mode!r})"
        )

    @property
    def path(self) -> Path | None:
        """The folder of an embedded store on disk, or None."""
        return None if self.settings.path is None else Path(self.settings.path).expanduser()

    @property
    def mode(self) -> Mode:
        """What a search uses: the `mode` setting, or when unset, hybrid with dense vectors and bm25 without."""
        return self.settings.mode or ("hybrid" if self.embedder is not None else "bm25")

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self.settings = self.settings.model_copy(update={"mode": mode})

    @property
    def engine(self) -> Literal["client", "edge"]:
        """The engine that runs (or will run) the store; `auto` resolved as the module docstring says."""
        if self.settings.url or self.settings.engine == "client":
            return "client"
        if self.settings.engine == "edge":
            return "edge"
        if self.path is not None and (self.path / "meta.json").is_file():
            return "client"  # an existing qdrant-client local store
        return "edge"

    @property
    def _where(self) -> str:
        url = self.settings.url
        return f"url={url}" if url else f"path={self.path}" if self.path else "location=:memory:"

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
        if self.settings.url and seconds < self.settings.timeout:
            self.settings = self.settings.model_copy(update={"timeout": seconds})
            store = self._store
            if isinstance(store, ClientStore):
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

    def _open(self, create: bool) -> Store | None:
        """The open store, or None when it does not exist yet and `create` is false."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._new_store()
                store = self._store
        with self._errors("open"):
            return store if store.open(create) else None

    def _new_store(self) -> Store:
        # The dense size is asked for lazily: a bundled model knows it without loading.
        embedder = self.embedder
        dense_size = (lambda: embedder.dimension) if embedder is not None else None
        store: Store
        if self.engine == "edge":
            store = EdgeStore(None if self.path is None else self.path / "edge" / self.settings.collection, dense_size)
        else:
            store = ClientStore(
                self.settings.collection,
                url=self.settings.url,
                api_key=self.settings.api_key,
                path=self.path,
                timeout=self.settings.timeout,
                dense_size=dense_size,
            )
        store.describe = f"qdrant source '{self.name}': collection '{self.settings.collection}' ({self._where})"
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
        if self.settings.url and unreachable:
            reason = getattr(exc, "source", None) or exc
            return SourceUnavailable(
                f"{prefix}: cannot reach {self.settings.url}: {reason}; "
                f"start the server or fix sources.{self.name}.url in your config"
            )
        if self.settings.url and kind == "UnexpectedResponse" and getattr(exc, "status_code", None) in (401, 403):
            return SourceUnavailable(
                f"{prefix}: {self.settings.url} refused the API key ({exc.status_code}); "  # type: ignore[attr-defined]
                f"fix sources.{self.name}.api_key in your config"
            )
        if "already accessed by another instance" in text or "WouldBlock" in text:
            path = self.path
            where = path if self.engine == "client" else path and path / "edge" / self.settings.collection
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
        for start in range(0, len(unique), self.settings.batch_size):
            batch = unique[start : start + self.settings.batch_size]
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
        s = self.settings
        native, exact = store.build_filter(terms)
        # Conditions the engine cannot express are checked here, so fetch more than k of them.
        limit = want if exact else max(4 * want, 64)
        while True:
            prefetch = max(s.prefetch or 4 * want, limit)
            with self._errors("search"):
                hits = store.query(
                    sparse, dense, limit, native, prefetch=prefetch, rrf_k=s.rrf_k, weights=s.weights
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


def _filter_terms(filters: Filters | None) -> Terms | None:
    terms: Terms = []
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


def _as_lists(rows: Any) -> list[list[float]]:
    # An embedder may return an array (fast path) or lists; the engines take lists of floats.
    if hasattr(rows, "tolist"):
        return rows.tolist()  # a float array gives Python floats, ten times faster than a loop
    return [[float(x) for x in row] for row in rows]
