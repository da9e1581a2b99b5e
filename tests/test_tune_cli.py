"""`agentkit tune run` end to end on the bundled model: labelled questions over a small corpus ->
instruction data -> a few LoRA steps -> GGUF -> bound in the config -> the agent uses it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

if importlib.util.find_spec("peft") is None:
    pytest.skip("agentkit tune needs the tune extra: pip install 'agentkit[tune]'", allow_module_level=True)

from agentkit.cli import cli  # noqa: E402

FACTS = {
    "otters": ("Sea otters", "Sea otters hold hands while they sleep so that they do not drift apart.", "hold hands"),
    "honey": ("Honey", "Honey found in ancient Egyptian tombs was still edible after 3000 years.", "3000 years"),
    "octopus": ("Octopus", "An octopus has three hearts and blue blood.", "three hearts"),
    "venus": ("Venus", "A day on Venus lasts longer than its year.", "longer than its year"),
    "bamboo": ("Bamboo", "Some bamboo species grow up to 91 centimetres in a single day.", "91 centimetres"),
    "koala": ("Koalas", "Koalas sleep for up to 22 hours a day.", "22 hours"),
}
QUESTIONS = {
    "otters": "What do sea otters do while they sleep?",
    "honey": "How long did honey from Egyptian tombs stay edible?",
    "octopus": "How many hearts does an octopus have?",
    "venus": "How long is a day on Venus?",
    "bamboo": "How fast can bamboo grow?",
    "koala": "How long do koalas sleep?",
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for key, (title, text, _) in FACTS.items():
        (corpus / f"{key}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    with (tmp_path / "labels.jsonl").open("w", encoding="utf-8") as fh:
        for key, question in QUESTIONS.items():
            fh.write(json.dumps({"question": question, "answer": FACTS[key][2]}) + "\n")
    (tmp_path / "agentkit.yaml").write_text(
        f"# my settings\ndata_dir: {tmp_path / 'data'}\nllm: {{backend: llama_cpp, n_ctx: 2048}}\n"
        "sources:\n  docs: {type: memory, description: animal and planet facts}\n"
        "tune:\n  train: {learning_rate: 0.002, batch_size: 2, checkpoint_every: 1}\n  data: {heldout: 0.2}\n",
        encoding="utf-8",
    )
    return tmp_path


@pytest.mark.real_model
def test_tune_run_builds_trains_exports_and_registers(workspace: Path, hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.llm import hf

    monkeypatch.chdir(workspace)
    # The test session's shared dequantized copy instead of the data_dir's own.
    real_load = hf.load_hf_model
    monkeypatch.setattr(hf, "load_hf_model", lambda path=None, **kw: real_load(path, **{**kw, "cache_dir": hf_cache}))
    config = workspace / "agentkit.yaml"
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "tune", "run", "--name", "facts", "--corpus", "corpus", "--labels", "labels.jsonl",
         "--max-steps", "2", "--source", "docs", "--no-progress"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = workspace / "adapters" / "facts"
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (out / "data" / "heldout.jsonl").read_text().splitlines()]
    assert len(train) + len(held) == len(QUESTIONS) and held
    assert {e["question"] for e in train}.isdisjoint({e["question"] for e in held})
    assert all(e["messages"][0]["role"] == "system" and "Answer:" in e["output"] for e in train)
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 2
    assert (out / "adapter.gguf").is_file() and (out / "checkpoints").is_dir()

    # Registered in the config, comments kept, bound to the docs source; the agent loads it.
    text = config.read_text()
    assert text.startswith("# my settings")
    assert yaml.safe_load(text)["adapters"]["facts"] == {"path": "adapters/facts/adapter.gguf", "scale": 1.0, "sources": ["docs"]}
    from agentkit.agent import Agent

    agent = Agent.from_config(str(config))
    try:
        assert agent.llm.adapter_names == ["facts"]  # type: ignore[attr-defined]
        assert agent.adapters["facts"].sources == ["docs"]
    finally:
        agent.llm.close()  # type: ignore[attr-defined]
        agent.close()


def test_tune_register_refuses_unknown_sources_and_keeps_the_file(tmp_path: Path) -> None:
    config = tmp_path / "agentkit.yaml"
    original = "llm: {backend: fake}\nsources:\n  docs: {type: memory}\n"
    config.write_text(original, encoding="utf-8")
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"GGUF")
    result = CliRunner().invoke(cli, ["--config", str(config), "tune", "register", "a", str(adapter), "--source", "wiki"])
    assert result.exit_code == 2 and "no source named 'wiki'" in result.output
    assert config.read_text() == original
    result = CliRunner().invoke(cli, ["--config", str(config), "tune", "register", "a", str(adapter), "--route", "dictionary"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(config.read_text())["adapters"]["a"] == {"path": "a.gguf", "scale": 1.0, "routes": ["dictionary"]}
    # A second registration rewrites the section and keeps a backup of the file as it was.
    result = CliRunner().invoke(cli, ["--config", str(config), "tune", "register", "b", str(adapter), "--default"])
    assert result.exit_code == 0, result.output
    assert set(yaml.safe_load(config.read_text())["adapters"]) == {"a", "b"}
    assert (tmp_path / "agentkit.yaml.bak").is_file()


@pytest.mark.real_model
def test_ctrl_c_in_tune_train_keeps_a_checkpoint_and_resume_finishes(tmp_path: Path, hf_cache: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.llm import hf
    from agentkit.tune import train as train_module

    real_load, real_train = hf.load_hf_model, train_module.train
    monkeypatch.setattr(hf, "load_hf_model", lambda path=None, **kw: real_load(path, **{**kw, "cache_dir": hf_cache}))

    def interrupted(*args, **kwargs):  # the user presses Ctrl-C after the first step
        def stop(step: int, loss: float) -> None:
            raise KeyboardInterrupt

        return real_train(*args, **{**kwargs, "on_step": stop})

    data = tmp_path / "train.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for key, question in QUESTIONS.items():
            messages = [{"role": "user", "content": f"Sources:\n[1] {FACTS[key][0]}\n{FACTS[key][1]}\n\nQuestion: {question}"}]
            fh.write(json.dumps({"messages": messages, "output": f"Answer: {FACTS[key][2]} [1]."}) + "\n")
    config = tmp_path / "agentkit.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ntune: {{train: {{batch_size: 2, checkpoint_every: 0}}}}\n")
    args = ["--config", str(config), "tune", "train", "--data", str(data), "--out", str(tmp_path / "out"),
            "--max-steps", "2", "--no-progress"]
    monkeypatch.setattr(train_module, "train", interrupted)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    assert "saved" in result.output and "step-1" in result.output and "--resume" in result.output
    monkeypatch.setattr(train_module, "train", real_train)
    result = CliRunner().invoke(cli, [*args, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "train_report.json").read_text())
    assert report["resumed_from"] == 1 and report["steps"] == 2
    assert (tmp_path / "out" / "adapter.gguf").is_file()


def test_tune_register_keeps_the_configs_comments_and_layout(tmp_path: Path) -> None:
    config = tmp_path / "agentkit.yaml"
    original = (
        "# my settings: read by agentkit\n"
        "llm: {backend: fake}   # the test model\n"
        "sources:\n"
        "  docs: {type: memory, description: 'animal facts'}  # quoted on purpose\n"
        "# LoRA adapters, kept by hand\n"
        "adapters:\n"
        "  old: {path: old.gguf, scale: 0.5}   # the first try\n"
        "agent:\n"
        "  top_k: 3  # small corpus\n"
    )
    config.write_text(original, encoding="utf-8")
    (tmp_path / "new.gguf").write_bytes(b"GGUF")
    result = CliRunner().invoke(cli, ["--config", str(config), "tune", "register", "new", str(tmp_path / "new.gguf"), "--source", "docs"])
    assert result.exit_code == 0, result.output
    text = config.read_text()
    for line in original.splitlines():  # every line, comments included, is still there as written
        assert line in text.splitlines(), line
    assert yaml.safe_load(text)["adapters"] == {
        "old": {"path": "old.gguf", "scale": 0.5},
        "new": {"path": "new.gguf", "scale": 1.0, "sources": ["docs"]},
    }
    assert (tmp_path / "agentkit.yaml.bak").read_text() == original
