"""The Qdrant knowledge source (`QdrantSource`, configured by `QdrantSourceConfig`); see `source.py`
for the deployments, the engines and what was measured, `engine_edge.py` and `engine_client.py` for
the two engines that hold a store."""

from agentkit.knowledge.qdrant.engine import DENSE_VECTOR, MEMORY, SPARSE_VECTOR, TIE_MARGIN
from agentkit.knowledge.qdrant.source import Engine, Mode, QdrantSource, QdrantSourceConfig, point_id

__all__ = [
    "DENSE_VECTOR",
    "MEMORY",
    "SPARSE_VECTOR",
    "TIE_MARGIN",
    "Engine",
    "Mode",
    "QdrantSource",
    "QdrantSourceConfig",
    "point_id",
]
