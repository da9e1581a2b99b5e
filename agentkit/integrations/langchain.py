"""LangChain <-> agentkit, both directions: sources as retrievers and tools, LangChain stores as sources.

Needs `pip install "agentkit[langchain]"` (langchain-core); `import agentkit` never imports it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from agentkit.errors import KnowledgeSourceError, MissingDependency
from agentkit.integrations import check_filters, format_passages, passage_metadata, to_passage
from agentkit.knowledge.base import Filters, KnowledgeSource, matches
from agentkit.types import Answer, Passage

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import StructuredTool
    from langchain_core.vectorstores import (
        InMemoryVectorStore,
        VectorStore,
        VectorStoreRetriever,
    )
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("langchain-core", "langchain", "agentkit.integrations.langchain") from exc

if TYPE_CHECKING:
    from agentkit.agent import Agent

__all__ = [
    "AgentkitRetriever",
    "LangChainSource",
    "WritableLangChainSource",
    "as_langchain_tool",
    "as_runnable",
    "cited_documents",
    "to_document",
]

#: Largest number of candidates fetched when filters are applied on the client side.
MAX_FETCH = 10_000

# --- agentkit -> LangChain ------------------------------------------------------------------


def to_document(passage: Passage) -> Document:
    """A LangChain Document for `passage`; metadata carries id, score, source name, title and uri."""
    metadata = passage_metadata(passage)
    metadata.update(id=passage.id, score=passage.score, source=passage.source)
    return Document(page_content=passage.text, metadata=metadata, id=passage.id)


def cited_documents(answer: Answer) -> list[Document]:
    """One Document per citation of `answer`, in answer order: the cited passage's whole text, and
    in its metadata the citation: `marker`, `quote` with `start`/`end` (so that
    `page_content[start:end] == quote`), `inferred` (agentkit attributed it; the model did not
    cite it), `support`, `supported`, `sentence`, and the answer's `kind`."""
    docs = []
    for c in answer.citations:
        doc = to_document(c.passage)
        doc.metadata.update(
            marker=c.marker, quote=c.quote, start=c.start, end=c.end, inferred=c.inferred,
            support=c.support, supported=c.supported, sentence=c.sentence, kind=answer.kind,
        )
        docs.append(doc)
    return docs


class AgentkitRetriever(BaseRetriever):
    """Any agentkit KnowledgeSource as a LangChain retriever (sync, and async in a worker thread).

    As with LangChain's vector-store retrievers, `search_kwargs` sets `k` and the metadata
    `filter` (or `filters`), and so do keywords of `invoke()`; anything else is an error.

    >>> AgentkitRetriever(source=MemorySource("notes"), search_kwargs={"k": 3}).invoke("tides")   # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: Any = Field(description="an agentkit KnowledgeSource")
    k: int = 5
    filters: dict[str, Any] | None = None
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        if not isinstance(self.source, KnowledgeSource):
            raise TypeError(
                f"AgentkitRetriever(source=...) needs an agentkit KnowledgeSource (name, description, "
                f"search), got {type(self.source).__name__}; wrap your data in e.g. agentkit.MemorySource"
            )
        self.k, self.filters = self._search_args(self.search_kwargs, "search_kwargs")

    def _search_args(self, kwargs: Mapping[str, Any], where: str) -> tuple[int, dict[str, Any] | None]:
        """(k, filters) from `kwargs` over this retriever's own; unknown keys are a ValueError."""
        unknown = sorted(set(kwargs) - set(SEARCH_KWARGS))
        if unknown:
            raise ValueError(
                f"AgentkitRetriever {where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(SEARCH_KWARGS)}"
            )
        if "filter" in kwargs and "filters" in kwargs:
            raise ValueError(f"AgentkitRetriever {where}: give either 'filter' or 'filters', not both")
        k = kwargs.get("k", self.k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"AgentkitRetriever {where}: k must be a whole number of at least 1, got {k!r}")
        filters = kwargs.get("filter", kwargs.get("filters", self.filters))
        if filters is not None and not isinstance(filters, Mapping):
            raise ValueError(
                f"AgentkitRetriever {where}: filters must map metadata keys to a value or a list of values, "
                f"got {type(filters).__name__}"
            )
        return k, dict(filters) if filters else None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, filters = self._search_args(kwargs, "invoke()") if kwargs else (self.k, self.filters)
        if filters:
            check_filters(self.source, filters)
        return [to_document(p) for p in self.source.search(query, k=k, filters=filters)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # A source's search is synchronous: run it in a worker thread, off the event loop.
        sync = run_manager.get_sync()
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=sync, **kwargs)


