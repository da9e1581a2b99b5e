"""Beside a running `agentkit serve`, which holds the embedded store: `ingest` and `ask` go through
it (server/remote.py); without one, a locked store is an error naming what holds it."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit import Agent, Passage
from agentkit.cli import cli
from agentkit.config import load_config
from agentkit.errors import StoreLocked
from agentkit.knowledge.qdrant import QdrantSource
from agentkit.server.app import create_app
from agentkit.server.remote import ANNOUNCE_FILE, KEY_HEADER, announce, find_server, locked_error

pytest.importorskip("qdrant_edge")


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    f = tmp_path / "agentkit.yaml"
    f.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n"
                 "sources:\n  docs: {type: qdrant, description: how to install agentkit, collection: docs}\n")
    return f


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(config: Path) -> Iterator[Agent]:
    """`agentkit serve` in a thread: its agent opened the store (and holds its lock)."""
    import uvicorn

    agent = Agent.from_config(load_config(config))
    agent.sources["docs"].add([Passage("seed#0", "agentkit answers from your sources.", "Seed")])
    app = create_app(agent)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    with announce(app.state.agentkit, "127.0.0.1", port):
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        try:
            yield agent
        finally:
            server.should_exit = True
            thread.join(5)
            agent.close()


def test_ingest_beside_a_running_server_goes_through_it(served: Agent, config: Path, tmp_path: Path) -> None:
    guide = tmp_path / "install.md"
    guide.write_text("Install agentkit with pip install agentkit. It needs Python 3.10.\n")
    result = run("--config", str(config), "ingest", str(guide), "--no-progress")
    # Before: "the store ... is held by another agentkit process", exit 2.
    assert result.exit_code == 0, result.output
    assert "ingesting through it" in result.output and "1 document " in result.output
    found = served.sources["docs"].search("install agentkit pip", k=3)
    assert found and found[0].doc_id == "install.md"
    # Again: unchanged, as a local ingest would say.
    assert "1 unchanged" in run("--config", str(config), "ingest", str(guide), "--no-progress").output


def test_delete_beside_a_running_server_goes_through_it(served: Agent, config: Path, tmp_path: Path) -> None:
    guide = tmp_path / "install.md"
    guide.write_text("Install agentkit with pip install agentkit. It needs Python 3.10.\n")
    assert run("--config", str(config), "ingest", str(guide), "--no-progress").exit_code == 0
    result = run("--config", str(config), "delete", "install.md", "install.md", "--json")
    # Before: the store's lock refused the delete ("held by another agentkit process"), exit 2.
    assert result.exit_code == 0, result.output
    assert "deleting through it" in result.output
    assert json.loads(result.output[result.output.index("{"):])["removed"] == {"install.md": 1}
    assert all(p.doc_id != "install.md" for p in served.sources["docs"].search("install agentkit pip", k=3))
    assert run("--config", str(config), "delete", "install.md").exit_code == 1  # gone: "not in 'docs'"


def test_ask_beside_a_running_server_is_answered_by_it(served: Agent, config: Path) -> None:
    served.sources["docs"].add([Passage("install.md#0", "Install agentkit with pip install agentkit.", "install")])
    result = run("--config", str(config), "ask", "--json", "How do I install agentkit?")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{"):])
    # Before: the search failed on the lock and the model answered from memory.
    assert answer["citations"] and answer["citations"][0]["passage_id"] == "install.md#0"
    assert not any("held by another" in w for w in answer["warnings"])


def test_the_announcement_is_private_and_removed_when_the_server_stops(config: Path) -> None:
    agent = Agent.from_config(load_config(config))
    app = create_app(agent)
    data_dir = Path(load_config(config).data_dir)
    with announce(app.state.agentkit, "0.0.0.0", 8123) as entry:
        assert entry is not None and entry.url == "http://127.0.0.1:8123"
        file = data_dir / ANNOUNCE_FILE
        assert stat.S_IMODE(file.stat().st_mode) == 0o600  # the key in it lets a process ingest
        assert find_server(data_dir).pid == os.getpid()  # type: ignore[union-attr]
    assert not file.exists()


def test_a_stale_announcement_is_ignored(config: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # A server killed with -9 leaves its file; a pid that no longer runs is not a server.
    (data_dir / ANNOUNCE_FILE).write_text(json.dumps({"pid": 2**22 + 17, "url": "http://127.0.0.1:9", "key": "k",
                                                      "sources": ["docs"]}))
    assert find_server(data_dir) is None
    guide = tmp_path / "a.md"
    guide.write_text("Tides follow the moon.\n")
    result = run("--config", str(config), "ingest", str(guide), "--no-progress")
    assert result.exit_code == 0 and "1 document " in result.output


def test_a_store_locked_without_a_server_is_an_error_naming_the_holder(config: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    holder = QdrantSource("docs", path=data_dir / "qdrant", collection="docs")
    holder.add([Passage("x#0", "held", "x")])  # another process (here: another source object) holds it
    guide = tmp_path / "a.md"
    guide.write_text("Tides follow the moon.\n")
    try:
        result = CliRunner().invoke(cli, ["--config", str(config), "ingest", str(guide), "--no-progress"])
    finally:
        holder.close()
    assert result.exit_code == 2
    assert "held by another agentkit process" in result.output
    assert "no agentkit serve announced itself" in result.output and "fuser" in result.output


def test_locked_error_names_a_live_announced_server(tmp_path: Path) -> None:
    (tmp_path / ANNOUNCE_FILE).write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:8000", "key": "k",
                                                      "sources": ["docs"]}))
    err = locked_error(StoreLocked("the store at /s is held", path="/s"), tmp_path)
    assert f"pid {os.getpid()}, http://127.0.0.1:8000" in str(err) and err.path == "/s"


def test_the_local_endpoints_want_the_key_from_the_data_dir(config: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    agent = Agent.from_config(load_config(config))
    app = create_app(agent, token="secret")
    guide = tmp_path / "g.md"
    guide.write_text("Install agentkit with pip.\n")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        body = {"paths": [str(guide)], "source": "docs"}
        assert client.post("/extras/ingest", json=body).status_code == 403
        assert client.post("/extras/ingest", json=body, headers={KEY_HEADER: "guess"}).status_code == 403
        key = app.state.agentkit.local_key
        bad = client.post("/extras/ingest", json={**body, "options": {"batch_size": 1}}, headers={KEY_HEADER: key})
        assert bad.status_code == 400 and "options" in bad.json()["error"]["message"]
        ok = client.post("/extras/ingest", json=body, headers={KEY_HEADER: key})
        assert ok.status_code == 200 and ok.json()["documents"] == 1
        asked = client.post("/extras/ask", json={"question": "How do I install agentkit?"}, headers={KEY_HEADER: key})
        assert asked.status_code == 200 and asked.json()["citations"]
    agent.close()


def test_the_local_endpoints_keep_the_servers_body_limits(config: Path) -> None:
    """The key proves who calls, not what is sent: --max-body and the nesting limit still hold."""
    from starlette.testclient import TestClient

    agent = Agent.from_config(load_config(config))
    app = create_app(agent, max_body_bytes=200)
    key = {KEY_HEADER: app.state.agentkit.local_key, "Content-Type": "application/json"}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        big = client.post("/extras/ask", content=json.dumps({"question": "x" * 500}), headers=key)
        assert big.status_code == 413 and "at most 200" in big.json()["error"]["message"]
        deep = client.post("/extras/delete", content="[" * 80 + "]" * 80, headers=key)
        assert deep.status_code == 400 and "levels deep" in deep.json()["error"]["message"]
        listed = client.post("/extras/delete", content="[]", headers=key)
        assert listed.status_code == 400 and "JSON object" in listed.json()["error"]["message"]
    agent.close()
