"""`agentkit mcp` as a subprocess, driven by the official MCP SDK's stdio client.

The config uses the fake model and an embedded Qdrant store ingested first with `agentkit ingest`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from agentkit.cli import cli

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client

TIMEOUT = 120


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "agentkit.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "llm: {backend: fake}\n"
        "sources:\n"
        "  docs: {type: qdrant, description: guides about installing and configuring agentkit, collection: docs}\n"
    )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "install.md").write_text("# Install\n\nInstall agentkit with pip install agentkit. It needs Python 3.10.\n")
    (corpus / "tides.md").write_text("# Tides\n\nTides follow the Moon and the Sun.\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "ingest", str(corpus), "--no-progress"], catch_exceptions=False)
    assert "2 documents" in result.output
    return cfg


def server(cfg: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentkit.cli", "--config", str(cfg), "mcp", *args],
        env={**os.environ, "AGENTKIT_FORBID_REAL_MODELS": "1"},
    )


def run_client(cfg: Path, calls: list[tuple[str, dict[str, Any]]], *args: str) -> dict[str, Any]:
    """List the tools of `agentkit mcp ARGS`, then make `calls` in order; returns every result.

    Results are dumped in the protocol's own (camelCase) spelling, the same in mcp 1.x and 2.x.
    """

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with anyio.fail_after(TIMEOUT):
            async with stdio_client(server(cfg, *args)) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = (await session.list_tools()).tools
                out["tools"] = {t.name: t.model_dump(by_alias=True) for t in listed}
                for name, arguments in calls:
                    out[name] = (await session.call_tool(name, arguments)).model_dump(by_alias=True)
        return out

    return anyio.run(main)


def test_tools_search_and_ask_over_stdio(config: Path) -> None:
    out = run_client(config, [("search_docs", {"query": "how to install agentkit", "k": 2}),
                              ("ask", {"question": "How do I install agentkit?"})])
    tools = out["tools"]
    assert set(tools) == {"search_docs", "ask"}
    assert tools["search_docs"]["inputSchema"]["required"] == ["query"]
    assert "installing and configuring" in tools["search_docs"]["description"]

    found = out["search_docs"]
    assert not found["isError"]
    passages = found["structuredContent"]["passages"]
    assert [p["id"] for p in passages] == ["install.md#0"]  # BM25: the tides page shares no term
    assert passages[0]["uri"].startswith("file://")
    text = found["content"][0]["text"]
    assert text.startswith("[1] ") and passages[0]["id"] in text and passages[0]["uri"] in text

    answer = out["ask"]
    assert not answer["isError"]
    cited = answer["structuredContent"]["cited_ids"]
    assert cited == [passages[0]["id"]]
    assert answer["structuredContent"]["route"]["targets"] == ["docs"]
    assert "Sources:" in answer["content"][0]["text"] and cited[0] in answer["content"][0]["text"]
    # Each citation carries its quote, a span of the whole passage returned beside it.
    structured = answer["structuredContent"]
    [citation] = structured["citations"]
    texts = {p["id"]: p["text"] for p in structured["passages"]}
    assert citation["quote"] and texts[citation["passage_id"]][citation["start"] : citation["end"]] == citation["quote"]
    assert structured["kind"] == "model" and citation["inferred"] is False
    assert "“" + " ".join(citation["quote"].split()) + "”" in answer["content"][0]["text"]  # on one line


def test_server_info_names_agentkit_and_its_version(config: Path) -> None:
    from agentkit import __version__

    async def main() -> Any:
        with anyio.fail_after(TIMEOUT):
            async with stdio_client(server(config, "--no-ask")) as (read, write), ClientSession(read, write) as session:
                return await session.initialize()

    result = anyio.run(main)
    info = getattr(result, "server_info", None) or result.serverInfo  # mcp 2.x / 1.x spelling
    assert (info.name, info.version) == ("agentkit", __version__) and __version__


def test_empty_question_is_a_tool_error_and_the_server_keeps_serving(config: Path) -> None:
    out = run_client(config, [("ask", {"question": "  "}), ("search_docs", {"query": "tides moon"})])
    assert out["ask"]["isError"] and "question is empty" in out["ask"]["content"][0]["text"]
    assert out["search_docs"]["structuredContent"]["passages"][0]["id"].startswith("tides.md#")


def test_no_ask_offers_only_search(config: Path) -> None:
    assert set(run_client(config, [], "--no-ask")["tools"]) == {"search_docs"}


def test_import_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from agentkit.errors import MissingDependency

    real_import = builtins.__import__

    def no_mcp(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "mcp" or name.startswith("mcp."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "agentkit.mcp_server", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_mcp)
    with pytest.raises(MissingDependency, match=r'pip install "agentkit\[mcp\]"'):
        import agentkit.mcp_server  # noqa: F401