#: What AgentkitRetriever's `search_kwargs` (and `invoke()` keywords) may hold.
SEARCH_KWARGS = ("k", "filter", "filters")


class _SearchInput(BaseModel):
    query: str = Field(description="what to look up")


class _QuestionInput(BaseModel):
    question: str = Field(description="the question to answer")


def _tool_name(name: str) -> str:
    # Chat-model APIs accept tool names matching ^[a-zA-Z0-9_-]{1,64}$.
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "agentkit"


def as_langchain_tool(
    target: KnowledgeSource | Agent,
    *,
    name: str | None = None,
    description: str | None = None,
    k: int = 5,
) -> StructuredTool:
    """A LangChain tool over a source (numbered passages) or an agent (a cited answer).

    The tool's artifact (`response_format="content_and_artifact"`) is the list of Documents for a
    source and the `Answer` for an agent, so a LangChain agent can keep the real citations.
    """
    from agentkit.agent import Agent

    if isinstance(target, Agent):
        agent = target

        def answer(question: str) -> tuple[str, Answer]:
            result = agent.ask(question)
            return _answer_text(result), result

        async def aanswer(question: str) -> tuple[str, Answer]:
            result = await agent.aask(question)
            return _answer_text(result), result

        return StructuredTool(
            name=_tool_name(name or "ask_agentkit"),
            description=description
            or "Answer a question from the knowledge sources " + ", ".join(agent.sources) + ", with [n] citations.",
            func=answer,
            coroutine=aanswer,
            args_schema=_QuestionInput,
            response_format="content_and_artifact",
        )
    if not isinstance(target, KnowledgeSource):
        raise TypeError(
            f"as_langchain_tool() takes an agentkit KnowledgeSource or Agent, got {type(target).__name__}"
        )
    source = target

    def search(query: str) -> tuple[str, list[Document]]:
        passages = source.search(query, k=k)
        return format_passages(passages), [to_document(p) for p in passages]

    return StructuredTool(
        name=_tool_name(name or f"search_{source.name}"),
        description=description or source.description or f"Search the knowledge source {source.name!r}.",
        func=search,
        args_schema=_SearchInput,
        response_format="content_and_artifact",
    )


def _answer_text(answer: Answer) -> str:
    """The answer, a line on how it was made when agentkit replaced the model's words, then the
    sources with their quotes: what a calling model reads."""
    from agentkit.display import kind_note, sources_block

    parts = [answer.text]
    note = kind_note(answer)
    if note:
        parts.append(f"({note})")
    if answer.citations:
        parts.append("\n".join(sources_block(answer, indent="")))
    return "\n\n".join(parts)


