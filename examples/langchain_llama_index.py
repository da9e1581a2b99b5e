"""agentkit with LangChain and LlamaIndex, both ways: run `python examples/langchain_llama_index.py`.

Needs `pip install "agentkit[langchain,llama-index]"`; fake models and embeddings, nothing is downloaded.
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from agentkit import Agent, MemorySource, Passage
from agentkit.integrations.langchain import (
    AgentkitRetriever,
    LangChainSource,
    as_langchain_tool,
)
from agentkit.integrations.llama_index import AgentkitLlamaRetriever, as_query_engine
from agentkit.testing import FakeLLM

notes = MemorySource("notes", "facts about the sea")
notes.add([Passage("tides#0", "Tides are caused by the Moon's gravity.", "Tides", uri="doc://tides")])

# agentkit -> LangChain and LlamaIndex: a retriever, a tool, a query engine.
print(AgentkitRetriever(source=notes, k=1).invoke("What causes tides?")[0].metadata["id"])
print(as_langchain_tool(notes).invoke({"query": "tides"}))
print(AgentkitLlamaRetriever(notes).retrieve("tides")[0].node.node_id)

# LangChain -> agentkit: a LangChain vector store as a knowledge source of an agent.
store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
store.add_documents([Document("Coral reefs grow in warm shallow water.", id="reef#0", metadata={"title": "Reefs"})])
agent = Agent(FakeLLM(), [notes, LangChainSource(store, name="reefs", description="coral reefs")])
answer = agent.ask("Where do coral reefs grow?", route=["reefs"])
print(answer.text, [c.passage.id for c in answer.citations])

# An agentkit agent as a LlamaIndex query engine: source_nodes[n - 1] is the passage behind [n].
response = as_query_engine(agent).query("What causes tides?")
print(response, [n.node.node_id for n in response.source_nodes])
