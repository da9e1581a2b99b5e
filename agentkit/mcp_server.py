"""The configured knowledge sources as MCP tools, with the official SDK; `agentkit mcp`
(agentkit/cli/mcp.py) serves them over stdio.

One `search_<source>` tool per source, and `ask`, which runs the whole agent and returns a cited answer.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from agentkit.errors import AgentkitError, MissingDependency

try:
    import anyio
    from mcp.types import CallToolResult, TextContent
    from pydantic import Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependency("mcp", "mcp", "agentkit mcp, the MCP server") from exc

try:  # mcp 2.x renamed FastMCP to MCPServer; both take the same calls used here.
    from mcp.server.mcpserver import MCPServer
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore[no-redef,attr-defined]

if TYPE_CHECKING:
    from agentkit.agent import Agent
    from agentkit.types import Answer, Passage

log = logging.getLogger("agentkit.mcp")

#: Characters MCP allows in a tool name; anything else in a source name becomes "_".
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: Most characters of one passage shown in a tool's text result (structured content has all).
TEXT_LIMIT = 1200

Query = Annotated[str, Field(description="What to look for, in plain words.")]
TopK = Annotated[int, Field(ge=1, le=50, description="How many passages to return, best first.")]


def search_tool_name(source: str) -> str:
    """`search_<source>`, with characters MCP does not allow in tool names replaced by `_`."""
    return "search_" + _TOOL_NAME.sub("_", source)


def passage_record(n: int, p: Passage) -> dict[str, Any]:
    return {"n": n, "id": p.id, "doc_id": p.doc_id, "title": p.title, "uri": p.uri, "source": p.source,
            "score": p.score, "text": p.text, "metadata": p.metadata}


def format_passages(passages: list[Passage]) -> str:
    """Numbered passages as an LLM client reads them: `[n] title — id (uri)`, then the text."""
    if not passages:
        return "No passage matched."
    blocks = []
    for n, p in enumerate(passages, 1):
        text = " ".join(p.text.split())
        if len(text) > TEXT_LIMIT:
            text = text[: TEXT_LIMIT - 1] + "…"
        head = f"[{n}] {p.title or p.id} — id: {p.id}" + (f" ({p.uri})" if p.uri else "") + f", score {p.score:.3f}"
        blocks.append(f"{head}\n{text}")
    return "\n\n".join(blocks)


def format_answer(answer: Answer) -> str:
    """The answer text, then its numbered sources with their ids and quotes, as `agentkit ask` prints them."""
    from agentkit.display import kind_note, sources_block

    lines = [answer.text]
    note = kind_note(answer)
    if note:
        lines.append(f"({note})")
    block = sources_block(answer, ids=True)
    if block:
        lines += ["", *block]
    label = "why" if answer.kind == "refusal" else "warning"
    lines += [f"{label}: {w}" for w in answer.warnings]
    return "\n".join(lines)


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    # Validated from the wire (camelCase) spelling, which mcp 1.x and 2.x both accept.
    return CallToolResult.model_validate({"content": [TextContent(type="text", text=text)], "structuredContent": structured})


def _error(exc: AgentkitError) -> CallToolResult:
    # agentkit's own errors already say what to change: the client gets that line, no traceback.
    log.info("tool error: %s", exc)
    return CallToolResult.model_validate({"content": [TextContent(type="text", text=f"error: {exc}")], "isError": True})


def _search_tool(agent: Agent, name: str) -> Callable[[str, int], Awaitable[CallToolResult]]:
    source = agent.sources[name]

    async def search(query: Query, k: TopK = 5) -> CallToolResult:
        log.info("search %s: %r (k=%d)", name, query, k)
        try:
            passages = await anyio.to_thread.run_sync(lambda: source.search(query, k))
        except AgentkitError as exc:
            return _error(exc)
        records = [passage_record(n, p) for n, p in enumerate(passages, 1)]
        return _result(format_passages(passages), {"source": name, "query": query, "passages": records})

    return search


def build_server(agent: Agent, *, ask: bool = True, name: str = "agentkit") -> MCPServer:
    """An MCP server exposing `agent`'s sources (one search tool each) and, with `ask`, the agent."""
    from agentkit import __version__

    sources = ", ".join(agent.sources) or "none"
    settings: dict[str, Any] = {
        "instructions": f"Search agentkit's knowledge sources ({sources}) for numbered, citable passages"
        + (", or `ask` a question and get an answer with [n] citations." if ask else "."),
        "log_level": "WARNING",
    }
    try:
        # Clients show and log server_info.version; without it they get "".
        server = MCPServer(name, version=__version__, **settings)
    except TypeError:  # pragma: no cover - mcp 1.x's FastMCP takes no version; its low-level server has one
        server = MCPServer(name, **settings)
        server._mcp_server.version = __version__  # type: ignore[attr-defined]
    for source_name, source in agent.sources.items():
        description = " ".join((source.description or "").split()) or f"the {source_name} knowledge source"
        server.add_tool(
            _search_tool(agent, source_name),
            name=search_tool_name(source_name),
            title=f"Search {source_name}",
            description=f"Search {description} Returns numbered passages with their ids and URIs, best first.",
            structured_output=False,
        )
    if ask:
        # One question at a time: a local model serves one generation at once.
        lock = threading.Lock()

        def run_agent(question: str) -> Answer:
            with lock:
                return agent.ask(question)

        async def ask_tool(question: Annotated[str, Field(description="A question in plain words.")]) -> CallToolResult:
            log.info("ask: %r", question)
            try:
                answer = await anyio.to_thread.run_sync(lambda: run_agent(question))
            except AgentkitError as exc:
                return _error(exc)
            data = answer.to_dict()
            keys = ("question", "text", "kind", "withheld", "citations", "route", "warnings", "from_memory")
            structured = {key: data[key] for key in keys}
            structured["cited_ids"] = answer.cited_ids
            # The evidence in [n] order, whole: each citation's quote is text[start:end] of its passage.
            structured["passages"] = [passage_record(n, p) for n, p in enumerate(answer.passages, 1)]
            return _result(format_answer(answer), structured)

        server.add_tool(
            ask_tool,
            name="ask",
            title="Ask agentkit",
            description="Answer a question with agentkit's agent: it routes the question to the right sources, "
            "retrieves passages and answers with [n] citations, listed under the answer with their ids and URIs.",
            structured_output=False,
        )
    return server
