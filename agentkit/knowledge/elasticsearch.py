"""An Elasticsearch knowledge source: BM25 over title and text, optional kNN and hybrid retrieval.

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkit.errors import AgentkitError, ConfigError, IngestError, KnowledgeSourceError, SourceUnavailable
from agentkit.knowledge.base import Filters
from agentkit.knowledge.fusion import rrf
from agentkit.types import Passage

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from typing_extensions import Self

log = logging.getLogger(__name__)

Mode = Literal["bm25", "dense", "hybrid"]
Fusion = Literal["auto", "server", "client"]
MatchType = Literal["best_fields", "most_fields"]
Refresh = bool | Literal["wait_for"]

#: The dense_vector field; left out of every response (`_source` excludes), vectors are large.
EMBEDDING = "embedding"
#: Elasticsearch refuses longer `_id`s; longer passage ids are stored under a hash of themselves.
MAX_ID_BYTES = 512
#: A query with more words is cut (first occurrences kept): each word becomes a clause, and
#: clusters refuse queries with more clauses than their heap allows.
MAX_QUERY_WORDS = 1024
#: Retrievers, and with them the `rrf` retriever, came in 8.14.
RRF_SINCE = (8, 14)

_INDEX_NAME = re.compile(r'^[^-_+.A-Z\\/*?"<>|,# :][^A-Z\\/*?"<>|,# :]*$')


class Embedder(Protocol):
    """What the dense and hybrid modes need from an embedding model."""

    dimension: int

    def embed_query(self, text: str) -> Sequence[float]: ...

    def embed_documents(self, texts: list[str]) -> Sequence[Sequence[float]]: ...


class ElasticsearchSourceConfig(BaseModel):
    """An index in an Elasticsearch cluster, searched by BM25, kNN, or both fused (RRF)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["elasticsearch"] = "elasticsearch"
    description: str = "Documents you ingested, searched in Elasticsearch."
    #: One node's URL, or several (the client spreads requests and fails over between them).
    url: str | list[str] = "http://localhost:9200"
    index: str = "agentkit"
    #: The encoded key Elasticsearch returns (`encoded`), or "id:api_key".
    api_key: str | None = Field(None, repr=False)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    #: A PEM file with the CA that signed the cluster's certificate (https only).
    ca_certs: str | None = None
    #: Leave on: turning it off accepts any server that claims to be the cluster.
    verify_certs: bool = True
    request_timeout: float = Field(10.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(3, ge=0, description="Retries on another node after a connection error.")
    retry_on_timeout: bool = True
    mode: Mode = "bm25"
    #: "auto": the server's RRF retriever where it works, else fusion here; or force one.
    fusion: Fusion = "auto"
    title_boost: float = Field(2.0, ge=0)
    text_boost: float = Field(1.0, ge=0)
    #: most_fields adds the title's score to the text's; best_fields takes the better one.
    match_type: MatchType = "most_fields"
    analyzer: str = Field("english", description="The analyzer of title and text (a built-in one, or defined by you).")
    num_candidates: int = Field(100, ge=1, le=10_000, description="kNN candidates per shard.")
    rank_window_size: int = Field(50, ge=1, le=10_000, description="Hits per retriever that hybrid fusion ranks.")
    rank_constant: int = Field(60, ge=1)
    #: "module:attr" of an embedder object, or of a class/function called with embedder_options.
    embedder: str | None = None
    embedder_options: dict[str, Any] = Field(default_factory=dict)
    #: After each bulk: false (visible within the index's refresh interval), true, or wait_for.
    refresh: Refresh = False
    batch_size: int = Field(500, ge=1, description="Documents per bulk request.")
    number_of_shards: int | None = Field(None, ge=1)
    number_of_replicas: int | None = Field(None, ge=0)

    @field_validator("url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            _check_url(url)
        if isinstance(value, list) and not value:
            raise ValueError("give at least one URL")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not _INDEX_NAME.match(value) or value in (".", "..") or len(value.encode()) > 255:
            raise ValueError(
                f"{value!r} is not a usable index name; use lowercase letters, digits, '-', '_' and '.', "
                "not starting with '-', '_', '+' or '.'"
            )
        return value

    @field_validator("embedder")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\w.]+:[\w.]+$", value):
            raise ValueError(f"{value!r} is not an import path; write it as 'package.module:name'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ElasticsearchSourceConfig:
        if self.api_key and (self.username or self.password):
            raise ValueError("give api_key or username/password, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("basic auth needs both username and password")
        urls = [self.url] if isinstance(self.url, str) else self.url
        if self.ca_certs and not all(u.startswith("https://") for u in urls):
            raise ValueError("ca_certs is for https:// URLs only; use https in url, or drop ca_certs")
        if self.mode != "bm25" and not self.embedder:
            raise ValueError(f"mode {self.mode!r} needs an embedder (embedder: 'package.module:name')")
        return self


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{_redact(url)!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{_redact(url)!r} is not a URL; write it as http://host:9200 or https://host:9200")
    if parts.scheme == "http" and port is None:
        raise ValueError(f"{_redact(url)!r} has no port; write it as http://{parts.hostname}:9200")


def _client_urls(client: Any) -> list[str] | None:
    """The nodes of a ready client, for messages (best effort: None where they cannot be read)."""
    try:
        return [str(node.base_url) for node in client.transport.node_pool.all()] or None
    except (AttributeError, TypeError):
        return None


def _redact(url: str) -> str:
    """`url` without a user:password part, for messages."""
    return re.sub(r"//[^/@]*@", "//", url)


class BulkIngestError(IngestError):
    """Some documents of an `add` were refused; the others were written and stay.

    `failures` maps each refused passage id to the reason Elasticsearch gave.
    """

    def __init__(self, message: str, failures: dict[str, str], written: int) -> None:
        super().__init__(message)
        self.failures = failures
        self.written = written


class ElasticsearchSource:
    """Passages in an Elasticsearch index; writable, with metadata filters.

    `ElasticsearchSource("docs", url="https://es:9200", api_key=...)` connects on first use (or
    `warm_up()`); until the first `add` creates the index, searches return []. Pass `client=` to
    use an `Elasticsearch` client of your own (its owner closes it; `close()` does not).
    """

    config_model: ClassVar[type[BaseModel]] = ElasticsearchSourceConfig

    def __init__(
        self,
        name: str = "elasticsearch",
        description: str = "",
        *,
        url: str | Sequence[str] | None = None,
        index: str = "agentkit",
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_certs: str | Path | None = None,
        verify_certs: bool = True,
        request_timeout: float = 10.0,
        max_retries: int = 3,
        retry_on_timeout: bool = True,
        mode: Mode = "bm25",
        fusion: Fusion = "auto",
        title_boost: float = 2.0,
        text_boost: float = 1.0,
        match_type: MatchType = "most_fields",
        analyzer: str = "english",
        num_candidates: int = 100,
        rank_window_size: int = 50,
        rank_constant: int = 60,
        embedder: Embedder | str | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        refresh: Refresh = False,
        batch_size: int = 500,
        number_of_shards: int | None = None,
        number_of_replicas: int | None = None,
        client: Elasticsearch | None = None,
    ) -> None:
        if url is None:
            url = _client_urls(client) if client is not None else None
        urls = [url] if isinstance(url, str) else list(url or ["http://localhost:9200"])
        try:
            ElasticsearchSourceConfig(
                url=urls, index=index, api_key=api_key, username=username, password=password,
                ca_certs=None if ca_certs is None else str(ca_certs), verify_certs=verify_certs,
                request_timeout=request_timeout, max_retries=max_retries, retry_on_timeout=retry_on_timeout,
                mode=mode, fusion=fusion, title_boost=title_boost, text_boost=text_boost, match_type=match_type,
                analyzer=analyzer, num_candidates=num_candidates, rank_window_size=rank_window_size,
                rank_constant=rank_constant, embedder=embedder if isinstance(embedder, str) else None,
                refresh=refresh, batch_size=batch_size, number_of_shards=number_of_shards,
                number_of_replicas=number_of_replicas,
            )  # fmt: skip
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors = exc.errors()  # type: ignore[attr-defined]
            if mode != "bm25" and embedder is not None and not isinstance(embedder, str):
                errors = [e for e in errors if "needs an embedder" not in e["msg"]]
            if errors:
                reasons = "; ".join(
                    ".".join(map(str, e["loc"])) + (": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                    for e in errors
                )
                raise ConfigError(f"elasticsearch source {name!r}: {reasons}") from None
        self.name = name
        self.description = description
        self.urls = urls
        self.index = index
        self.api_key = api_key
        self.username = username
        self.password = password
        self.ca_certs = None if ca_certs is None else Path(ca_certs).expanduser()
        self.verify_certs = verify_certs
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.retry_on_timeout = retry_on_timeout
        self.mode: Mode = mode
        self.fusion: Fusion = fusion
        self.title_boost = title_boost
        self.text_boost = text_boost
        self.match_type: MatchType = match_type
        self.analyzer = analyzer
        self.num_candidates = num_candidates
        self.rank_window_size = rank_window_size
        self.rank_constant = rank_constant
        self.refresh: Refresh = refresh
        self.batch_size = batch_size
        self.number_of_shards = number_of_shards
        self.number_of_replicas = number_of_replicas
        self._embedder_spec: Embedder | str | None = embedder
        self._embedder_options = dict(embedder_options or {})
        self._embedder: Embedder | None = None if isinstance(embedder, str) else embedder
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
        return cls(
            name,
            config.description,
            url=config.url,
            index=config.index,
            api_key=config.api_key,
            username=config.username,
            password=config.password,
            ca_certs=config.ca_certs,
            verify_certs=config.verify_certs,
            request_timeout=config.request_timeout,
            max_retries=config.max_retries,
            retry_on_timeout=config.retry_on_timeout,
            mode=config.mode,
            fusion=config.fusion,
            title_boost=config.title_boost,
            text_boost=config.text_boost,
            match_type=config.match_type,
            analyzer=config.analyzer,
            num_candidates=config.num_candidates,
            rank_window_size=config.rank_window_size,
            rank_constant=config.rank_constant,
            embedder=config.embedder,
            embedder_options=config.embedder_options,
            refresh=config.refresh,
            batch_size=config.batch_size,
            number_of_shards=config.number_of_shards,
            number_of_replicas=config.number_of_replicas,
        )

    def __repr__(self) -> str:
        return f"ElasticsearchSource({self.name!r}, url={self._where}, index={self.index!r}, mode={self.mode!r})"

    @property
    def _where(self) -> str:
        return ", ".join(_redact(u) for u in self.urls)

    # --- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Connect now (and check the credentials), so that a problem shows before the first question."""
        with self._errors("connect"):
            self._connect().info()

    def cap_timeout(self, seconds: float) -> None:
        """Make one request, retries on timeout included, give up within `seconds` (the agent
        passes `agent.source_timeout`): a shorter `request_timeout`, and no more timed-out tries
        than fit in the time."""
        per_try = min(self.request_timeout, seconds)
        retries = min(self.max_retries, max(1, int(seconds // per_try)) - 1) if self.retry_on_timeout else self.max_retries
        if (per_try, retries) == (self.request_timeout, self.max_retries):
            return
        self.request_timeout, self.max_retries = per_try, retries
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
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": self.retry_on_timeout,
        }
        if self.api_key:
            key_id, colon, secret = self.api_key.partition(":")
            options["api_key"] = (key_id, secret) if colon else self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password or "")
        if any(u.startswith("https://") for u in self.urls):
            # The client refuses TLS options for http:// nodes, so they go in only for https.
            options["verify_certs"] = self.verify_certs
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
        text = {"type": "text", "analyzer": self.analyzer}
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
                ("number_of_shards", self.number_of_shards),
                ("number_of_replicas", self.number_of_replicas),
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
            if client.indices.exists(index=self.index):
                self._check_mapping(client.indices.get_mapping(index=self.index).body)
            elif create:
                self._create_index(client)
            else:
                return False
            self._ready = True
        return True

    def _create_index(self, client: Elasticsearch) -> None:
        from elasticsearch import BadRequestError

        try:
            client.indices.create(index=self.index, body=self.index_body())
        except BadRequestError as exc:
            # Another process created it between our check and our create.
            if _error_type(exc.body) != "resource_already_exists_exception":
                raise
            self._check_mapping(client.indices.get_mapping(index=self.index).body)

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

        by_doc_id = {_doc_id(p.id): p.id for p in unique}
        failures: dict[str, str] = {}
        written = 0
        with self._errors("add"):
            self._ensure_index(create=True)
            for ok, item in helpers.streaming_bulk(
                self._connect(),
                self._index_actions(unique),
                chunk_size=self.batch_size,
                raise_on_error=False,
                max_retries=self.max_retries,  # documents refused with 429 (busy) are sent again
                initial_backoff=1,
                **self._refresh_param(),
            ):
                info = next(iter(item.values()))
                if ok:
                    written += 1
                else:
                    failures[by_doc_id.get(str(info.get("_id")), str(info.get("_id")))] = _item_reason(info)
        if failures:
            shown = "; ".join(f"{pid}: {why}" for pid, why in list(failures.items())[:10])
            more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
            raise BulkIngestError(
                f"elasticsearch source '{self.name}': {len(failures)} of {len(unique)} passages were refused by "
                f"index '{self.index}' (the other {written} are stored): {shown}{more}",
                failures,
                written,
            )

    def _index_actions(self, passages: list[Passage]) -> Iterator[dict[str, Any]]:
        embedder = self._embedder_or_none()
        for start in range(0, len(passages), self.batch_size):
            batch = passages[start : start + self.batch_size]
            vectors: Sequence[Sequence[float]] | None = None
            if embedder is not None:
                vectors = self._embed(embedder.embed_documents, [_indexed_text(p) for p in batch])
            for i, p in enumerate(batch):
                source = _document(p)
                if vectors is not None:
                    source[EMBEDDING] = [float(x) for x in vectors[i]]
                yield {"_op_type": "index", "_index": self.index, "_id": _doc_id(p.id), "_source": source}

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
            actions = ({"_op_type": "delete", "_index": self.index, "_id": _doc_id(i)} for i in wanted)
            by_doc_id = {_doc_id(i): i for i in wanted}
            for ok, item in helpers.streaming_bulk(
                self._connect(),
                actions,
                chunk_size=self.batch_size,
                raise_on_error=False,
                max_retries=self.max_retries,
                initial_backoff=1,
                **self._refresh_param(),
            ):
                info = next(iter(item.values()))
                if not ok and info.get("status") != 404:  # 404: was not there
                    failures[by_doc_id.get(str(info.get("_id")), str(info.get("_id")))] = _item_reason(info)
        if failures:
            shown = "; ".join(f"{pid}: {why}" for pid, why in list(failures.items())[:10])
            raise KnowledgeSourceError(
                f"elasticsearch source '{self.name}': {len(failures)} passages could not be deleted from "
                f"index '{self.index}': {shown}"
            )

    def _refresh_param(self) -> dict[str, Any]:
        return {} if self.refresh is False else {"refresh": self.refresh}

    # --- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        from elasticsearch import NotFoundError

        with self._errors("count"):
            try:
                return int(self._connect().count(index=self.index)["count"])
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
                    index=self.index, ids=[_doc_id(i) for i in wanted], source_excludes=[EMBEDDING]
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
                if self.mode == "bm25":
                    return self._hits(self.bm25_body(query, k, clauses))
                vector = self._embed_query(query)
                if self.mode == "dense":
                    return self._hits(self.knn_body(vector, k, clauses))
                return self._hybrid(query, vector, k, clauses)
            except NotFoundError as exc:
                if _error_type(exc.body) in ("index_not_found_exception", None):
                    return []  # nothing was ever added
                raise

    # --- request bodies --------------------------------------------------------------------

    def bm25_query(self, query: str, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        match: dict[str, Any] = {
            "multi_match": {
                "query": _bounded(query),
                "fields": [_boosted("title", self.title_boost), _boosted("text", self.text_boost)],
                "type": self.match_type,
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
            "num_candidates": max(self.num_candidates, k),
        }
        if clauses:
            knn["filter"] = clauses
        return knn

    def knn_body(self, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        return {"knn": self.knn_clause(vector, k, clauses), "size": k, "_source": {"excludes": [EMBEDDING]}}

    def rrf_body(self, query: str, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        window = max(self.rank_window_size, k)
        return {
            "retriever": {
                "rrf": {
                    "retrievers": [
                        {"standard": {"query": self.bm25_query(query, clauses)}},
                        {"knn": self.knn_clause(vector, window, clauses)},
                    ],
                    "rank_window_size": window,
                    "rank_constant": self.rank_constant,
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
                if self.fusion == "server" or exc.status_code not in (400, 403):
                    raise
                reason = f"{exc.status_code} {_error_type(exc.body)}: {_error_reason(exc.body)}"
            fused = self._client_rrf(query, vector, k, clauses)
            # The two searches worked alone, so it was the fusion the cluster refused: stop asking.
            self._server_rrf = False
            log.info("elasticsearch source %r: server-side RRF refused (%s); fusing here instead", self.name, reason)
            return fused
        return self._client_rrf(query, vector, k, clauses)

    def _use_server_rrf(self) -> bool:
        if self.fusion != "auto":
            return self.fusion == "server"
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
        return _version(str(version.get("number", ""))) >= RRF_SINCE

    def _client_rrf(self, query: str, vector: list[float], k: int, clauses: list[dict[str, Any]]) -> list[Passage]:
        window = max(self.rank_window_size, k)
        lexical = self._hits(self.bm25_body(query, window, clauses))
        dense = self._hits(self.knn_body(vector, window, clauses))
        return rrf([lexical, dense], k=self.rank_constant, limit=k)

    # --- helpers ---------------------------------------------------------------------------

    def _hits(self, body: dict[str, Any]) -> list[Passage]:
        response = self._connect().search(index=self.index, body=body)
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
        if self._embedder is None and isinstance(self._embedder_spec, str):
            with self._embedder_lock:  # loading a model twice would cost memory and time
                if self._embedder is None:
                    self._embedder = _load_embedder(self.name, self._embedder_spec, self._embedder_options)
        return self._embedder

    def _embed_query(self, query: str) -> list[float]:
        embedder = self._embedder_or_none()
        if embedder is None:
            raise ConfigError(f"elasticsearch source {self.name!r}: mode {self.mode!r} needs an embedder")
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
            translated = self._translate(exc, action)
            if translated is None:
                raise
            raise translated from exc

    def _translate(self, exc: Exception, action: str) -> KnowledgeSourceError | None:
        try:
            from elastic_transport import ConnectionError, ConnectionTimeout, TlsError, TransportError
            from elasticsearch import ApiError, UnsupportedProductError
        except ImportError:
            return None
        prefix = f"elasticsearch source '{self.name}'"
        where = self._where
        if isinstance(exc, TlsError):
            return SourceUnavailable(
                f"{prefix}: the TLS handshake with {where} failed: {_transport_reason(exc)}; set "
                f"sources.{self.name}.ca_certs to the CA file that signed the cluster's certificate"
            )
        if isinstance(exc, ConnectionTimeout):
            tries = 1 + self.max_retries if self.retry_on_timeout else 1
            spent = f"{self.request_timeout * tries:g} s ({tries} tries of {self.request_timeout:g} s)" if tries > 1 \
                else f"{self.request_timeout:g} s"
            return SourceUnavailable(
                f"{prefix}: {where} did not answer within {spent}; check the cluster's "
                f"health, or raise sources.{self.name}.request_timeout (and agent.source_timeout, which bounds it)"
            )
        if isinstance(exc, ConnectionError):
            return SourceUnavailable(
                f"{prefix}: cannot reach {where}: {_transport_reason(exc)}; "
                f"start the cluster or fix sources.{self.name}.url"
            )
        if isinstance(exc, UnsupportedProductError):
            return SourceUnavailable(
                f"{prefix}: {where} answered, but is not Elasticsearch; fix sources.{self.name}.url"
            )
        if isinstance(exc, ApiError):
            status = exc.status_code
            kind, reason = _error_type(exc.body), _error_reason(exc.body)
            if status == 401:
                if self.api_key or self.username:
                    fix = "api_key" if self.api_key else "username and password"
                    return SourceUnavailable(
                        f"{prefix}: {where} refused the credentials (401 {kind}); fix sources.{self.name}.{fix}"
                    )
                return SourceUnavailable(
                    f"{prefix}: {where} needs credentials (401); set sources.{self.name}.api_key "
                    f"(or username and password)"
                )
            if status == 403 and "licen" in reason.lower():
                return KnowledgeSourceError(
                    f"{prefix}: the cluster's licence does not cover this {action} ({reason}); "
                    f"set sources.{self.name}.fusion to auto or client to fuse hybrid results in agentkit"
                )
            if status == 403 and kind == "security_exception":
                return SourceUnavailable(
                    f"{prefix}: the credentials may not {action} on index '{self.index}' (403: {reason}); "
                    f"grant them read and write privileges on it"
                )
            if kind == "media_type_header_exception":
                from elasticsearch import __versionstr__

                return KnowledgeSourceError(
                    f"{prefix}: the elasticsearch client {__versionstr__} does not speak this server's version "
                    f"({reason}); install the client of the cluster's major version, e.g. "
                    f'pip install "elasticsearch>=8.12,<9" for an 8.x cluster'
                )
            return KnowledgeSourceError(
                f"{prefix} (index '{self.index}' at {where}): {action} failed: {status} {kind}: {reason}"
            )
        if isinstance(exc, TransportError):
            return KnowledgeSourceError(f"{prefix} ({where}): {action} failed: {_transport_reason(exc)}")
        return None


# --- fusion -------------------------------------------------------------------------------


# --- documents and filters ----------------------------------------------------------------


def _doc_id(passage_id: str) -> str:
    if len(passage_id.encode()) <= MAX_ID_BYTES:
        return passage_id
    return "sha256:" + hashlib.sha256(passage_id.encode()).hexdigest()


def _indexed_text(p: Passage) -> str:
    return f"{p.title}\n{p.text}" if p.title else p.text


def _document(p: Passage) -> dict[str, Any]:
    # A JSON round trip gives the cluster plain values (dates as ISO strings, tuples as lists).
    metadata = json.loads(json.dumps(p.metadata, default=str)) if p.metadata else {}
    return {"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text, "uri": p.uri, "metadata": metadata}


def filter_clauses(filters: Filters | None) -> list[dict[str, Any]] | None:
    """`bool.filter` clauses for `filters` on metadata keys; None when nothing can match.

    Metadata is a `flattened` field, which indexes every leaf value as its JSON text: 2021 as
    "2021", true as "true". Values are matched in that form, and a whole number also as its float
    spelling ("2020" and "2020.0"), so that 2020 == 2020.0 holds as it does in Python.
    """
    clauses: list[dict[str, Any]] = []
    for key, want in (filters or {}).items():
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        if not values:
            return None
        field = f"metadata.{key}"
        terms: list[str] = []
        missing = False
        for value in values:
            if value is None:
                missing = True
            elif isinstance(value, (str, bool, int, float)):
                terms.extend(t for t in _spellings(value) if t not in terms)
            else:
                raise KnowledgeSourceError(
                    f"filter {key!r}: {value!r} is not a string, number, boolean or null; "
                    f"elasticsearch sources filter on those only"
                )
        options: list[dict[str, Any]] = []
        if terms:
            options.append({"term": {field: terms[0]}} if len(terms) == 1 else {"terms": {field: terms}})
        if missing:  # None matches a key that is absent (or null), as in `matches`
            options.append({"bool": {"must_not": [{"exists": {"field": field}}]}})
        clauses.append(options[0] if len(options) == 1 else {"bool": {"should": options, "minimum_should_match": 1}})
    return clauses


def _spellings(value: str | float) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    text = json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return [text, str(int(value))]
    if isinstance(value, int):
        return [text, f"{value}.0"]
    return [text]


def _bounded(query: str) -> str:
    words = query.split()
    if len(words) <= MAX_QUERY_WORDS:
        return query
    return " ".join(list(dict.fromkeys(words))[:MAX_QUERY_WORDS])


def _boosted(field: str, boost: float) -> str:
    return field if boost == 1 else f"{field}^{boost:g}"


def _version(number: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", number)[:2]
    return tuple(int(p) for p in parts) if parts else (0,)


def _error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("type")) if error.get("type") else None
    return None


def _error_reason(body: Any) -> str:
    error = body.get("error") if isinstance(body, Mapping) else body
    if not isinstance(error, Mapping):
        return str(error)[:300]
    reason = str(error.get("reason") or "")
    caused = error.get("caused_by")
    root = (error.get("root_cause") or [{}])[0]
    if isinstance(caused, Mapping) and caused.get("reason"):
        reason = f"{reason}: {caused['reason']}" if reason else str(caused["reason"])
    elif isinstance(root, Mapping) and root.get("reason") and root.get("reason") != reason:
        reason = f"{reason}: {root['reason']}" if reason else str(root["reason"])
    return reason[:500]


def _item_reason(info: Mapping[str, Any]) -> str:
    """One bulk item's failure, as 'status type: reason'."""
    error = info.get("error")
    status = info.get("status", "?")
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            reason = f"{reason}: {caused['reason']}"
        return f"{status} {kind}: {reason}"
    return f"{status} {error}"


def _transport_reason(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return str(message if message else exc)


def _load_embedder(source: str, spec: str, options: Mapping[str, Any]) -> Embedder:
    """The embedder named by `spec` ("module:attr"): a ready object, or a class or factory called with `options`."""
    import importlib

    prefix = f"elasticsearch source '{source}': embedder {spec!r}"
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{prefix} cannot be imported ({exc}); fix sources.{source}.embedder") from None
    if isinstance(target, type) or not hasattr(target, "embed_query"):
        try:
            target = target(**options)
        except AgentkitError:
            raise
        except Exception as exc:
            raise KnowledgeSourceError(f"{prefix} could not be made: {type(exc).__name__}: {exc}") from exc
    if not all(hasattr(target, a) for a in ("embed_query", "embed_documents", "dimension")):
        raise ConfigError(f"{prefix} lacks embed_query, embed_documents or dimension; fix sources.{source}.embedder")
    return target  # type: ignore[no-any-return]
