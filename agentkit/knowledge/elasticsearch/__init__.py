"""The Elasticsearch knowledge source (`ElasticsearchSource`, configured by
`ElasticsearchSourceConfig`); `source.py` says what it does, `settings.py`, `documents.py` and
`replies.py` hold its options, what it writes and asks, and how it reads the cluster's answers."""

from agentkit.knowledge.elasticsearch.documents import EMBEDDING, MAX_ID_BYTES, MAX_QUERY_WORDS, filter_clauses
from agentkit.knowledge.elasticsearch.replies import RRF_SINCE, BulkIngestError
from agentkit.knowledge.elasticsearch.settings import (
    ElasticsearchSourceConfig,
    Embedder,
    Fusion,
    MatchType,
    Mode,
    Refresh,
)
from agentkit.knowledge.elasticsearch.source import ElasticsearchSource

__all__ = [
    "EMBEDDING",
    "MAX_ID_BYTES",
    "MAX_QUERY_WORDS",
    "RRF_SINCE",
    "BulkIngestError",
    "ElasticsearchSource",
    "ElasticsearchSourceConfig",
    "Embedder",
    "Fusion",
    "MatchType",
    "Mode",
    "Refresh",
    "filter_clauses",
]