def _question(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("question", "input", "query"):
            if isinstance(value.get(key), str):
                return value[key]
    raise TypeError(
        f"an agentkit runnable takes a question string or a dict with 'question', 'input' or 'query'; "
        f"got {type(value).__name__}"
    )


def as_runnable(agent: Agent) -> RunnableLambda[Any, Answer]:
    """The agent as a LangChain Runnable: a question (or {"question": ...}) in, an `Answer` out."""

    def ask(value: Any) -> Answer:
        return agent.ask(_question(value))

    async def aask(value: Any) -> Answer:
        return await agent.aask(_question(value))

    return RunnableLambda(ask, afunc=aask, name="agentkit_agent")


# --- LangChain -> agentkit ------------------------------------------------------------------

FilterKwargs = Callable[[Filters], dict[str, Any]]


def _in_memory_filter(filters: Filters) -> dict[str, Any]:
    return {"filter": lambda doc: matches(doc.metadata, filters)}


class LangChainSource:
    """A LangChain retriever or vector store as an agentkit KnowledgeSource.

    Documents become Passages with stable ids (the Document id, a metadata `id`, else a hash of
    the text). A vector store is asked for relevance scores (else its raw scores, turned so that
    higher is better); a retriever's documents are scored by rank unless their metadata holds a
    `score` or `relevance_score`. `filter_kwargs` turns agentkit filters into the store's own
    search keyword arguments (automatic for InMemoryVectorStore); otherwise, and always as a final
    check, filters are applied here with the semantics of `agentkit.knowledge.base.matches`.

    Given a vector store that implements `get_by_ids`, the constructor returns a
    `WritableLangChainSource` (pass `writable=False` for a read-only view).
    """

    def __new__(cls, obj: Any, *args: Any, writable: bool | None = None, **kwargs: Any) -> LangChainSource:  # noqa: PYI034
        if cls is LangChainSource and isinstance(obj, VectorStore):
            supports_get = type(obj).get_by_ids is not VectorStore.get_by_ids
            if writable or (writable is None and supports_get):
                return super().__new__(WritableLangChainSource)
        return super().__new__(cls)

    def __init__(
        self,
        obj: BaseRetriever | VectorStore,
        *,
        name: str = "langchain",
        description: str = "",
        min_score: float | None = None,
        filter_kwargs: FilterKwargs | None = None,
        writable: bool | None = None,
    ) -> None:
        if not isinstance(obj, (BaseRetriever, VectorStore)):
            raise TypeError(
                f"LangChainSource(...) wraps a langchain_core BaseRetriever or VectorStore, got "
                f"{type(obj).__module__}.{type(obj).__name__}; for a chain, pass the retriever inside it"
            )
        self.obj = obj
        self.name = name
        self.description = description
        self.min_score = min_score
        if filter_kwargs is None and isinstance(obj, InMemoryVectorStore):
            filter_kwargs = _in_memory_filter
        self.filter_kwargs = filter_kwargs
        self._score_method: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.obj).__name__}, name={self.name!r})"

    def filterable_fields(self) -> list[str] | None:
        """The metadata keys of the stored documents, where the store can list them
        (InMemoryVectorStore); None when it cannot."""
        store = getattr(self.obj, "store", None)
        if not isinstance(self.obj, InMemoryVectorStore) or not isinstance(store, dict):
            return None
        return sorted({key for doc in store.values() for key in (doc.get("metadata") or {})})

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        if filters:
            check_filters(self, filters)
        if not query.strip() or k <= 0:
            return []
        client_side = bool(filters) and self.filter_kwargs is None
        fetch = max(4 * k, k + 20) if client_side else k
        while True:
            scored = self._fetch(query, fetch, filters)
            out = [
                p
                for p in scored
                if matches(p.metadata, filters) and (self.min_score is None or p.score >= self.min_score)
            ]
            if len(out) >= k or len(scored) < fetch or fetch >= MAX_FETCH or isinstance(self.obj, BaseRetriever):
                return out[:k]
            fetch = min(fetch * 4, MAX_FETCH)

    def _fetch(self, query: str, n: int, filters: Filters | None) -> list[Passage]:
        if isinstance(self.obj, BaseRetriever):
            return self._from_retriever(query, n)
        kwargs = self.filter_kwargs(filters) if (filters and self.filter_kwargs) else {}
        return [self._passage(doc, score) for doc, score in self._scored(query, n, kwargs)]

    def _from_retriever(self, query: str, n: int) -> list[Passage]:
        retriever = self.obj
        assert isinstance(retriever, BaseRetriever)
        # A VectorStoreRetriever merges call kwargs into its search_kwargs; others take none.
        docs = retriever.invoke(query, k=n) if isinstance(retriever, VectorStoreRetriever) else retriever.invoke(query)
        own = [_metadata_score(d) for d in docs]
        if all(s is not None for s in own):
            scores = [float(s) for s in own if s is not None]
        else:
            scores = [1.0 / (1 + rank) for rank in range(len(docs))]
        return [self._passage(d, s) for d, s in zip(docs, scores)]

    def _scored(self, query: str, n: int, kwargs: dict[str, Any]) -> list[tuple[Document, float]]:
        store = self.obj
        assert isinstance(store, VectorStore)
        if self._score_method in (None, "relevance"):
            try:
                result = store.similarity_search_with_relevance_scores(query, k=n, **kwargs)
                self._score_method = "relevance"
                return result
            except NotImplementedError:
                self._score_method = "raw"
        if self._score_method == "raw":
            try:
                return _higher_is_better(store.similarity_search_with_score(query, k=n, **kwargs))
            except NotImplementedError:
                self._score_method = "rank"
        docs = store.similarity_search(query, k=n, **kwargs)
        return [(d, 1.0 / (1 + rank)) for rank, d in enumerate(docs)]

    def _passage(self, doc: Document, score: float) -> Passage:
        metadata = {k: v for k, v in doc.metadata.items() if k not in ("score", "relevance_score")}
        return to_passage(doc.page_content, metadata, id=doc.id, source=self.name, score=score)


