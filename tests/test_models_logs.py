"""`agentkit models` (GGUF headers, the default model, -m on subcommands) and `agentkit logs`,
driven through click's runner with a fake model, plus the GGUF reader against real files."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentkit.cli import cli
from agentkit.errors import InputError
from agentkit.llm.gguf import read_gguf, trained_context
from agentkit.llm.models import bundled_model_path

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
LLAMA3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{{ m['content'] }}{% endfor %}"


def _s(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path, metadata: dict[str, Any], *, vocab: int = 300) -> Path:
    """A GGUF v3 header as llama.cpp writes one (no tensors): typed key/values and a long
    string array (the vocabulary) that the reader must skip."""
    body = b""
    n = 0
    for key, value in metadata.items():
        n += 1
        if isinstance(value, str):
            body += _s(key) + struct.pack("<I", 8) + _s(value)
        elif isinstance(value, float):
            body += _s(key) + struct.pack("<I", 6) + struct.pack("<f", value)
        else:
            body += _s(key) + struct.pack("<I", 4) + struct.pack("<I", value)
    body += _s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, vocab) + b"".join(_s(f"tok{i}") for i in range(vocab))
    body += _s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, vocab) + struct.pack(f"<{vocab}f", *([0.0] * vocab))
    n += 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, n) + body + b"\0" * 64)
    return path


def model_meta(arch: str = "qwen2", ftype: int = 15, ctx: int = 32768, template: str = CHATML, kind: str = "model") -> dict[str, Any]:
    return {"general.architecture": arch, "general.type": kind, "general.name": f"tiny {arch}",
            f"{arch}.context_length": ctx, "general.file_type": ftype, f"{arch}.rope.freq_base": 1e6,
            "tokenizer.chat_template": template}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config with a fake model over a memory source, and a models folder with two GGUF files."""
    models = tmp_path / "models"
    write_gguf(models / "qwen-0.5b-q4_k_m.gguf", model_meta())
    write_gguf(models / "meta" / "llama-1b-q8.gguf", model_meta("llama", 7, 131072, LLAMA3))
    write_gguf(models / "adapter.gguf", {"general.architecture": "llama", "general.type": "adapter"})
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(models))
    monkeypatch.delenv("AGENTKIT_LOGS", raising=False)
    data = tmp_path / "data"
    fake = tmp_path / "fake.yaml"
    fake.write_text(f"data_dir: {data}\nllm: {{backend: fake}}\nsources:\n  notes: {{type: memory, description: notes}}\n")
    local = tmp_path / "local.yaml"
    local.write_text(f"data_dir: {data}\nllm: {{backend: llama_cpp}}\nsources: {{}}\n")
    return {"fake": fake, "local": local, "models": models, "data": data}


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


# --- the GGUF reader ----------------------------------------------------------------------


def test_reader_agrees_with_the_gguf_package_on_the_bundled_model() -> None:
    gguf = pytest.importorskip("gguf")
    path = bundled_model_path()
    info = read_gguf(path)
    reference = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reference.fields[key]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]].tobytes().decode()

    assert info.architecture == field("general.architecture") == "llama"
    assert info.context_length == field("llama.context_length")
    assert info.chat_template == field("tokenizer.chat_template") and info.template_family == "chatml"
    assert info.quantization == "Q4_1" and info.tensor_count == len(reference.tensors)
    assert info.metadata["tokenizer.ggml.tokens"] == {"array_length": len(reference.fields["tokenizer.ggml.tokens"].data)}
    # Tensor infos too: the LoRA export checks adapter shapes against them.
    tensors = read_gguf(path, tensors=True).tensors
    assert [(t.name, t.shape, t.type_name) for t in tensors.values()] == [
        (t.name, tuple(int(d) for d in t.shape.tolist()), t.tensor_type.name) for t in reference.tensors
    ]


def test_trained_context_stops_reading_once_it_has_the_value(tmp_path: Path) -> None:
    # The backends plan a context from this before loading; the vocabulary after it is never read.
    path = write_gguf(tmp_path / "m.gguf", model_meta(ctx=4096), vocab=100)
    path.write_bytes(path.read_bytes()[:-700])  # cut inside the vocabulary
    with pytest.raises(InputError, match="truncated"):
        read_gguf(path)
    assert trained_context(path) == 4096
    assert trained_context(tmp_path / "missing.gguf") is None
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04 a zip file")
    assert trained_context(tmp_path / "zip.gguf") is None


def test_reader_names_what_is_wrong_with_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(InputError, match=r"model.gguf is not a GGUF file .*pass a .gguf model file"):
        read_gguf(bad)
    good = write_gguf(tmp_path / "cut.gguf", model_meta())
    good.write_bytes(good.read_bytes()[:60])  # a download cut short
    with pytest.raises(InputError, match="truncated or corrupt.*download the file again"):
        read_gguf(good)


