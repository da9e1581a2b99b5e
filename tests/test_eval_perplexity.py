"""`agentkit eval perplexity`: windowing, the NLL arithmetic, errors, and (real_model) the numbers.

Real-model tests use small windows (--ctx 64) and a few dozen scored tokens to stay fast.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agentkit.cli import cli
from agentkit.errors import (
    InputError,
    ModelLoadError,
    ModelNotFound,
    RealModelForbidden,
)
from agentkit.eval.perplexity import (
    compare,
    corpus_texts,
    perplexity,
    token_nll,
    windows,
)

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"

PARAGRAPH = (
    "Every morning, the old man walked his dog along the river. He liked to watch the boats go by "
    "and to say hello to the people he met on the way. When it rained, he took an umbrella and wore "
    "his brown coat. After the walk, he went back home, made a cup of tea, and read the newspaper by "
    "the window. In the afternoon, his daughter often called to ask how he was doing, and he always "
    "told her that he was fine and that the dog was happy. On Sundays, the whole family came for lunch, "
    "and the children played in the garden until it was time to go home."
)


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


# --- no model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "ctx", "n_bos", "limit"), [(1000, 64, 0, None), (1000, 64, 1, None), (777, 65, 1, 100), (40, 64, 0, None), (33, 64, 0, None)])
def test_windows_score_each_token_once_with_half_a_window_of_context(n: int, ctx: int, n_bos: int, limit: int | None) -> None:
    spans = windows(n, ctx, n_bos, limit)
    first = ctx // 2 + 1 - n_bos
    scored = [t for _, s, end in spans for t in range(s, end)]
    expected = list(range(first, n if limit is None else min(n, first + limit)))
    assert scored == expected  # contiguous, in order, no token twice
    for start, s, end in spans:
        assert end - start + n_bos <= ctx  # the window fits the context
        assert s - start + n_bos >= ctx // 2 + 1  # context before the first scored token (BOS included)


def test_too_short_text_has_no_windows() -> None:
    assert windows(32, 64, 1, None) == []


def test_token_nll_equals_log_softmax_in_float64() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 8, (5, 3000)) + 200).astype(np.float32)  # large offsets: needs the shift
    targets = rng.integers(0, 3000, 5)
    wide = logits.astype(np.float64)
    expected = np.log(np.exp(wide - wide.max(1, keepdims=True)).sum(1)) + wide.max(1) - wide[np.arange(5), targets]
    np.testing.assert_allclose(token_nll(logits, targets), expected, rtol=1e-6)


def test_the_guard_forbids_loading_the_model() -> None:
    with pytest.raises(RealModelForbidden):
        perplexity(None, PARAGRAPH)


def test_corpus_without_text_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="empty.txt has no text"):
        list(corpus_texts(tmp_path / "empty.txt"))


def test_beir_corpus_gives_title_and_text(tmp_path: Path) -> None:
    f = tmp_path / "corpus.jsonl"
    f.write_text('{"_id": "1", "title": "Cells", "text": "Cells divide."}\n{"_id": "2", "title": "", "text": ""}\n')
    assert list(corpus_texts(f)) == ["Cells\nCells divide."]


def test_non_gguf_lora_is_a_clear_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default config, not one a developer keeps in the repo
    monkeypatch.delenv("AGENTKIT_CONFIG", raising=False)
    corpus = tmp_path / "text.txt"
    corpus.write_text(PARAGRAPH)
    bad = tmp_path / "adapter.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    result = run("eval", "perplexity", "--corpus", str(corpus), "--lora", str(bad))
    assert result.exit_code != 0
    assert str(bad) in result.output and "not a GGUF file" in result.output and "GGUF LoRA" in result.output
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFound, match="nope.gguf does not exist"):
        compare(None, PARAGRAPH, lora=[(missing, 1.0)])


def test_lora_scales_must_match_the_adapters(tmp_path: Path) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text(PARAGRAPH)
    result = run("eval", "perplexity", "--corpus", str(corpus), "--lora", "a.gguf", "--lora", "b.gguf",
                 "--lora-scale", "1", "--lora-scale", "2", "--lora-scale", "3")
    assert result.exit_code == 2 and "--lora-scale" in result.output


# --- the bundled model -------------------------------------------------------------------------


def _random_lora(path: Path, *, std: float, layers: range = range(30), rank: int = 4) -> Path:
    """A GGUF LoRA for SmolLM2-135M with random factors on every attn_q: it must change the numbers."""
    gguf = pytest.importorskip("gguf", reason="gguf (numpy GGUF writer) is needed to write a test adapter")
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for i in layers:
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", rng.normal(0, std, (rank, 576)).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", rng.normal(0, std, (576, rank)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.real_model
def test_natural_text_has_lower_perplexity_than_the_same_words_shuffled() -> None:
    natural = perplexity(None, PARAGRAPH, ctx=64)
    mixed = perplexity(None, shuffled(PARAGRAPH), ctx=64)
    for r in (natural, mixed):
        assert math.isfinite(r.ppl) and r.ppl > 1 and r.tokens > 50
        assert r.ppl == pytest.approx(math.exp(r.nll))
    assert natural.ppl < mixed.ppl / 2


@pytest.mark.real_model
def test_limit_tokens_and_a_hand_computed_nll_from_llama_scores() -> None:
    from llama_cpp import Llama

    from agentkit.llm.models import bundled_model_path

    limited = perplexity(None, PARAGRAPH, ctx=64, limit_tokens=20)
    assert limited.tokens == 20 and limited.evaluated <= 64

    # llama.cpp's own numbers: one window, logits of every position, log-softmax by hand.
    llama = Llama(str(bundled_model_path()), n_ctx=64, logits_all=True, verbose=False)
    try:
        tokens = llama.tokenize(PARAGRAPH.encode(), add_bos=False)[:50]
        llama.eval(tokens)
        logits = llama.scores[:50].astype(np.float64)
    finally:
        llama.close()
    logprobs = logits - logits.max(1, keepdims=True)
    logprobs -= np.log(np.exp(logprobs).sum(1, keepdims=True))
    # SmolLM2 adds no BOS, so tokens 33.. are scored from rows 32.. (ctx // 2 + 1 tokens of context).
    hand = -np.mean([logprobs[i - 1, tokens[i]] for i in range(33, 50)])
    ours = perplexity(None, tokens, ctx=64)
    assert ours.tokens == 17
    assert ours.nll == pytest.approx(hand, abs=1e-4)


@pytest.mark.real_model
def test_scifact_abstracts() -> None:
    if not SCIFACT.is_file():
        pytest.skip(f"no SciFact corpus at {SCIFACT}: this check needs ../shared/data/scifact/corpus.jsonl")
    r = perplexity(None, corpus_texts(SCIFACT), ctx=128, limit_tokens=256)
    assert r.tokens == 256
    assert 3 < r.ppl < 200  # SmolLM2-135M (Q4_1) on scientific abstracts: ~15-30 with ctx 512


@pytest.mark.real_model
def test_cli_prints_the_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./agentkit.yaml: the default config, so the bundled model
    monkeypatch.delenv("AGENTKIT_CONFIG", raising=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Walks\n\n" + PARAGRAPH)
    args = ["eval", "perplexity", "--corpus", "docs", "--ctx", "64", "--limit-tokens", "30", "--no-progress"]
    table = run(*args)
    assert table.exit_code == 0, table.output
    assert "SmolLM2-135M-Instruct" in table.output and "none" in table.output and "perplexity" in table.output
    data = json.loads(run(*args, "--json").output)
    (row,) = data["rows"]
    assert row["tokens"] == 30 and row["adapters"] == [] and row["ppl"] > 1


@pytest.mark.real_model
def test_an_adapter_changes_perplexity_on_the_same_loaded_model(tmp_path: Path) -> None:
    adapter = _random_lora(tmp_path / "random.gguf", std=0.3)
    both = compare(None, PARAGRAPH, lora=[(adapter, 1.0)], ctx=64, limit_tokens=60)
    base = perplexity(None, PARAGRAPH, ctx=64, limit_tokens=60)
    assert both.base.nll == pytest.approx(base.nll, abs=1e-6)  # the adapter did not leak into the base row
    assert both.adapted.adapters == [(str(adapter), 1.0)] and both.adapted.tokens == base.tokens
    assert both.adapted.ppl > both.base.ppl * 1.5  # random noise in every q projection hurts
    assert both.delta_nll == pytest.approx(both.adapted.nll - both.base.nll)
    # Scale 0 attaches the adapter with no effect: what remains is the base model's numbers.
    off = perplexity(None, PARAGRAPH, ctx=64, limit_tokens=60, lora=[(adapter, 0.0)])
    assert off.nll == pytest.approx(base.nll, abs=1e-3)


@pytest.mark.real_model
def test_cli_with_lora_prints_both_rows_and_the_change(tmp_path: Path) -> None:
    adapter = _random_lora(tmp_path / "random.gguf", std=0.3)
    corpus = tmp_path / "text.txt"
    corpus.write_text(PARAGRAPH)
    args = ["--config", str(tmp_path / "none.yaml"), "eval", "perplexity", "--corpus", str(corpus),
            "--ctx", "64", "--limit-tokens", "30", "--no-progress", "--lora", str(adapter)]
    (tmp_path / "none.yaml").write_text("llm: {backend: llama_cpp}\n")
    out = run(*args)
    assert out.exit_code == 0, out.output
    assert "none" in out.output and "random.gguf" in out.output and "change with adapter" in out.output
    data = json.loads(run(*args, "--json").output)
    assert [len(r["adapters"]) for r in data["rows"]] == [0, 1] and data["relative_change"] > 0


@pytest.mark.real_model
def test_a_gguf_that_is_not_a_lora_is_a_clear_error() -> None:
    from agentkit.llm.models import bundled_model_path

    with pytest.raises(ModelLoadError, match="must be a GGUF LoRA made for this base model"):
        compare(None, PARAGRAPH, lora=[(bundled_model_path(), 1.0)], ctx=64)


@pytest.mark.real_model
def test_an_exported_peft_adapter_changes_perplexity(tmp_path: Path) -> None:
    try:
        from agentkit.tune.export import export_gguf_lora
    except ImportError:
        pytest.skip("agentkit.tune.export.export_gguf_lora is not available")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    folder = tmp_path / "peft"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["v_proj"]}
    ))
    rng = np.random.default_rng(1)
    factors = {}
    for i in range(30):
        key = f"base_model.model.model.layers.{i}.self_attn.v_proj"
        factors[f"{key}.lora_A.weight"] = rng.normal(0, 0.2, (4, 576)).astype(np.float32)
        factors[f"{key}.lora_B.weight"] = rng.normal(0, 0.2, (192, 4)).astype(np.float32)
    safetensors_numpy.save_file(factors, str(folder / "adapter_model.safetensors"))
    adapter = export_gguf_lora(folder, tmp_path / "peft.gguf")
    both = compare(None, PARAGRAPH, lora=[(adapter, 1.0)], ctx=64, limit_tokens=30)
    assert both.adapted.nll != pytest.approx(both.base.nll, abs=1e-3)
