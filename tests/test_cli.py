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
    # The quote reader's raw reply stays off screen; the checked answer is printed once.
    assert streamed[0] == data["text"] and sum(data["text"] in line for line in streamed) == 1


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


def test_sources_config_and_delete_speak_json(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nsources:\n  docs: {{type: qdrant, description: guides, collection: docs}}\n")
    (tmp_path / "a.md").write_text("Alpha is the first letter.\n")
    run("--config", str(cfg), "ingest", str(tmp_path / "a.md"), "--no-progress")
    listed = json.loads(run("--config", str(cfg), "sources", "--json").output)
    assert listed["config"] == str(cfg) and listed["model"]["backend"] == "fake"
    assert [(s["name"], s["type"], s["passages"]) for s in listed["sources"]] == [("docs", "qdrant", 1)]
    shown = json.loads(run("--config", str(cfg), "config", "--json").output)
    assert shown["origin"] == str(cfg) and shown["config"]["sources"]["docs"]["collection"] == "docs"
    result = run("--config", str(cfg), "delete", "--json", "a.md", "gone.md")
    assert json.loads(result.output) == {"source": "docs", "removed": {"a.md": 1, "gone.md": 0}} and result.exit_code == 0


def test_sources_shows_the_endpoint_of_a_remote_model_and_names_the_default_as_the_readme_does(tmp_path: Path) -> None:
    cfg = tmp_path / "remote.yaml"
    cfg.write_text(f"data_dir: {tmp_path}\nllm: {{backend: openai_compat, base_url: 'http://gpu-box:8080/v1', model: qwen2.5-7b}}\n"
                   "sources:\n  words: {type: dictionary, server: 'dict://127.0.0.1:1', description: a dictionary}\n")
    out = run("--config", str(cfg), "sources").output
    assert "qwen2.5-7b at http://gpu-box:8080/v1" in out and "at dict://127.0.0.1:1" in out
    model = json.loads(run("--config", str(cfg), "sources", "--json").output)["model"]
    assert (model["base_url"], model["model"]) == ("http://gpu-box:8080/v1", "qwen2.5-7b")
    from agentkit.cli.sources import _origin_label
    from agentkit.config import load_config

    assert _origin_label(load_config(None)).startswith("built-in default (configs/default.yaml")


def test_global_verbose_logs_and_quiet_silences_warnings(fake_config: Path) -> None:
    import logging

    @cli.command("say-logs", hidden=True)
    def say_logs() -> None:
        log = logging.getLogger("agentkit.test")
        log.info("an info line")
        log.warning("a warning line")

    runner = CliRunner()
    try:
        loud = runner.invoke(cli, ["-v", "--config", str(fake_config), "say-logs"])
        assert "INFO agentkit.test: an info line" in loud.stderr
        quiet = runner.invoke(cli, ["-q", "--config", str(fake_config), "say-logs"])
        assert "a warning line" not in quiet.stderr and "an info line" not in quiet.stderr
        plain = runner.invoke(cli, ["--config", str(fake_config), "say-logs"])
        assert "an info line" not in plain.stderr  # warnings only, through Python's own handler
        assert runner.invoke(cli, ["-v", "-q", "say-logs"]).exit_code == 2
    finally:
        cli.commands.pop("say-logs")


def test_quiet_turns_progress_bars_off_unless_asked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nsources:\n  docs: {{type: qdrant, collection: docs}}\n")
    (tmp_path / "a.md").write_text("Alpha.\n")
    import agentkit.ingest.pipeline as pipeline

    seen: list[bool] = []
    real = pipeline.ingest

    def spy(*args: "object", **kwargs: "object") -> "object":
        seen.append(bool(kwargs["progress"]))
        return real(*args, **kwargs)

    pipeline.ingest = spy  # type: ignore[assignment]
    try:
        run("-q", "--config", str(cfg), "ingest", str(tmp_path / "a.md"))
        run("-q", "--config", str(cfg), "ingest", "--progress", str(tmp_path / "a.md"))
    finally:
        pipeline.ingest = real  # type: ignore[assignment]
    assert seen == [False, True]


def test_help_lists_every_command_and_completion_is_documented() -> None:
    out = run("--help").output
    for command in ("models", "logs", "sessions", "serve", "mcp", "eval", "delete", "tune"):
        assert f"  {command} " in out
    assert "_AGENTKIT_COMPLETE=bash_source agentkit" in out
    script = CliRunner().invoke(cli, [], prog_name="agentkit", env={"_AGENTKIT_COMPLETE": "bash_source"}).output
    assert "_agentkit_completion" in script and "complete " in script


# --- progress and threads (issue 13) -------------------------------------------------------------------


def test_ask_says_what_it_is_doing_on_stderr_and_prints_the_answer_once(docs_config: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(docs_config), "ask", "--progress", "--stream", "How do I install agentkit?"])
    assert result.exit_code == 0, result.output
    assert "searching docs…" in result.stderr and "reading 1 passage from docs…" in result.stderr
    assert "searching" not in result.stdout  # stdout stays the answer
    out = result.stdout.splitlines()
    answer = next(line for line in out if line.startswith("The sources say: “"))
    assert sum(answer in line for line in out) == 1 and not any(line.startswith("Quote:") for line in out)
    quiet = CliRunner().invoke(cli, ["--config", str(docs_config), "ask", "--no-progress", "How do I install agentkit?"])
    assert "searching" not in quiet.stderr


def test_threads_sets_llm_n_threads_for_ask_chat_and_serve(tmp_path: Path, fake_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from agentkit.agent import Agent

    cfg = tmp_path / "llama.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: llama_cpp}}\n")
    seen: list[object] = []

    def capture(config: object, **_: object) -> None:
        seen.append(config.llm.get("n_threads"))  # type: ignore[attr-defined]
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(Agent, "from_config", staticmethod(capture))
    for command in (["ask", "--threads", "1", "q"], ["chat", "--threads", "2"], ["serve", "--threads", "3"]):
        assert CliRunner().invoke(cli, ["--config", str(cfg), *command], input="").exit_code == 0
    assert seen == [1, 2, 3]
    refused = CliRunner().invoke(cli, ["--config", str(fake_config), "ask", "--threads", "1", "q"])
    assert refused.exit_code != 0 and "--threads applies to the llama_cpp backend" in refused.output


def test_n_threads_defaults_to_the_physical_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from agentkit.llm import llama_cpp

    # Two hyperthreads on each of two cores: four logical CPUs, two physical cores.
    for cpu, core in enumerate([0, 0, 1, 1]):
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    real_path = llama_cpp.Path
    monkeypatch.setattr(llama_cpp, "Path", lambda p: real_path(str(p).replace("/sys/devices/system/cpu", str(tmp_path))))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert llama_cpp.physical_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # pinned to one core
    assert llama_cpp.physical_cores() == 1