# --- agentkit models ----------------------------------------------------------------------


def test_models_lists_bundled_and_folder_files_with_their_headers(home: dict[str, Path]) -> None:
    data = json.loads(run("--config", str(home["local"]), "models", "--json").output)
    by_name = {m["name"]: m for m in data}
    assert set(by_name) == {"bundled", "qwen-0.5b-q4_k_m", "meta/llama-1b-q8", "adapter"}
    qwen = by_name["qwen-0.5b-q4_k_m"]
    assert (qwen["quantization"], qwen["context_length"], qwen["chat_template"], qwen["origin"]) == ("Q4_K_M", 32768, "chatml", "folder")
    assert qwen["size_bytes"] == (home["models"] / "qwen-0.5b-q4_k_m.gguf").stat().st_size
    llama = by_name["meta/llama-1b-q8"]
    assert (llama["quantization"], llama["context_length"], llama["chat_template"]) == ("Q8_0", 131072, "llama3")
    assert by_name["bundled"]["default"] and by_name["bundled"]["quantization"] == "Q4_1"
    assert by_name["adapter"]["type"] == "adapter"
    table = run("--config", str(home["local"]), "models").output.splitlines()
    assert table[0].split() == ["name", "size", "quant", "context", "template", "where"]
    assert any(line.startswith("*") and "bundled" in line for line in table)
    assert any("Q4_K_M" in line and "32,768" in line and "chatml" in line for line in table)


def test_models_default_is_saved_and_used_without_model(home: dict[str, Path]) -> None:
    local = str(home["local"])
    out = run("--config", local, "models", "default", "qwen-0.5b-q4_k_m").output
    saved = home["data"] / "default_model.txt"
    assert saved.read_text().strip() == str(home["models"] / "qwen-0.5b-q4_k_m.gguf") and str(saved) in out
    assert json.loads(run("--config", local, "config", "--json").output)["config"]["llm"]["model_path"] == saved.read_text().strip()
    starred = [m["name"] for m in json.loads(run("--config", local, "models", "--json").output) if m["default"]]
    assert starred == ["qwen-0.5b-q4_k_m"]
    # -m wins over the default, by name too; `bundled` goes back.
    assert json.loads(run("--config", local, "-m", "meta/llama-1b-q8", "config", "--json").output)["config"]["llm"]["model_path"].endswith("llama-1b-q8.gguf")
    run("--config", local, "models", "default", "bundled")
    assert not saved.exists()
    assert json.loads(run("--config", local, "config", "--json").output)["config"]["llm"]["model_path"] in ("", None)


def test_models_default_refuses_unknown_names_and_adapters(home: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["--config", str(home["local"]), "models", "default", "gpt-9"])
    assert result.exit_code == 2 and "no model named 'gpt-9'" in result.output and "qwen-0.5b-q4_k_m" in result.output
    result = CliRunner().invoke(cli, ["--config", str(home["local"]), "models", "default", "adapter"])
    assert result.exit_code == 2 and "LoRA adapter, not a model" in result.output
    assert not (home["data"] / "default_model.txt").exists()


def test_a_default_model_that_was_deleted_warns_and_falls_back(home: dict[str, Path]) -> None:
    run("--config", str(home["local"]), "models", "default", "qwen-0.5b-q4_k_m")
    (home["models"] / "qwen-0.5b-q4_k_m.gguf").unlink()
    result = CliRunner().invoke(cli, ["--config", str(home["local"]), "config", "--json"])
    assert "is gone; using the bundled model" in result.stderr
    assert json.loads(result.stdout)["config"]["llm"]["model_path"] in ("", None)


