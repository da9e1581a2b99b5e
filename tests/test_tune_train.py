"""`agentkit tune` training: a few LoRA steps on the bundled SmolLM2 lower the loss; Ctrl-C leaves
a checkpoint that a resumed run continues from exactly; bad settings are clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Like pytest.importorskip("peft"), without importing peft (and torch) while collecting: ~10 s.
if importlib.util.find_spec("peft") is None:
    pytest.skip("agentkit tune needs the tune extra: pip install 'agentkit[tune]'", allow_module_level=True)

from agentkit.errors import InputError  # noqa: E402
from agentkit.tune.settings import LoraSettings, TrainSettings  # noqa: E402
from agentkit.tune.train import IGNORE, encode, latest_checkpoint, read_examples, train  # noqa: E402

pytestmark = pytest.mark.real_model


def _examples(n: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        out.append({
            "messages": [
                {"role": "system", "content": "Answer from the numbered sources and cite them."},
                {"role": "user", "content": f"Sources:\n[1] Zorbs\nThe zorb count of crate {i} is {i * 7 + 3}.\n\nQuestion: What is the zorb count of crate {i}?"},
            ],
            "output": f"Reasoning: Source [1] gives the count.\nAnswer: The zorb count of crate {i} is {i * 7 + 3} [1].",
        })
    return out


@pytest.fixture
def cache(hf_cache: Path) -> Path:
    return hf_cache


def _base(cache: Path):
    from agentkit.llm.hf import load_hf_model

    return load_hf_model(cache_dir=cache, device="cpu")


FAST = TrainSettings(learning_rate=2e-3, batch_size=4, epochs=10, checkpoint_every=2, warmup_ratio=0.0)
LORA = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def test_encode_masks_the_prompt_and_ends_the_turn(cache: Path) -> None:
    hf = _base(cache)
    e = encode(hf.tokenizer, _examples(1)[0])
    reply = [t for t, lab in zip(e.input_ids, e.labels, strict=True) if lab != IGNORE]
    assert e.labels[0] == IGNORE and reply[-1] == hf.tokenizer.eos_token_id
    assert hf.tokenizer.decode(reply[:-1]).startswith("Reasoning: Source [1]")
    # The prompt part is exactly what the chat template renders for inference.
    prompt = hf.tokenizer.apply_chat_template(_examples(1)[0]["messages"], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    assert e.input_ids[: len(prompt)] == list(prompt)


def test_reply_loss_equals_the_models_own_loss(cache: Path) -> None:
    import torch

    from agentkit.tune.train import _collate, reply_loss

    hf = _base(cache)
    examples = _examples(3)
    examples[1]["output"] += " A longer reply, so that the rows differ in length."
    batch = _collate([encode(hf.tokenizer, e) for e in examples], hf.tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        assert float(reply_loss(hf.model, batch)) == pytest.approx(float(hf.model(**batch).loss), rel=1e-5)


def test_a_few_steps_lower_the_loss_and_save_a_peft_adapter(cache: Path, tmp_path: Path) -> None:
    hf = _base(cache)
    report = train(hf.model, hf.tokenizer, _examples(), tmp_path, lora=LORA, settings=FAST, max_steps=6, progress=False)
    assert report.steps == 6 and len(report.losses) == 6
    assert report.losses[-1] < report.losses[0] * 0.7, report.losses
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "train_report.json").is_file()
    # Checkpoints every 2 steps, only the newest two kept.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-6"]


def test_an_interrupted_run_resumes_where_it_stopped(cache: Path, tmp_path: Path) -> None:
    straight = train(_base(cache).model, _base(cache).tokenizer, _examples(), tmp_path / "a",
                     lora=LORA, settings=FAST, max_steps=4, progress=False)

    def stop_after_two(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    hf = _base(cache)
    with pytest.raises(KeyboardInterrupt):
        train(hf.model, hf.tokenizer, _examples(), tmp_path / "b", lora=LORA, settings=FAST,
              max_steps=4, progress=False, on_step=stop_after_two)
    assert latest_checkpoint(tmp_path / "b").name == "step-2"
    hf = _base(cache)
    resumed = train(hf.model, hf.tokenizer, _examples(), tmp_path / "b", lora=LORA, settings=FAST,
                    max_steps=4, progress=False, resume=True)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    # Same batches, same optimiser state: the resumed run's losses are the uninterrupted run's.
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-3)


def test_bad_target_modules_and_too_long_examples_are_clear_errors(cache: Path, tmp_path: Path) -> None:
    hf = _base(cache)
    with pytest.raises(InputError, match="no module named 'attention'"):
        train(hf.model, hf.tokenizer, _examples(2), tmp_path, lora=LoraSettings(target_modules=["attention"]),
              settings=FAST, max_steps=1, progress=False)
    with pytest.raises(InputError, match="max_seq_tokens=32"):
        train(hf.model, hf.tokenizer, _examples(2), tmp_path, lora=LORA,
              settings=TrainSettings(max_seq_tokens=32), max_steps=1, progress=False)


def test_read_examples_accepts_messages_or_alpaca_lines(tmp_path: Path) -> None:
    file = tmp_path / "train.jsonl"
    file.write_text(
        '{"messages": [{"role": "user", "content": "q"}], "output": "a"}\n'
        '{"instruction": "Be brief.", "input": "q2", "output": "a2"}\n',
        encoding="utf-8",
    )
    rows = read_examples(file)
    assert rows[1]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q2"}]
    file.write_text('{"input": "q"}\n', encoding="utf-8")
    with pytest.raises(Exception, match=r"train\.jsonl:1"):
        read_examples(file)
