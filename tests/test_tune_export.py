"""Tests of the PEFT -> GGUF LoRA export: checks on tiny synthetic files, then a real SmolLM2 LoRA
whose logits under llama.cpp must match the PEFT model's under transformers.

The real-model tests (marked `real_model`) share one transformers load and one exported adapter
(module fixtures). They compare against an f32 copy of the bundled GGUF: llama.cpp multiplies a
quantized weight by 8-bit-quantized activations, which alone moves SmolLM2's logits by up to ~1.3,
while with f32 weights its base logits are within ~0.02 of transformers' dequantized model.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Like pytest.importorskip("peft"), without importing peft (and torch) while collecting: ~10 s.
if importlib.util.find_spec("peft") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("the tune extra is not installed: pip install 'agentkit[tune]'", allow_module_level=True)

import gguf
import numpy as np
from safetensors.numpy import save_file

from agentkit.errors import ConfigError, ModelLoadError, ModelNotFound
from agentkit.llm.gguf import read_gguf
from agentkit.llm.hf import HF_TO_GGUF
from agentkit.tune import export
from agentkit.tune.export import export_gguf_lora, read_gguf_lora

# --- tiny synthetic files ----------------------------------------------------------------

# A two-layer llama: 16 wide, 4 query heads and 2 key/value heads of 4 dims, MLP 32 wide.
TINY = {"q_proj": (16, 16), "k_proj": (8, 16), "v_proj": (8, 16), "o_proj": (16, 16), "up_proj": (32, 16)}


def _tiny_base(path: Path, arch: str = "llama", n_layer: int = 2) -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(n_layer)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_embedding_length(16)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])  # a string array to skip
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    for layer in range(n_layer):
        for hf_name, (n_out, n_in) in TINY.items():
            name = f"blk.{layer}.{HF_TO_GGUF[hf_name]}.weight"
            writer.add_tensor(name, np.zeros((n_out, n_in), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tiny_adapter(
    folder: Path,
    *,
    r: int = 2,
    alpha: float = 4.0,
    modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"),
    layers: tuple[int, ...] = (0, 1),
    extra: dict[str, np.ndarray] | None = None,
    **config: Any,
) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in layers:
        for name in modules:
            n_out, n_in = TINY.get(name, (16, 16))
            block = "mlp" if name.endswith(("up_proj", "gate_proj", "down_proj")) else "self_attn"
            key = f"base_model.model.model.layers.{layer}.{block}.{name}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(size=(r, n_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(size=(n_out, r)).astype(np.float32)
    tensors.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(modules)}
    (folder / "adapter_config.json").write_text(json.dumps(settings | config))
    return folder, tensors


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    return _tiny_base(tmp_path / "tiny.gguf")


def _factor(tensors: dict[str, np.ndarray], layer: int, module: str, ab: str) -> np.ndarray:
    block = "mlp" if module == "up_proj" else "self_attn"
    return tensors[f"base_model.model.model.layers.{layer}.{block}.{module}.lora_{ab}.weight"]


def _gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data).reshape(tuple(reversed(t.shape.tolist()))) for t in reader.tensors}


def test_metadata_names_and_shapes(tiny_base: Path, tmp_path: Path) -> None:
    adapter, _ = _tiny_adapter(tmp_path / "my-adapter")
    out = export_gguf_lora(adapter, tmp_path / "out" / "a.gguf", base=tiny_base)
    assert out == tmp_path / "out" / "a.gguf" and not list(out.parent.glob("*.partial"))
    info = read_gguf_lora(out)
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama"
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 4.0
    assert meta["general.name"] == "my-adapter"
    assert info["dtypes"] == ["F32"]
    expected = {}
    for layer in (0, 1):
        for name, gguf_name in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v")):
            n_out, n_in = TINY[name]
            expected[f"blk.{layer}.{gguf_name}.weight.lora_a"] = (2, n_in)
            expected[f"blk.{layer}.{gguf_name}.weight.lora_b"] = (n_out, 2)
    assert info["tensors"] == expected
    # ggml's ne is numpy's shape reversed: lora_a ne [in, r], lora_b ne [r, out], as llama.cpp checks.
    raw = {t.name: t.shape.tolist() for t in gguf.GGUFReader(out).tensors}
    assert raw["blk.0.attn_k.weight.lora_a"] == [16, 2] and raw["blk.0.attn_k.weight.lora_b"] == [2, 8]


def test_q_and_k_rows_are_permuted_back_to_llama_cpp_order(tiny_base: Path, tmp_path: Path) -> None:
    adapter, tensors = _tiny_adapter(tmp_path / "a", modules=("q_proj", "k_proj", "v_proj", "up_proj"))
    written = _gguf_tensors(export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base))

    def unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
        # What transformers' LlamaTensorProcessor._reverse_permute_weights does to a llama GGUF's
        # q/k rows on loading (copied: importing transformers costs seconds); the real-model
        # test below checks against transformers itself.
        dim = rows.shape[0] // n_head // 2
        return rows.reshape(n_head, dim, 2, *rows.shape[1:]).swapaxes(2, 1).reshape(rows.shape)

    for layer in (0, 1):
        for module, gguf_name, heads in (("q_proj", "attn_q", 4), ("k_proj", "attn_k", 2)):
            b = written[f"blk.{layer}.{gguf_name}.weight.lora_b"]
            assert not np.array_equal(b, _factor(tensors, layer, module, "B"))
            np.testing.assert_array_equal(unpermute(b, heads), _factor(tensors, layer, module, "B"))
        for module, gguf_name in (("v_proj", "attn_v"), ("up_proj", "ffn_up"), ("q_proj", "attn_q")):
            a = written[f"blk.{layer}.{gguf_name}.weight.lora_a"]
            np.testing.assert_array_equal(a, _factor(tensors, layer, module, "A"))
        for module, gguf_name in (("v_proj", "attn_v"), ("up_proj", "ffn_up")):
            b = written[f"blk.{layer}.{gguf_name}.weight.lora_b"]
            np.testing.assert_array_equal(b, _factor(tensors, layer, module, "B"))


def test_other_architectures_are_not_permuted(tmp_path: Path) -> None:
    base = _tiny_base(tmp_path / "qwen.gguf", arch="qwen2")
    adapter, tensors = _tiny_adapter(tmp_path / "a")
    written = _gguf_tensors(export_gguf_lora(adapter, tmp_path / "a.gguf", base=base))
    np.testing.assert_array_equal(written["blk.1.attn_q.weight.lora_b"], _factor(tensors, 1, "q_proj", "B"))


def test_rslora_alpha_gives_peft_scaling(tiny_base: Path, tmp_path: Path) -> None:
    # PEFT scales by alpha/sqrt(r) with rsLoRA; llama.cpp always by alpha/r.
    adapter, _ = _tiny_adapter(tmp_path / "a", r=4, alpha=8.0, use_rslora=True)
    alpha = read_gguf_lora(export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base))["metadata"][
        "adapter.lora.alpha"
    ]
    assert alpha / 4 == pytest.approx(8.0 / math.sqrt(4))


def test_alpha_pattern_is_folded_into_b(tiny_base: Path, tmp_path: Path) -> None:
    adapter, tensors = _tiny_adapter(
        tmp_path / "a", r=2, alpha=4.0, modules=("v_proj",), alpha_pattern={"layers.1.self_attn.v_proj": 10.0}
    )
    written = _gguf_tensors(export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base))
    alpha = read_gguf_lora(tmp_path / "a.gguf")["metadata"]["adapter.lora.alpha"]
    for layer, peft_alpha in ((0, 4.0), (1, 10.0)):
        a, b = _factor(tensors, layer, "v_proj", "A"), _factor(tensors, layer, "v_proj", "B")
        peft_delta = peft_alpha / 2 * b @ a
        wa, wb = written[f"blk.{layer}.attn_v.weight.lora_a"], written[f"blk.{layer}.attn_v.weight.lora_b"]
        np.testing.assert_allclose(alpha / 2 * wb @ wa, peft_delta, rtol=1e-5)  # llama.cpp: alpha/r


def test_rank_pattern_ranks_are_read_off_the_tensors(tiny_base: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    key = "base_model.model.model.layers.0.self_attn.o_proj"
    a, b = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(16, 4)).astype(np.float32)
    extra = {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b}
    adapter, _ = _tiny_adapter(tmp_path / "a", r=2, alpha=4.0, extra=extra, rank_pattern={"o_proj": 4})
    written = _gguf_tensors(export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base))
    alpha = read_gguf_lora(tmp_path / "a.gguf")["metadata"]["adapter.lora.alpha"]
    wa, wb = written["blk.0.attn_output.weight.lora_a"], written["blk.0.attn_output.weight.lora_b"]
    np.testing.assert_allclose(alpha / 4 * wb @ wa, 4.0 / 4 * b @ a, rtol=1e-5)  # llama.cpp: alpha/r
    adapter, _ = _tiny_adapter(tmp_path / "b", r=2, extra=extra)  # rank_pattern lost
    with pytest.raises(ConfigError, match="o_proj has rank 4 .* says 2"):
        export_gguf_lora(adapter, tmp_path / "b.gguf", base=tiny_base)


def test_f16_output_and_bfloat16_input(tiny_base: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    adapter, tensors = _tiny_adapter(tmp_path / "a")
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()}
    save_torch(bf16, str(adapter / "adapter_model.safetensors"))
    out = export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base, dtype="f16")
    assert read_gguf_lora(out)["dtypes"] == ["F16"]
    a = _gguf_tensors(out)["blk.0.attn_v.weight.lora_a"]
    assert a.dtype == np.float16
    expected = bf16[next(k for k in tensors if "layers.0.self_attn.v_proj.lora_A" in k)].float().numpy()
    np.testing.assert_array_equal(a.astype(np.float32), expected)  # bf16 values are exact in f16 here


def test_activated_lora_invocation_tokens_are_kept(tiny_base: Path, tmp_path: Path) -> None:
    adapter, _ = _tiny_adapter(tmp_path / "a", alora_invocation_tokens=[5, 7, 9])
    meta = read_gguf_lora(export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base))["metadata"]
    assert meta["adapter.alora.invocation_tokens"] == [5, 7, 9]


def test_the_one_header_reader_agrees_with_gguf_reader(tiny_base: Path, tmp_path: Path) -> None:
    # Export reads GGUF headers through agentkit.llm.gguf, like `agentkit models` and the backends.
    header = read_gguf(tiny_base, tensors=True, keep_array=None)
    reader = gguf.GGUFReader(tiny_base)
    assert header.metadata == {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert {n: t.shape for n, t in header.tensors.items()} == {t.name: tuple(t.shape.tolist()) for t in reader.tensors}
    assert {t.type_name for t in header.tensors.values()} == {t.tensor_type.name for t in reader.tensors}
    assert [t.offset for t in header.tensors.values()] == [int(t.data_offset) - reader.data_offset for t in reader.tensors]
    assert not hasattr(export, "_gguf_header") and not hasattr(export, "_open_gguf")


def test_a_base_with_more_layers_than_kept_array_items_keeps_its_head_counts(tmp_path: Path) -> None:
    # Per-layer head counts are arrays as long as the model is deep; they must survive the reader.
    path = tmp_path / "deep.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(80)
    writer.add_head_count([4] * 80)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(5000)])
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((16, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    base = export._read_base(path)
    assert base.n_head == [4] * 80 and base.n_head_kv == [4] * 80
    assert base.shapes == {"blk.0.attn_q.weight": (16, 16)}


# --- errors ------------------------------------------------------------------------------


def test_missing_adapter_folder_names_the_path(tiny_base: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-adapter"
    with pytest.raises(ModelNotFound, match="no-such-adapter.*save_pretrained"):
        export_gguf_lora(missing, tmp_path / "a.gguf", base=tiny_base)
    adapter, _ = _tiny_adapter(tmp_path / "a")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelNotFound, match="has no adapter_model.safetensors"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base)
    assert not (tmp_path / "a.gguf").exists()


def test_missing_base_names_the_path(tmp_path: Path) -> None:
    adapter, _ = _tiny_adapter(tmp_path / "a")
    with pytest.raises(ModelNotFound, match="nowhere.gguf"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tmp_path / "nowhere.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ModelLoadError, match="junk.gguf is not a readable GGUF"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tmp_path / "junk.gguf")


def test_lm_head_target_is_refused_with_the_allowed_modules(tiny_base: Path, tmp_path: Path) -> None:
    lm_head = {
        "base_model.model.lm_head.lora_A.weight": np.zeros((2, 16), np.float32),
        "base_model.model.lm_head.lora_B.weight": np.zeros((3, 2), np.float32),
    }
    adapter, _ = _tiny_adapter(tmp_path / "a", extra=lm_head)
    with pytest.raises(ConfigError, match=r"adapts lm_head.*target_modules must be among q_proj, k_proj"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base)
    embed = {"base_model.model.model.embed_tokens.lora_embedding_A": np.zeros((2, 3), np.float32)}
    adapter, _ = _tiny_adapter(tmp_path / "b", extra=embed)
    with pytest.raises(ConfigError, match="adapts embed_tokens"):
        export_gguf_lora(adapter, tmp_path / "b.gguf", base=tiny_base)


def test_dora_and_other_variants_are_refused(tiny_base: Path, tmp_path: Path) -> None:
    adapter, _ = _tiny_adapter(tmp_path / "a", use_dora=True)
    with pytest.raises(ConfigError, match="DoRA.*use_dora"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base)
    adapter, _ = _tiny_adapter(tmp_path / "b", bias="lora_only")
    with pytest.raises(ConfigError, match="bias='none'"):
        export_gguf_lora(adapter, tmp_path / "b.gguf", base=tiny_base)
    saved = {"base_model.model.lm_head.modules_to_save.default.weight": np.zeros((3, 16), np.float32)}
    adapter, _ = _tiny_adapter(tmp_path / "c", extra=saved)
    with pytest.raises(ConfigError, match="modules_to_save"):
        export_gguf_lora(adapter, tmp_path / "c.gguf", base=tiny_base)


def test_adapter_for_another_model_is_refused(tiny_base: Path, tmp_path: Path) -> None:
    adapter, _ = _tiny_adapter(tmp_path / "a", layers=(0, 5))
    with pytest.raises(ConfigError, match="adapts layer 5.*has 2 layers.*base="):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=tiny_base)
    wide = {
        "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight": np.zeros((2, 32), np.float32),
        "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight": np.zeros((16, 2), np.float32),
    }
    adapter, _ = _tiny_adapter(tmp_path / "b", modules=(), extra=wide)
    with pytest.raises(ConfigError, match=r"do not fit blk.0.attn_output.weight \(16 in, 16 out\)"):
        export_gguf_lora(adapter, tmp_path / "b.gguf", base=tiny_base)


def test_unknown_architecture_and_dtype_are_refused(tmp_path: Path) -> None:
    base = _tiny_base(tmp_path / "phi.gguf", arch="phi2")
    adapter, _ = _tiny_adapter(tmp_path / "a")
    with pytest.raises(ConfigError, match="architecture 'phi2'.*supported: llama"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=base)
    with pytest.raises(ConfigError, match="use 'f32' or 'f16'"):
        export_gguf_lora(adapter, tmp_path / "a.gguf", base=base, dtype="q8_0")


def test_read_gguf_lora_refuses_a_model(tiny_base: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a LoRA adapter"):
        read_gguf_lora(tiny_base)


# --- a real adapter on SmolLM2, through llama.cpp ----------------------------------------

TEXT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, hf_cache: Path) -> dict[str, Any]:
    """A PEFT LoRA on SmolLM2 with random non-zero B (so it changes outputs), saved and exported,
    plus transformers' logits for TEXT with and without it."""
    import torch

    from agentkit.llm.hf import load_hf_model
    from agentkit.testing import noisy_lora

    folder = tmp_path_factory.mktemp("lora")
    hf = load_hf_model(device="cpu", cache_dir=hf_cache)
    model = noisy_lora(hf.model, ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"], std=0.05, seed=1)
    # Without save_embedding_layers=False PEFT looks for the base's config.json on the Hub and
    # warns that it cannot (the base came from a GGUF file).
    model.save_pretrained(str(folder / "adapter"), save_embedding_layers=False)
    ids = hf.tokenizer(TEXT)["input_ids"]
    model.eval()
    with torch.no_grad():
        lora = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            base = model(torch.tensor([ids])).logits[0].numpy()
    out = export_gguf_lora(folder / "adapter", folder / "adapter.gguf")
    with pytest.MonkeyPatch.context() as mp:  # what an export that forgot the permutation writes
        mp.setattr(export, "_llama_permute", lambda rows, n_head: rows)
        unpermuted = export_gguf_lora(folder / "adapter", folder / "unpermuted.gguf")
    return {
        "folder": folder,
        "gguf": out,
        "unpermuted": unpermuted,
        "f16": export_gguf_lora(folder / "adapter", folder / "adapter-f16.gguf", dtype="f16"),
        "ids": ids,
        "hf_lora": lora,
        "hf_base": base,
    }


@pytest.fixture(scope="module")
def f32_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bundled GGUF with every weight dequantized to f32 (llama.cpp's own quantize tool);
    deleted afterwards, since pytest keeps the last runs' temporary folders (540 MB each)."""
    import llama_cpp

    from agentkit.llm.models import bundled_model_path

    out = tmp_path_factory.mktemp("f32") / "smollm2-f32.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    assert llama_cpp.llama_model_quantize(str(bundled_model_path()).encode(), str(out).encode(), params) == 0
    yield out
    out.unlink(missing_ok=True)


def _llama_logits(model: Path, ids: list[int], adapters: list[Path]) -> list[np.ndarray]:
    """llama.cpp's logits at every position of `ids`: first the base, then with each adapter."""
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(model), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    try:
        handles = [None] + [llama_cpp.llama_adapter_lora_init(llama.model, str(p).encode()) for p in adapters]
        assert all(handles[1:]), "llama.cpp refused an exported adapter"
        results = []
        for handle in handles:
            n = 0 if handle is None else 1
            array = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            assert llama_cpp.llama_set_adapters_lora(llama.ctx, array, n, scales) == 0
            llama.reset()
            llama.eval(ids)
            results.append(np.array(llama.scores[: len(ids)]))
        return results
    finally:
        llama.close()


@pytest.mark.real_model
def test_real_adapter_metadata(trained: dict[str, Any]) -> None:
    reader = gguf.GGUFReader(trained["gguf"])
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    shapes = {t.name: tuple(reversed(t.shape.tolist())) for t in reader.tensors}
    assert len(shapes) == 30 * 5 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == (8, 576)
    assert shapes["blk.0.attn_q.weight.lora_b"] == (576, 8)
    assert shapes["blk.29.attn_k.weight.lora_b"] == (192, 8)  # 3 key/value heads of 64
    assert shapes["blk.7.ffn_up.weight.lora_a"] == (8, 576)
    assert shapes["blk.7.ffn_up.weight.lora_b"] == (1536, 8)


@pytest.mark.real_model
def test_llama_cpp_with_the_adapter_matches_peft(trained: dict[str, Any], f32_base: Path) -> None:
    hf_lora, hf_base = trained["hf_lora"], trained["hf_base"]
    base, lora, lora_f16, unpermuted = _llama_logits(
        f32_base, trained["ids"], [trained["gguf"], trained["f16"], trained["unpermuted"]]
    )
    effect = np.abs(hf_lora - hf_base).max()  # ~5.4: the adapter matters
    assert effect > 2
    assert np.abs(base - hf_base).max() < 0.1  # the two engines agree on the base (~0.02)
    assert np.abs(lora - base).max() > 0.5 * effect  # llama.cpp applies the adapter...
    error = np.abs(lora - hf_lora).max()
    assert error < 0.03 * effect  # ...as PEFT does (~0.04, under 1% of its effect)
    assert (lora.argmax(-1) == hf_lora.argmax(-1)).all()
    assert np.abs(lora_f16 - hf_lora).max() < 0.03 * effect
    # Without the q/k permutation the result is off by ~2.2: this test would catch it.
    assert np.abs(unpermuted - hf_lora).max() > 10 * error


@pytest.mark.real_model
def test_adapter_on_the_quantized_bundled_model(trained: dict[str, Any]) -> None:
    from agentkit.llm.models import bundled_model_path

    base, lora = _llama_logits(bundled_model_path(), trained["ids"], [trained["gguf"]])
    # Q4_1 weights times 8-bit activations keep llama.cpp ~1.3 away from transformers' f32
    # arithmetic, but the adapted logits are still far closer to PEFT's than the base ones.
    assert np.abs(lora - trained["hf_lora"]).max() < 0.5 * np.abs(base - trained["hf_lora"]).max()