@pytest.mark.parametrize("command", [["ask", "hi"], ["chat"], ["serve"], ["eval", "qa", "--questions", "q.jsonl"]])
def test_model_option_is_accepted_after_the_subcommand(home: dict[str, Path], command: list[str], monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    # The fake backend refuses --model, which proves the option reached the shared settings.
    monkeypatch.chdir(tmp_path)
    Path("q.jsonl").write_text('{"question": "x", "answers": ["y"]}\n')
    at = 2 if command[0] == "eval" else 1
    args = ["--config", str(home["fake"]), *command[:at], "-m", "qwen-0.5b-q4_k_m", *command[at:]]
    result = CliRunner().invoke(cli, args, input="/exit\n")
    assert result.exit_code == 2, result.output
    assert "--model applies to the llama_cpp backend" in result.output and "No such option" not in result.output


# --- agentkit logs ------------------------------------------------------------------------


def test_ask_and_chat_answers_are_logged_newest_first(home: dict[str, Path]) -> None:
    fake = str(home["fake"])
    answer = json.loads(run("--config", fake, "ask", "--json", "What is agentkit?").output)
    run("--config", fake, "chat", "--session", "work", input="Where do the logs go?\n/exit\n")
    entries = json.loads(run("--config", fake, "logs", "--json").output)
    assert [(e["via"], e["question"], e["session"]) for e in entries] == [
        ("chat", "Where do the logs go?", "work"), ("ask", "What is agentkit?", None)]
    first = entries[1]
    assert first["answer"] == answer["text"] and first["route"]["targets"] == answer["route"]["targets"]
    assert "total_ms" in first["timings"] and first["model"] == "fake"
    # The log shares the sessions database.
    assert (home["data"] / "sessions.sqlite").is_file() and json.loads(run("--config", fake, "sessions", "list", "--json").output)[0]["name"] == "work"
    assert [e["question"] for e in json.loads(run("--config", fake, "logs", "-n", "1", "--json").output)] == ["Where do the logs go?"]
    assert [e["question"] for e in json.loads(run("--config", fake, "logs", "-q", "AGENTKIT", "--json").output)] == ["What is agentkit?"]
    text = run("--config", fake, "logs").output
    assert text.index("Q: Where do the logs go?") < text.index("Q: What is agentkit?")


def test_cited_answers_keep_their_citations_in_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_LOGS", raising=False)
    cfg = tmp_path / "docs.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n"
                   "sources:\n  docs: {type: qdrant, description: how to install agentkit, collection: docs}\n")
    guide = tmp_path / "install.md"
    guide.write_text("agentkit answers from your sources. Install agentkit with pip install agentkit. It needs Python 3.10.\n")
    run("--config", str(cfg), "ingest", str(guide), "--no-progress")
    answer = json.loads(run("--config", str(cfg), "ask", "--json", "How do I install agentkit?").output)
    [entry] = json.loads(run("--config", str(cfg), "logs", "--json").output)
    assert [c["passage_id"] for c in entry["citations"]] == [c["passage_id"] for c in answer["citations"]] != []
    assert "[1] install" in run("--config", str(cfg), "logs").output


def test_logs_off_stops_logging_and_on_resumes(home: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = str(home["fake"])
    assert "logging is off" in run("--config", fake, "logs", "off").output
    run("--config", fake, "ask", "private question")
    assert json.loads(run("--config", fake, "logs", "--json").output) == []
    assert "logging is off" in run("--config", fake, "logs").output
    run("--config", fake, "logs", "on")
    run("--config", fake, "ask", "public question")
    monkeypatch.setenv("AGENTKIT_LOGS", "off")
    run("--config", fake, "ask", "another private one")
    assert [e["question"] for e in json.loads(run("--config", fake, "logs", "--json").output)] == ["public question"]
    assert json.loads(run("--config", fake, "logs", "status", "--json").output)["entries"] == 1


def test_a_log_that_cannot_be_written_does_not_cost_the_answer(home: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    home["data"].mkdir(parents=True)
    (home["data"] / "sessions.sqlite").write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(cli, ["--config", str(home["fake"]), "ask", "--json", "still answered?"])
    assert result.exit_code == 0 and json.loads(result.stdout)["question"] == "still answered?"
    assert "could not log the answer" in caplog.text and "agentkit logs off" in caplog.text


def test_served_answers_are_logged(home: dict[str, Path]) -> None:
    from starlette.testclient import TestClient

    from agentkit.agent import Agent
    from agentkit.server.app import create_app

    agent = Agent.from_config(str(home["fake"]))
    with TestClient(create_app(agent), base_url="http://127.0.0.1") as client:
        for stream in (False, True):
            r = client.post("/v1/chat/completions", json={"model": "agentkit", "stream": stream,
                                                          "messages": [{"role": "user", "content": f"served, stream={stream}"}]})
            assert r.status_code == 200
    entries = json.loads(run("--config", str(home["fake"]), "logs", "--json").output)
    assert [(e["via"], e["question"]) for e in entries] == [("serve", "served, stream=True"), ("serve", "served, stream=False")]


def test_logs_false_in_the_config_keeps_its_answers_out_of_the_log(home: dict[str, Path], tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(home["fake"].read_text() + "logs: false\n")
    run("--config", str(quiet), "ask", "kept private")
    run("--config", str(home["fake"]), "ask", "kept in the log")
    assert [e["question"] for e in json.loads(run("--config", str(home["fake"]), "logs", "--json").output)] == ["kept in the log"]