def _metadata_score(doc: Document) -> float | None:
    for key in ("score", "relevance_score"):
        value = doc.metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _higher_is_better(pairs: list[tuple[Document, float]]) -> list[tuple[Document, float]]:
    """Stores return best first; if their raw scores rise down the list they are distances: negate."""
    scores = [s for _, s in pairs]
    if len(set(scores)) > 1 and all(a <= b for a, b in pairwise(scores)):
        return [(d, -s) for d, s in pairs]
    return pairs


class WritableLangChainSource(LangChainSource):
    """A LangChain vector store as a WritableSource: add upserts by passage id, get, delete, count.

    `count` is exact for InMemoryVectorStore; LangChain's VectorStore API has no count, so for
    other stores pass `count=` (a callable returning the number of stored documents).
    """

    obj: VectorStore

    def __init__(
        self,
        obj: VectorStore,
        *,
        name: str = "langchain",
        description: str = "",
        min_score: float | None = None,
        filter_kwargs: FilterKwargs | None = None,
        writable: bool | None = None,
        count: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(obj, VectorStore):
            raise TypeError(
                f"WritableLangChainSource(...) wraps a langchain_core VectorStore, got {type(obj).__name__}; "
                f"use LangChainSource for a retriever (read-only)"
            )
        super().__init__(obj, name=name, description=description, min_score=min_score, filter_kwargs=filter_kwargs)
        self._count = count

    def add(self, passages: Sequence[Passage]) -> None:
        if not passages:
            return
        docs = [Document(page_content=p.text, metadata=passage_metadata(p), id=p.id) for p in passages]
        self.obj.add_documents(docs, ids=[p.id for p in passages])

    def get(self, ids: Sequence[str]) -> list[Passage]:
        if not ids:
            return []
        try:
            docs = self.obj.get_by_ids(list(ids))
        except NotImplementedError:
            raise KnowledgeSourceError(
                f"{type(self.obj).__name__} does not implement get_by_ids; wrap it with "
                f"LangChainSource(store, writable=False) for search only"
            ) from None
        by_id = {d.id: d for d in docs}
        return [self._passage(by_id[i], 0.0) for i in ids if i in by_id]

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.obj.delete(ids=list(ids))

    def count(self) -> int:
        if self._count is not None:
            return int(self._count())
        store = getattr(self.obj, "store", None)
        if isinstance(self.obj, InMemoryVectorStore) and isinstance(store, dict):
            return len(store)
        raise KnowledgeSourceError(
            f"{type(self.obj).__name__} cannot count its documents through LangChain's VectorStore API; "
            f"pass count=<a function returning the number of documents> to WritableLangChainSource"
        )
