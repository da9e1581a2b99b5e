"""The Elasticsearch knowledge source: BM25 over title and text, optional kNN and hybrid retrieval.

For passages kept in an Elasticsearch 8.x or 9.x cluster, reached through the official client.

Modes
-----
`bm25` (default) runs a `multi_match` over `title^2` and `text`, both analysed with the `english`
analyzer. `dense` runs a `knn` search over `embedding`, a `dense_vector` written by an embedder
(any object with `embed_query`, `embed_documents` and `dimension`). `hybrid` fuses the two with
reciprocal rank fusion: in the server (an `rrf` retriever) where the cluster offers it, or here,
from two searches, where it does not (before 8.14, or where the licence lacks RRF).

The index is created by the first `add`, with explicit mappings; an existing index whose mapping
lacks agentkit's fields is refused rather than written to. Client and server must share their
major version (the 9.x client sends `compatible-with=9`, which an 8.x server rejects): for an 8.x
cluster, `pip install "elasticsearch>=8.12,<9"`.

Layout: the options are stated once, in `settings.py`; documents, ids and filters are in
`documents.py`, the reading of errors and replies in `replies.py`. This module keeps the source's
life cycle, index, writing, reading and request bodies together (about 620 lines), since each
part reads the same settings and client, and splitting them would scatter one request's path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from agentkit.errors import AgentkitError, ConfigError, KnowledgeSourceError
from agentkit.knowledge.base import Filters
from agentkit.knowledge.elasticsearch.documents import (
    EMBEDDING,
    bounded,
    boosted,
    document,
    es_id,
    filter_clauses,
    indexed_text,
)
from agentkit.knowledge.elasticsearch.replies import (
    RRF_SINCE,
    BulkIngestError,
    client_urls,
    error_reason,
    error_type,
    item_reason,
    load_embedder,
    translate,
    version_tuple,
)
from agentkit.knowledge.elasticsearch.settings import ElasticsearchSourceConfig, Embedder, redact
from agentkit.knowledge.fusion import rrf
from agentkit.knowledge.options import EMBEDDER_GIVEN, SettingsAttributes, settings_from_options
from agentkit.types import Passage

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from typing_extensions import Self

log = logging.getLogger(__name__)


class ElasticsearchSource(SettingsAttributes):
    """Passages in an Elasticsearch index; writable, with metadata filters.

    `ElasticsearchSource("docs", url="https://es:9200", api_key=...)` connects on first use (or
    `warm_up()`); until the first `add` creates the index, searches return []. Pass `client=` to
    use an `Elasticsearch` client of your own (its owner closes it; `close()` does not).

    The options are the fields of `ElasticsearchSourceConfig`: pass them as keywords, or a ready
    model as `settings=`; each reads as an attribute (`source.index`). `embedder` may also be a
    ready object (with `embed_query`, `embed_documents` and `dimension`) instead of an import path.
    """

    config_model: ClassVar[type[BaseModel]] = ElasticsearchSourceConfig
    settings: ElasticsearchSourceConfig

    def __init__(
        self,
        name: str = "elasticsearch",
        description: str | None = None,
        *,
        settings: ElasticsearchSourceConfig | None = None,
        embedder: Embedder | str | None = None,
        client: Elasticsearch | None = None,
        **options: Any,
    ) -> None:
        if isinstance(embedder, str):
            options["embedder"] = embedder
            embedder = None
        if settings is None:
            url = options.get("url")
            if url is None and client is not None:
                url = client_urls(client)
            if url is not None:
                options["url"] = [url] if isinstance(url, str) else list(url)
            if options.get("ca_certs") is not None:
                options["ca_certs"] = str(options["ca_certs"])
            if options.get("embedder_options") is not None:
                options["embedder_options"] = dict(options["embedder_options"])
            options = {key: value for key, value in options.items() if value is not None or key == "embedder"}
            options.setdefault("description", description or "")
            context = {EMBEDDER_GIVEN: embedder is not None}
            settings = settings_from_options(
                ElasticsearchSourceConfig, options, kind="elasticsearch", name=name, context=context
            )
        elif options:
            raise TypeError(
                f"elasticsearch source {name!r}: give settings= or keyword options ({', '.join(options)}), not both"
            )
        elif description is not None:
            settings = settings.model_copy(update={"description": description})
        if settings.mode != "bm25" and embedder is None and not settings.embedder:
            raise ConfigError(f"elasticsearch source {name!r}: mode {settings.mode!r} needs an embedder")
        self.name = name
        self.settings = settings
        self._embedder: Embedder | None = embedder
        self._client: Elasticsearch | None = client
        self._owns_client = client is None
        #: True once the index is known to exist with a usable mapping.
        self._ready = False
        #: Whether hybrid search uses the server's RRF retriever; None until first needed.
        self._server_rrf: bool | None = None
        self._lock = threading.Lock()
        self._embedder_lock = threading.Lock()

    @classmethod
    def from_config(
        cls, name: str, config: ElasticsearchSourceConfig, data_dir: Path | str | None = None
    ) -> ElasticsearchSource:
        return cls(name, settings=config)

    @property
    def urls(self) -> list[str]:
        """The cluster's nodes."""
        url = self.settings.url
        return [url] if isinstance(url, str) else list(url)

    @property
    def ca_certs(self) -> Path | None:
        """The CA file that signed the cluster's certificate, or None."""
        return None if self.settings.ca_certs is None else Path(self.settings.ca_certs).expanduser()

    def __repr__(self) -> str:
        s = self.settings
        return f"ElasticsearchSource({self.name!r}, url={self._where}, index={s.index!r}, mode={s.mode!r})"

    @property
    def _where(self) -> str:
        return ", ".join(redact(u) for u in self.urls)

    # --- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Connect now (and check the credentials), so that a problem shows before the first question."""
        with self._errors("connect"):
            self._connect().info()

    def cap_timeout(self, seconds: float) -> None:
        """Make one request, retries on timeout included, give up within `seconds` (the agent
        passes `agent.source_timeout`): a shorter `request_timeout`, and no more timed-out tries
        than fit in the time."""
        s = self.settings
        per_try = min(s.request_timeout, seconds)
        retries = min(s.max_retries, max(1, int(seconds // per_try)) - 1) if s.retry_on_timeout else s.max_retries
        if (per_try, retries) == (s.request_timeout, s.max_retries):
            return
        self.settings = s.model_copy(update={"request_timeout": per_try, "max_retries": retries})
        with self._lock:
            client = self._client
            if client is not None and not self._owns_client:
                self._client = client.options(request_timeout=per_try, max_retries=retries)
            elif client is not None:
                self._client = None  # the next request builds a client with the new bounds
        if client is not None and self._owns_client:
            client.close()

    def close(self) -> None:
        """Close the connections of a client this source made; a later call opens new ones."""
        with self._lock:
            client = self._client
            if self._owns_client:
                self._client = None
            self._ready = False
            self._server_rrf = None
        if client is not None and self._owns_client:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> Elasticsearch:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> Elasticsearch:
        try:
            from elasticsearch import Elasticsearch
        except ImportError:
            from agentkit.errors import MissingDependency

            raise MissingDependency("elasticsearch", purpose=f"source {self.name!r}") from None
        options: dict[str, Any] = {
            "hosts": self.urls,
            "request_timeout": self.settings.request_timeout,
            "max_retries": self.settings.max_retries,
            "retry_on_timeout": self.settings.retry_on_timeout,
        }
        if self.settings.api_key:
            key_id, colon, secret = self.settings.api_key.partition(":")
            options["api_key"] = (key_id, secret) if colon else self.settings.api_key
        elif self.settings.username:
            options["basic_auth"] = (self.settings.username, self.settings.password or "")
        if any(u.startswith("https://") for u in self.urls):
            # The client refuses TLS options for http:// nodes, so they go in only for https.
            options["verify_certs"] = self.settings.verify_certs
            if self.ca_certs is not None:
                if not self.ca_certs.is_file():
                    raise ConfigError(
                        f"elasticsearch source {self.name!r}: ca_certs: no file at {self.ca_certs}; "
                        f"fix sources.{self.name}.ca_certs"
                    )
                options["ca_certs"] = str(self.ca_certs)
        try:
            return Elasticsearch(**options)
        except ValueError as exc:
            raise ConfigError(f"elasticsearch source {self.name!r}: {exc}") from None

    # --- the index -------------------------------------------------------------------------

    def index_body(self) -> dict[str, Any]:
        """The settings and mappings the index is created with."""
        text = {"type": "text", "analyzer": self.settings.analyzer}
        properties: dict[str, Any] = {
            "id": {"type": "keyword"},
            "doc_id": {"type": "keyword"},
            "title": {**text, "fields": {"keyword": {"type": "keyword", "ignore_above": 512}}},
            "text": text,
            "uri": {"type": "keyword", "ignore_above": 2048},
            # One field for any metadata: every leaf value is indexed as a keyword, so a new key
            # neither adds a mapping (no field explosion) nor clashes with another document's type.
            "metadata": {"type": "flattened", "ignore_above": 1024},
        }
        embedder = self._embedder_or_none()
        if embedder is not None:
            properties[EMBEDDING] = {
                "type": "dense_vector",
                "dims": int(embedder.dimension),
                "index": True,
                "similarity": "cosine",
            }
        body: dict[str, Any] = {"mappings": {"dynamic": False, "properties": properties}}
        settings = {
            key: value
            for key, value in (
                ("number_of_shards", self.settings.number_of_shards),
                ("number_of_replicas", self.settings.number_of_replicas),
            )
            if value is not None
        }
        if settings:
            body["settings"] = {"index": settings}
        return body

    def _ensure_index(self, create: bool) -> bool:
        """Whether the index exists (creating it when `create`), after checking its mapping once."""
        if self._ready:
            return True
        client = self._connect()
        with self._lock:
            if self._ready:
                return True
            if client.indices.exists(index=self.settings.index):
                self._check_mapping(client.indices.get_mapping(index=self.settings.index).body)
            elif create:
                self._create_index(client)
            else:
                return False
            self._ready = True
        return True

    def _create_index(self, client: Elasticsearch) -> None:
        from elasticsearch import BadRequestError

        try:
            client.indices.create(index=self.settings.index, body=self.index_body())
        except BadRequestError as exc:
            # Another process created it between our check and our create.
            if error_type(exc.body) != "resource_already_exists_exception":
                raise
            self._check_mapping(client.indices.get_mapping(index=self.settings.index).body)

    def _check_mapping(self, response: Mapping[str, Any]) -> None:
        """Refuse an index that agentkit did not make: writing to it would index nothing searchable."""
        want = {"id": {"keyword"}, "text": {"text"}, "title": {"text"}, "metadata": {"flattened", "object"}}
        embedder = self._embedder_or_none()
        for concrete, entry in response.items():  # an alias may name several indices
            props = (entry.get("mappings") or {}).get("properties") or {}
            problems = []
            for field, types in want.items():
                got = (props.get(field) or {}).get(
                    "type", "object" if "properties" in (props.get(field) or {}) else None
                )
                if got not in types:
                    problems.append(f"{field} is {got or 'missing'} (want {' or '.join(sorted(types))})")
            if embedder is not None:
                vec = props.get(EMBEDDING) or {}
                if vec.get("type") != "dense_vector":
                    problems.append(f"{EMBEDDING} is {vec.get('type') or 'missing'} (want dense_vector)")
                elif vec.get("dims") is not None and int(vec["dims"]) != int(embedder.dimension):
                    problems.append(
                        f"{EMBEDDING} has {vec['dims']} dimensions but the embedder gives {embedder.dimension}"
                    )
            if problems:
                raise KnowledgeSourceError(
                    f"elasticsearch source '{self.name}': index '{concrete}' exists but its mapping does not fit "
                    f"agentkit ({'; '.join(problems)}); set sources.{self.name}.index to a new name (agentkit "
                    f"creates it) or delete the index"
                )

    # --- writing ---------------------------------------------------------------------------

    def add(self, passages: Sequence[Passage]) -> None:
        """Index or replace `passages` by id through the bulk helper.

        Documents the cluster refuses are reported together in a `BulkIngestError` (id: reason);
        the others are written and stay.
        """
        # Within one call the last passage with an id wins, as a sequence of upserts would.
        unique = list({p.id: p for p in passages}.values())
        if not unique:
            return
        from elasticsearch import helpers

        by_doc_id = {es_id(p.id): p.id for p in unique}
        failures: dict[str, str] = {}
        written = 0
        with self._errors("add"):
            self._ensure_index(create=True)
            for ok, item in helpers.streaming_bulk(
                self._connect(),
                self._index_actions(unique),
                chunk_size=self.settings.batch_size,
                raise_on_error=False,
                max_retries=self.settings.max_retries,  # documents refused with 429 (busy) are sent again
                initial_backoff=1,
                **self._refresh_param(),
            ):
                info = next(iter(item.values()))
                if ok:
                    written += 1
                else:
                    failures[by_doc_id.get(str(info.get("_id")), str(info.get("_id")))] = item_reason(info)
        if failures:
            shown = "; ".join(f"{pid}: {why}" for pid, why in list(failures.items())[:10])
            more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise BulkIngestError(
                f"elasticsearch source '{self.name}': {len(failures)} of {len(unique)} passages were refused by "
                f"index '{self.settings.index}' (the other {written} are stored): {shown}{more}",
                failures,
                written,
            )

    def _index_actions(self, passages: list[Passage]) -> Iterator[dict[str, Any]]:
        embedder = self._embedder_or_none()
        for start in range(0, len(passages), self.settings.batch_size):
            batch = passages[start : start + self.settings.batch_size]
            vectors: Sequence[Sequence[float]] | None = None
            if embedder is not None:
                vectors = self._embed(embedder.embed_documents, [indexed_text(p) for p in batch])
            for i, p in enumerate(batch):
                source = document(p)
                if vectors is not None:
                    source[EMBEDDING] = [float(x) for x in vectors[i]]
                yield {"_op_type": "index", "_index": self.settings.index, "_id": es_id(p.id), "_source": source}

    def delete(self, ids: Sequence[str]) -> None:
        """Delete the passages with these ids; ids that are not stored are ignored."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        from elasticsearch import helpers

        failures: dict[str, str] = {}
        with self._errors("delete"):
            if not self._ensure_index(create=False):
                return
            actions = ({"_op_type": "delete", "_index": self.settings.index, "_id": es_id(i)} for i in wanted)
            by_doc_id = {es_id(i): i for i in wanted}
            for ok, item in helpers.streaming_bulk(
                self._connect(),
                actions,
                chunk_size=self.settings.batch_size,
                raise_on_error=False,
                max_retries=self.settings.max_retries,
                initial_backoff=1,
                **self._refresh_param(),
            ):
                info = next(iter(item.values()))
                if not ok and info.get("status") != 404:  # 404: was not there
                    failures[by_doc_id.get(str(info.get("_id")), str(info.get("_id")))] = item_reason(info)
        if failures:
            shown = "; ".join(f"{pid}: {why}" for pid, why in list(failures.items())[:10])
            raise KnowledgeSourceError(
                f"elasticsearch source '{self.name}': {len(failures)} passages could not be deleted from "
                f"index '{self.settings.index}': {shown}"
            )

    def _refresh_param(self) -> dict[str, Any]:
        return {} if self.settings.refresh is False else {"refresh": self.settings.refresh}

    # --- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        from elasticsearch import NotFoundError

        with self._errors("count"):
            try:
                return int(self._connect().count(index=self.settings.index)["count"])
            except NotFoundError:
                return 0

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """The stored passages among `ids`, in the order asked; missing ids are left out."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        from elasticsearch import NotFoundError

        with self._errors("get"):
            try:
                response = self._connect().mget(
                    index=self.settings.index, ids=[es_id(i) for i in wanted], source_excludes=[EMBEDDING]
                )
            except NotFoundError:
                return []
        found: dict[str, Passage] = {}
        for doc in response["docs"]:
            if doc.get("found"):
                p = self._passage(doc["_id"], doc.get("_source") or {}, 0.0)
                found[p.id] = p
        return [found[i] for i in wanted if i in found]

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        """The `k` best passages for `query` among those matching `filters`, by the source's mode."""
        if k <= 0 or not query.strip():
            return []
        clauses = filter_clauses(filters)
        if clauses is None:  # a key filtered on an empty list of values matches nothing
            return []
        from elasticsearch import NotFoundError

        with self._errors("search"):
            try:
                if self.settings.mode == "bm25":
                    return self._hits(self.bm25_body(query, k, clauses))
                vector = self._embed_query(query)
                if self.settings.mode == "dense":
                    return self._hits(self.knn_body(vector, k, clauses))
                return self._hybrid(query, vector, k, clauses)
            except NotFoundError as exc:
                if error_type(exc.body) in ("index_not_found_exception", None):
                    return []  # nothing was ever added
                raise

    # --- request bodies --------------------------------------------------------------------

    def bm25_query(self, query: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        match: dict[str, Any] = {
            "multi_match": {
                "query": bounded(query),
                "fields": [boosted("title", self.settings.title_boost), boosted("text", self.settings.text_boost)],
                "type": self.settings.match_type,
            }
        }
        return {"bool": {"must": [match], "filter": clauses}} if clauses else match

    def bm25_body(self, query: str, k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        return {"query": self.bm25_query(query, clauses), "size": k, "_source": {"excludes": [EMBEDDING]}}

    def knn_clause(self, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        knn: dict[str, Any] = {
            "field": EMBEDDING,
            "query_vector": vector,
            "k": k,
            "num_candidates": max(self.settings.num_candidates, k),
        }
        if clauses:
            knn["filter"] = clauses
        return knn

    def knn_body(self, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        return {"knn": self.knn_clause(vector, k, clauses), "size": k, "_source": {"excludes": [EMBEDDING]}}

    def rrf_body(self, query: str, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        window = max(self.settings.rank_window_size, k)
        return {
            "retriever": {
                "rrf": {
                    "retrievers": [
                        {"standard": {"query": self.bm25_query(query, clauses)}},
                        {"knn": self.knn_clause(vector, window, clauses)},
                    ],
                    "rank_window_size": window,
                    "rank_constant": self.settings.rank_constant,
                }
            },
            "size": k,
            "_source": {"excludes": [EMBEDDING]},
        }

    # --- hybrid ----------------------------------------------------------------------------

    def _hybrid(self, query: str, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> list[Passage]:
        if self._use_server_rrf():
            from elasticsearch import ApiError

            try:
                return self._hits(self.rrf_body(query, vector, k, clauses))
            except ApiError as exc:
                # 400: retrievers or rrf unknown to this cluster; 403: its licence lacks RRF.
                if self.settings.fusion == "server" or exc.status_code not in (400, 403):
                    raise
                reason = f"{exc.status_code} {error_type(exc.body)}: {error_reason(exc.body)}"
            fused = self._client_rrf(query, vector, k, clauses)
            # The two searches worked alone, so it was the fusion the cluster refused: stop asking.
            self._server_rrf = False
            log.info("elasticsearch source %r: server-side RRF refused (%s); fusing here instead", self.name, reason)
            return fused
        return self._client_rrf(query, vector, k, clauses)

    def _use_server_rrf(self) -> bool:
        if self.settings.fusion != "auto":
            return self.settings.fusion == "server"
        if self._server_rrf is None:
            self._server_rrf = self._server_has_retrievers()
        return self._server_rrf

    def _server_has_retrievers(self) -> bool:
        from elasticsearch import ApiError

        try:
            info = self._connect().info()
        except ApiError:  # e.g. a key without the monitor privilege: try, and fall back if refused
            return True
        version = info.get("version") or {}
        if version.get("build_flavor") == "serverless":
            return True
        return version_tuple(str(version.get("number", ""))) >= RRF_SINCE

    def _client_rrf(self, query: str, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> list[Passage]:
        window = max(self.settings.rank_window_size, k)
        lexical = self._hits(self.bm25_body(query, window, clauses))
        dense = self._hits(self.knn_body(vector, window, clauses))
        return rrf([lexical, dense], k=self.settings.rank_constant, limit=k)

    # --- helpers ---------------------------------------------------------------------------

    def _hits(self, body: dict[str, Any]) -> list[Passage]:
        response = self._connect().search(index=self.settings.index, body=body)
        out = []
        for position, hit in enumerate(response["hits"]["hits"], start=1):
            score = hit.get("_score")
            if score is None:  # some rank features give `_rank` (1 = best) and no score
                score = 1.0 / float(hit.get("_rank") or position)
            out.append(self._passage(hit["_id"], hit.get("_source") or {}, score))
        return out

    def _passage(self, doc_id: str, source: Mapping[str, Any], score: float | None) -> Passage:
        return Passage(
            id=str(source.get("id", doc_id)),
            text=source.get("text") or "",
            title=source.get("title") or "",
            source=self.name,
            score=float(score or 0.0),
            metadata=dict(source.get("metadata") or {}),
            uri=source.get("uri") or "",
        )

    def _embedder_or_none(self) -> Embedder | None:
        s = self.settings
        if self._embedder is None and s.embedder:
            with self._embedder_lock:  # loading a model twice would cost memory and time
                if self._embedder is None:
                    self._embedder = load_embedder(self.name, s.embedder, s.embedder_options)
        return self._embedder

    def _embed_query(self, query: str) -> list[float]:
        embedder = self._embedder_or_none()
        if embedder is None:
            raise ConfigError(f"elasticsearch source {self.name!r}: mode {self.settings.mode!r} needs an embedder")
        return [float(x) for x in self._embed(embedder.embed_query, query)]

    def _embed(self, method: Any, arg: Any) -> Any:
        try:
            return method(arg)
        except AgentkitError:
            raise
        except Exception as exc:
            raise KnowledgeSourceError(
                f"elasticsearch source '{self.name}': the embedder failed: {type(exc).__name__}: {exc}"
            ) from exc

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn the client's exceptions into agentkit's, naming this source and what to do."""
        try:
            yield
        except AgentkitError:
            raise
        except Exception as exc:
            translated = translate(exc, action, name=self.name, where=self._where, settings=self.settings)
            if translated is None:
                raise
            raise translated from exc
