"""The `agentkit` command, driven through click's runner with a fake model and memory sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit import __version__
from agentkit.cli import cli


@pytest.fixture()
def fake_config(tmp_path: Path) -> Path:
    f = tmp_path / "agentkit.yaml"
    f.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "llm: {backend: fake}\n"
        "sources:\n"
        "  notes: {type: memory, description: notes about agentkit}\n"
    )
    return f


def run(*args: str, input: str | None = None) -> "object":
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_version_and_help() -> None:
    assert __version__ in run("--version").output
    out = run("--help").output
    for command in ("chat", "ask", "ingest", "sources", "config"):
        assert command in out


def test_ask_json_prints_the_whole_answer(fake_config: Path) -> None:
    result = run("--config", str(fake_config), "ask", "--json", "hello")
    data = json.loads(result.output)
    assert data["route"]["targets"] == ["parametric"] and data["from_memory"] is True


@pytest.fixture()
def docs_config(tmp_path: Path) -> Path:
    """A fake model over an embedded store holding one ingested guide."""
    cfg = tmp_path / "docs.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n"
                   "sources:\n  docs: {type: qdrant, description: how to install agentkit, collection: docs}\n")
    guide = tmp_path / "install.md"
    guide.write_text("agentkit answers from your sources. Install agentkit with pip install agentkit. It needs Python 3.10.\n")
    assert "1 document " in run("--config", str(cfg), "ingest", str(guide), "--no-progress").output
    return cfg


def test_ask_json_carries_each_quote_and_its_span(docs_config: Path) -> None:
    data = json.loads(run("--config", str(docs_config), "ask", "--json", "How do I install agentkit?").output)
    assert data["kind"] == "model" and data["withheld"] == ""
    [citation] = data["citations"]
    texts = {p["id"]: p["text"] for p in data["passages"]}
    assert citation["quote"] and texts[citation["passage_id"]][citation["start"] : citation["end"]] == citation["quote"]
    assert citation["inferred"] is False


def test_ask_prints_the_sources_with_their_quotes(docs_config: Path) -> None:
    data = json.loads(run("--config", str(docs_config), "ask", "--json", "How do I install agentkit?").output)
    out = run("--config", str(docs_config), "ask", "--no-stream", "How do I install agentkit?").output.splitlines()
    assert out[0] == data["text"]
    head = out.index("Sources:") + 1
    assert out[head].startswith("  [1] install — file://") and out[head].endswith("(docs)")
    assert out[head + 1].strip().startswith("“" + " ".join(data["citations"][0]["quote"].split()) + "”")
    streamed = run("--config", str(docs_config), "ask", "--stream", "How do I install agentkit?").output.splitlines()
    assert streamed[0].startswith("Quote: [1]")  # the model's raw reply, as it came
    # The checked answer (the short answer with its quote) is printed once, after the raw reply.
    assert sum(data["text"] in line for line in streamed) == 1


def test_ask_says_when_the_model_answer_was_replaced_and_verbose_shows_it(tmp_path: Path, docs_config: Path) -> None:
    reply = 'Quote: [1] "Install agentkit with pip install agentkit."\nAnswer: bananas'
    docs_config.write_text(docs_config.read_text().replace("{backend: fake}", "{backend: fake, responses: [%s]}" % json.dumps(reply)))
    out = run("--config", str(docs_config), "ask", "--no-stream", "How do I install agentkit?").output
    assert "The sources say: “" in out and "did not hold up" in out and "--verbose shows it" in out
    assert all("bananas" not in line for line in out.splitlines() if not line.startswith("warning:"))
    verbose = run("--config", str(docs_config), "ask", "--no-stream", "-v", "How do I install agentkit?").output
    assert "the model's own answer, not shown: bananas" in verbose


def test_no_color_turns_styling_off(docs_config: Path) -> None:
    args = ["--config", str(docs_config), "ask", "--no-stream", "How do I install agentkit?"]
    assert "\x1b[" in CliRunner().invoke(cli, args, color=True).output
    assert "\x1b[" not in CliRunner().invoke(cli, args, color=True, env={"NO_COLOR": "1"}).output


def test_ask_forced_route_and_unknown_route(fake_config: Path) -> None:
    result = run("--config", str(fake_config), "ask", "--route", "nope", "what is agentkit")
    assert result.exit_code == 2 and "unknown source(s) 'nope'" in result.output


def test_empty_question_is_a_clear_error(fake_config: Path) -> None:
    result = run("--config", str(fake_config), "ask", "  ")
    assert result.exit_code == 2 and "question is empty" in result.output


def test_bad_config_key_exits_nonzero_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("llm: {backend: fake, temprature: 1}\n")
    result = run("--config", str(f), "sources")
    assert result.exit_code == 2 and "llm.temprature: unknown key" in result.output


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"data_dir: {tmp_path}\nsources: {{}}\n")
    result = run("--config", str(f), "--model", str(tmp_path / "nope.gguf"), "ask", "hello")
    assert result.exit_code == 2
    assert "nope.gguf does not exist" in result.output and "--model PATH" in result.output


def test_sources_lists_counts(fake_config: Path) -> None:
    result = run("--config", str(fake_config), "sources")
    assert "parametric" in result.output and "notes" in result.output and "0 passages" in result.output


def test_config_shows_effective_values(fake_config: Path) -> None:
    out = run("--config", str(fake_config), "config").output
    assert "backend: fake" in out and str(fake_config) in out


def test_chat_repl_commands(fake_config: Path) -> None:
    script = "hello\n/route\n/why\n/route parametric\n/route\n/route bogus\n/route auto\n/sources\n/reset\n/nope\n/help\n/exit\n"
    out = run("--config", str(fake_config), "chat", input=script).output
    assert "↳ parametric" in out
    assert "last route: parametric" in out and "rules:parametric" in out
    assert "route forced to: parametric" in out
    assert "unknown route bogus" in out and "the router decides again" in out
    assert "configured sources: parametric, notes" in out
    assert "conversation cleared" in out and "unknown command /nope" in out and "/exit" in out


def test_chat_keeps_going_after_an_error_and_ends_on_eof(fake_config: Path) -> None:
    out = run("--config", str(fake_config), "chat", "--route", "notes", input="what is agentkit?\nhello\n").output
    assert out.count("↳ notes") == 2  # forced route applies to every question; EOF ends the session


def test_ingest_then_delete_by_document_id(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n"
                   "sources:\n  docs: {type: qdrant, description: docs, collection: docs}\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "long.md").write_text("# Long\n\n" + "Tides follow the Moon. " * 300)
    (corpus / "short.md").write_text("# Short\n\nBees dance.")
    out = run("--config", str(cfg), "ingest", str(corpus), "--no-progress").output
    assert "2 documents" in out
    before = run("--config", str(cfg), "sources").output
    result = run("--config", str(cfg), "delete", "long.md", "nope.md")
    assert result.exit_code == 0
    assert "nope.md: not in 'docs'" in result.output
    n = int(result.output.split("long.md: removed ")[1].split()[0])
    assert n > 1
    after = run("--config", str(cfg), "sources").output
    count = lambda text: int(text.split("qdrant ")[1].split()[0].replace(",", ""))  # noqa: E731
    assert count(before) - count(after) == n and count(after) == 1
    assert run("--config", str(cfg), "delete", "long.md").exit_code == 1  # already gone
