"""LlamaIndex <-> agentkit, both directions: sources as retrievers, agents as query engines, indexes as sources.

Needs `pip install "agentkit[llama-index]"` (llama-index-core); `import agentkit` never imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentkit.errors import KnowledgeSourceError, MissingDependency
from agentkit.integrations import ID_KEYS, check_filters, passage_metadata, to_passage
from agentkit.knowledge.base import Filters, KnowledgeSource, matches
from agentkit.types import Passage

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.response.schema import Response
    from llama_index.core.indices.base import BaseIndex
    from llama_index.core.indices.vector_store.base import VectorStoreIndex
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeWithScore,
        QueryBundle,
        TextNode,
    )
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
    from pydantic import ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("llama-index-core", "llama-index", "agentkit.integrations.llama_index") from exc

if TYPE_CHECKING:
    from agentkit.agent import Agent

__all__ = [
    "AgentkitLlamaRetriever",
    "AgentkitQueryEngine",
    "LlamaIndexSource",
    "WritableLlamaIndexSource",
    "as_query_engine",
    "to_node",
]

#: Bookkeeping keys kept out of what LlamaIndex embeds and shows the model.
_HIDDEN = ["id", "score", "source", "uri"]

# --- agentkit -> LlamaIndex -----------------------------------------------------------------


def to_node(passage: Passage) -> NodeWithScore:
    """A scored LlamaIndex TextNode for `passage`: node id = passage id, metadata as in LangChain."""
    metadata = passage_metadata(passage)
    metadata.update(id=passage.id, score=passage.score, source=passage.source)
    node = TextNode(
        id_=passage.id,
        text=passage.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(_HIDDEN),
        excluded_llm_metadata_keys=list(_HIDDEN),
    )
    return NodeWithScore(node=node, score=passage.score)


class AgentkitLlamaRetriever(BaseRetriever):
    """Any agentkit KnowledgeSource as a LlamaIndex retriever returning NodeWithScore, best first.

    As with LlamaIndex's VectorIndexRetriever, `similarity_top_k` sets how many nodes come back
    (`k` is the same, agentkit's spelling); `filters` maps metadata keys to a value or a list of
    values. BaseRetriever's own keywords (`callback_manager`, `verbose`, ...) pass through;
    anything else is an error that names it.

    >>> AgentkitLlamaRetriever(MemorySource("notes"), similarity_top_k=3).retrieve("tides")  # doctest: +SKIP
    """

    def __init__(
        self,
        source: KnowledgeSource,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        filters: Filters | None = None,
        **kwargs: Any,
    ):
        if not isinstance(source, KnowledgeSource):
            raise TypeError(
                f"AgentkitLlamaRetriever(source) needs an agentkit KnowledgeSource (name, description, "
                f"search), got {type(source).__name__}; wrap your data in e.g. agentkit.MemorySource"
            )
        unknown = sorted(set(kwargs) - set(_BASE_KWARGS))
        if unknown:
            raise TypeError(
                f"AgentkitLlamaRetriever: unknown keyword(s) {', '.join(map(repr, unknown))}; it takes "
                f"similarity_top_k (or k), filters, {', '.join(_BASE_KWARGS)}"
            )
        if similarity_top_k is not None and k is not None and similarity_top_k != k:
            raise ValueError(
                f"AgentkitLlamaRetriever: similarity_top_k={similarity_top_k!r} and k={k!r} are the same "
                "setting; give one"
            )
        top_k = similarity_top_k if similarity_top_k is not None else k if k is not None else 5
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            given = "k" if similarity_top_k is None and k is not None else "similarity_top_k"
            raise ValueError(f"AgentkitLlamaRetriever: {given} must be a whole number of at least 1, got {top_k!r}")
        if filters is not None and not isinstance(filters, Mapping):
            raise TypeError(
                f"AgentkitLlamaRetriever: filters must map metadata keys to a value or a list of values, "
                f"e.g. {{'topic': 'biology'}}; got {type(filters).__name__}"
            )
        super().__init__(**kwargs)
        self.source = source
        self.similarity_top_k = top_k
        self.filters = dict(filters) if filters else None

    @property
    def k(self) -> int:
        """`similarity_top_k`, in agentkit's spelling."""
        return self.similarity_top_k

    @k.setter
    def k(self, value: int) -> None:
        self.similarity_top_k = value

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.filters:
            check_filters(self.source, self.filters)
        return [
            to_node(p) for p in self.source.search(query_bundle.query_str, k=self.similarity_top_k, filters=self.filters)
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


#: BaseRetriever's own keywords, passed on to it.
_BASE_KWARGS = ("callback_manager", "object_map", "objects", "verbose")


class AgentkitQueryEngine(CustomQueryEngine):
    """An agentkit Agent as a LlamaIndex query engine.

    The Response's `source_nodes` are the evidence in numbered order, so `[n]` in the text is
    `source_nodes[n - 1]`; `metadata["answer"]` is the full agentkit Answer.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    agent: Any = Field(description="an agentkit Agent")

    def custom_query(self, query_str: str) -> Response:
        return _response(self.agent.ask(query_str))

    async def acustom_query(self, query_str: str) -> Response:
        return _response(await self.agent.aask(query_str))


def _response(answer: Any) -> Response:
    return Response(
        response=answer.text,
        source_nodes=[_cited_node(p, answer) for p in answer.passages],
        metadata={
            "answer": answer,
            "kind": answer.kind,
            "withheld": answer.withheld,
            "citations": [c.to_dict() for c in answer.citations],
            "cited_ids": answer.cited_ids,
        },
    )


def _cited_node(passage: Passage, answer: Any) -> NodeWithScore:
    """`to_node(passage)`; if the answer cites it, its metadata also holds the citation: `marker`,
    `quote` with `start`/`end` into the node's text, `inferred`, `support` and the answer's `kind`
    (the first citation with a quote; `Response.metadata["citations"]` lists them all)."""
    scored = to_node(passage)
    mine = [c for c in answer.citations if c.passage.id == passage.id]
    if mine:
        c = next((c for c in mine if c.quote), mine[0])
        node = scored.node
        node.metadata.update(marker=c.marker, quote=c.quote, start=c.start, end=c.end, inferred=c.inferred,
                             support=c.support, kind=answer.kind)
        # Bookkeeping, like _HIDDEN: the quote is already in the node's text.
        hidden = ["marker", "quote", "start", "end", "inferred", "support", "kind"]
        node.excluded_embed_metadata_keys += hidden
        node.excluded_llm_metadata_keys += hidden
    return scored


def as_query_engine(agent: Agent) -> AgentkitQueryEngine:
    """The agent as a LlamaIndex query engine (`.query()`, `.aquery()`) with cited source nodes."""
    from agentkit.agent import Agent

    if not isinstance(agent, Agent):
        raise TypeError(f"as_query_engine() takes an agentkit Agent, got {type(agent).__name__}")
    return AgentkitQueryEngine(agent=agent)


# --- LlamaIndex -> agentkit -----------------------------------------------------------------


def metadata_filters(filters: Filters) -> MetadataFilters:
    """agentkit filters as LlamaIndex MetadataFilters: equality, or IN for a list of values."""
    parts: list[MetadataFilter | MetadataFilters] = []
    for key, want in filters.items():
        if isinstance(want, (list, tuple, set, frozenset)):
            parts.append(MetadataFilter(key=key, value=list(want), operator=FilterOperator.IN))
        else:
            parts.append(MetadataFilter(key=key, value=want, operator=FilterOperator.EQ))
    return MetadataFilters(filters=parts, condition=FilterCondition.AND)


class LlamaIndexSource:
    """A LlamaIndex index or retriever as an agentkit KnowledgeSource.

    A VectorStoreIndex is searched with `similarity_top_k=k` and the filters as MetadataFilters;
    any other index through `as_retriever()`, and a retriever as given (its own top-k), with the
    filters applied here. Filters are always re-checked with `agentkit.knowledge.base.matches`.
    Passage ids are the ids the user set: a metadata `id`, else for a node cut from a Document
    `<doc id>#<n>` (its n-th node; `doc_id` metadata = the Document's id), else the node id.
    Given a VectorStoreIndex, the constructor returns a
    `WritableLlamaIndexSource` (pass `writable=False` for a read-only view).
    """

    def __new__(cls, obj: Any, *args: Any, writable: bool | None = None, **kwargs: Any) -> LlamaIndexSource:  # noqa: PYI034
        if cls is LlamaIndexSource and isinstance(obj, VectorStoreIndex) and writable is not False:
            return super().__new__(WritableLlamaIndexSource)
        return super().__new__(cls)

    def __init__(
        self,
        obj: BaseIndex[Any] | BaseRetriever,
        *,
        name: str = "llama_index",
        description: str = "",
        min_score: float | None = None,
        writable: bool | None = None,
    ) -> None:
        if not isinstance(obj, (BaseIndex, BaseRetriever)):
            raise TypeError(
                f"LlamaIndexSource(...) wraps a llama_index.core index or retriever, got "
                f"{type(obj).__module__}.{type(obj).__name__}; for a query engine, pass its retriever"
            )
        self.obj = obj
        self.name = name
        self.description = description
        self.min_score = min_score
        self._retriever = None if isinstance(obj, VectorStoreIndex) else (
            obj if isinstance(obj, BaseRetriever) else obj.as_retriever()
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.obj).__name__}, name={self.name!r})"

    def filterable_fields(self) -> list[str] | None:
        """The metadata keys of the index's nodes where its docstore holds them; else None."""
        index = self._index()
        if index is None or (isinstance(index, VectorStoreIndex) and index.vector_store.stores_text):
            return None  # the nodes live in the vector store, which cannot list them
        try:
            docs = index.docstore.docs.values()
        except Exception:  # noqa: BLE001 - a remote docstore may not list; then nothing is checked
            return None
        return sorted({key for node in docs for key in node.metadata})

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        if filters:
            check_filters(self, filters)
        if not query.strip() or k <= 0:
            return []
        if isinstance(self.obj, VectorStoreIndex):
            if self._empty():
                return []
            kwargs: dict[str, Any] = {"similarity_top_k": k}
            if filters:
                kwargs["filters"] = metadata_filters(filters)
            found = self.obj.as_retriever(**kwargs).retrieve(query)
        else:
            assert self._retriever is not None
            found = self._retriever.retrieve(query)
        scores = [n.score for n in found]
        if any(s is None for s in scores):
            scores = [1.0 / (1 + rank) for rank in range(len(found))]
        out = []
        for nws, score in zip(found, scores):
            p = self._passage(nws.node, float(score or 0.0))
            if matches(p.metadata, filters) and (self.min_score is None or p.score >= self.min_score):
                out.append(p)
        return out[:k]

    def _empty(self) -> bool:
        index = self.obj
        assert isinstance(index, VectorStoreIndex)
        return not index.vector_store.stores_text and not index.index_struct.nodes_dict

    def _index(self) -> BaseIndex[Any] | None:
        """The index behind this source: the one given, or a vector retriever's own."""
        index = self.obj if isinstance(self.obj, BaseIndex) else getattr(self.obj, "_index", None)
        return index if isinstance(index, BaseIndex) else None

    def _passage(self, node: BaseNode, score: float) -> Passage:
        metadata = {k: v for k, v in node.metadata.items() if k != "score"}
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        return to_passage(text, metadata, id=self._passage_id(node, metadata), source=self.name, score=score)

    def _passage_id(self, node: BaseNode, metadata: dict[str, Any]) -> str | None:
        """The id the user set (see the class docstring); None lets `to_passage` use a metadata id."""
        if any(metadata.get(key) not in (None, "") for key in ID_KEYS):
            return None
        ref = node.ref_doc_id
        if not ref or ref == node.node_id:
            return node.node_id
        metadata.setdefault("doc_id", ref)
        return f"{ref}#{self._position(node, ref)}"

    def _position(self, node: BaseNode, ref: str) -> int:
        """The node's place among its Document's nodes (by the docstore's record, else by its
        start in the Document's text), so ids stay stable across searches."""
        index = self._index()
        info = None
        if index is not None:
            try:
                info = index.docstore.get_ref_doc_info(ref)
            except Exception:  # noqa: BLE001 - a docstore without ref-doc records
                info = None
        if info is not None and node.node_id in info.node_ids:
            return info.node_ids.index(node.node_id)
        return int(node.start_char_idx or 0)


class WritableLlamaIndexSource(LlamaIndexSource):
    """A VectorStoreIndex as a WritableSource: add replaces by node id, get, delete, count.

    get/count read the index's docstore, which holds the nodes unless the vector store keeps the
    text itself (`stores_text`); for such stores pass `count=` and rely on `get_nodes` support.
    """

    obj: VectorStoreIndex

    def __init__(
        self,
        obj: VectorStoreIndex,
        *,
        name: str = "llama_index",
        description: str = "",
        min_score: float | None = None,
        writable: bool | None = None,
        count: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(obj, VectorStoreIndex):
            raise TypeError(
                f"WritableLlamaIndexSource(...) wraps a VectorStoreIndex, got {type(obj).__name__}; "
                f"use LlamaIndexSource for other indexes and retrievers (read-only)"
            )
        super().__init__(obj, name=name, description=description, min_score=min_score)
        self._count = count

    def add(self, passages: Sequence[Passage]) -> None:
        if not passages:
            return
        nodes = [
            TextNode(id_=p.id, text=p.text, metadata=passage_metadata(p),
                     excluded_embed_metadata_keys=["uri"], excluded_llm_metadata_keys=["uri"])
            for p in passages
        ]
        self.delete([p.id for p in passages])  # insert_nodes appends; agentkit's add replaces by id
        self.obj.insert_nodes(nodes)

    def get(self, ids: Sequence[str]) -> list[Passage]:
        if not ids:
            return []
        index = self.obj
        if index.vector_store.stores_text:
            try:
                nodes = index.vector_store.get_nodes(node_ids=list(ids))
            except NotImplementedError:
                raise KnowledgeSourceError(
                    f"{type(index.vector_store).__name__} cannot return nodes by id; build the index with "
                    f"store_nodes_override=True or wrap it with LlamaIndexSource(index, writable=False)"
                ) from None
        else:
            nodes = [n for n in (index.docstore.get_node(i, raise_error=False) for i in ids) if n is not None]
        by_id = {n.node_id: n for n in nodes}
        return [self._passage(by_id[i], 0.0) for i in ids if i in by_id]

    def delete(self, ids: Sequence[str]) -> None:
        present = [i for i in ids if i in self.obj.index_struct.nodes_dict] if not self.obj.vector_store.stores_text else list(ids)
        if present:
            self.obj.delete_nodes(present, delete_from_docstore=True)

    def count(self) -> int:
        if self._count is not None:
            return int(self._count())
        index = self.obj
        if index.vector_store.stores_text:
            raise KnowledgeSourceError(
                f"{type(index.vector_store).__name__} keeps the nodes itself and LlamaIndex has no count for it; "
                f"pass count=<a function returning the number of nodes> to WritableLlamaIndexSource"
            )
        return len(index.index_struct.nodes_dict)
