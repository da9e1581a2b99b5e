"""Train a LoRA adapter with PEFT on an instruction dataset (what `agentkit tune train` runs).

Each example is the agent's own prompt (`messages`, as the agent renders it) and the reply the
model should give (`output`); the loss is taken on the reply only. The loop is plain PyTorch:
AdamW, linear warm-up and decay, gradient clipping, a tqdm bar, and a resumable checkpoint
(adapter, optimiser, scheduler, position in the data, RNG state) every `checkpoint_every` steps,
at each epoch's end and on Ctrl-C. The data order of every epoch follows from the seed, so a
resumed run sees exactly the batches an uninterrupted one would have.

Runs on the CPU (float32) for a small model such as the bundled SmolLM2-135M, and on CUDA
(bfloat16) when torch sees a GPU.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentkit.errors import InputError
from agentkit.tune.settings import LoraSettings, TrainSettings

#: Label of a position the loss ignores (the prompt, padding).
IGNORE = -100
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainReport:
    adapter_dir: str
    device: str
    examples: int
    skipped_too_long: int
    steps: int
    epochs: float
    seconds: float
    seconds_per_epoch: float
    tokens: int
    #: Mean loss of each optimiser step, in order (resumed runs include the earlier steps).
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    interrupted: bool = False

    @property
    def first_loss(self) -> float:
        return _mean(self.losses[: max(1, len(self.losses) // 10)])

    @property
    def last_loss(self) -> float:
        return _mean(self.losses[-max(1, len(self.losses) // 10):])

    def summary(self) -> str:
        state = "interrupted (resume with --resume)" if self.interrupted else "done"
        resumed = f", resumed at step {self.resumed_from}" if self.resumed_from else ""
        skipped = f"; {self.skipped_too_long} longer than max_seq_tokens left out" if self.skipped_too_long else ""
        return (
            f"training {state}: {self.steps} steps over {self.examples} examples on {self.device}{resumed}{skipped}; "
            f"loss {self.first_loss:.3f} -> {self.last_loss:.3f}; {self.seconds:.0f} s "
            f"({self.seconds_per_epoch:.0f} s/epoch, {self.tokens / max(self.seconds, 1e-9):.0f} tokens/s); "
            f"adapter in {self.adapter_dir}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_loss"], data["last_loss"] = self.first_loss, self.last_loss
        return data


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# --- data ----------------------------------------------------------------------------------------


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """Training examples: JSON lines with `messages` (the prompt) and `output` (the reply); lines
    in the (instruction, input, output) layout alone are turned into a system + user prompt."""
    from agentkit.eval.metrics import read_jsonl

    def parse(row: dict[str, Any]) -> dict[str, Any]:
        if "output" not in row:
            raise KeyError("output")
        messages = row.get("messages")
        if not messages:
            messages = [{"role": "system", "content": str(row.get("instruction", ""))}] if row.get("instruction") else []
            messages.append({"role": "user", "content": str(row["input"])})
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "output": str(row["output"])}

    return read_jsonl(path, parse, 'a training line: {"messages": [...], "output": ...} or {"instruction", "input", "output"}')


def encode(tokenizer: Any, example: dict[str, Any]) -> Encoded:
    """Prompt through the chat template (as at inference), then the reply and end-of-turn."""
    prompt = tokenizer.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=True)
    if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    reply = tokenizer(example["output"].strip(), add_special_tokens=False)["input_ids"]
    reply = [*reply, tokenizer.eos_token_id]
    return Encoded(list(prompt) + reply, [IGNORE] * len(prompt) + reply)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _collate(items: Sequence[Encoded], pad_id: int, device: str) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def reply_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy of the reply tokens, computing logits only where they are needed.

    The prompt (instructions, evidence) is most of every example but carries no loss: asking the
    model for logits from the first reply position on (`logits_to_keep`) skips the vocabulary
    projection and softmax over the rest (SmolLM2: 49,152 x 576 per token), which saves time and
    most of the memory. Equal to the model's own `labels=` loss (checked in the tests).
    """
    import torch

    labels = batch["labels"]
    width = labels.shape[1]
    scored = (labels != IGNORE).int()
    # The first position whose next token is scored, over the whole (right-padded) batch.
    first = int(scored.argmax(dim=1)[scored.any(dim=1)].min()) - 1 if bool(scored.any()) else width - 1
    keep = width - max(first, 0)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits[:, :-1, :]
    targets = labels[:, width - keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
    )


# --- the model -----------------------------------------------------------------------------------


def lora_model(model: Any, lora: LoraSettings) -> Any:
    """`model` wrapped in a fresh, trainable PEFT LoRA."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise InputError(
            f"tune.lora.target_modules: the model has no module named {', '.join(map(repr, missing))}; "
            "for llama-family models use q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
        )
    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# --- training ------------------------------------------------------------------------------------


def train(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    lora: LoraSettings | None = None,
    settings: TrainSettings | None = None,
    device: str = "cpu",
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train a LoRA on `examples` and save it (PEFT layout) under `out/peft`.

    `model` is the base (from `agentkit.llm.hf.load_hf_model`); it is wrapped in PEFT here.
    `resume` continues from the newest checkpoint under `out/checkpoints`. `max_steps` stops early
    (tests, quick trials). Ctrl-C saves a checkpoint first, then raises KeyboardInterrupt.
    """
    import torch

    lora = lora or LoraSettings()
    s = settings or TrainSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)

    encoded, skipped = [], 0
    for ex in examples:
        e = encode(tokenizer, ex)
        if len(e.input_ids) > s.max_seq_tokens:
            skipped += 1
            continue
        encoded.append(e)
    if not encoded:
        raise InputError(
            f"no training example fits tune.train.max_seq_tokens={s.max_seq_tokens} "
            f"({skipped} skipped as too long, {len(examples)} given); raise it or show fewer passages"
        )

    peft_model = lora_model(model, lora)
    peft_model.to(device)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    per_epoch = math.ceil(len(encoded) / s.batch_size)
    steps_per_epoch = math.ceil(per_epoch / s.grad_accum)
    total = max(1, math.ceil(steps_per_epoch * s.epochs))
    if max_steps is not None:
        total = min(total, max_steps)
    warmup = int(total * s.warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = {"step": 0, "batch": 0, "losses": [], "tokens": 0, "seconds": 0.0}
    resumed_from = None
    if resume:
        latest = latest_checkpoint(out)
        if latest is not None:
            state = _load_checkpoint(latest, peft_model, optimizer, scheduler)
            resumed_from = int(state["step"])

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=int(state["step"]), desc="train", unit="step", dynamic_ncols=True)
    started = time.perf_counter() - float(state["seconds"])
    interrupted = False
    try:
        while state["step"] < total:
            # `batch` counts micro-batches from the start of training; the epoch and the place in
            # it follow from it, so a resumed run continues with the very next batch.
            epoch, position = divmod(int(state["batch"]), per_epoch)
            batches = _batches(len(encoded), s.batch_size, s.seed, epoch)
            group: list[float] = []
            optimizer.zero_grad(set_to_none=True)
            for micro in range(s.grad_accum):
                index = position + micro
                if index >= per_epoch:
                    break
                batch = _collate([encoded[i] for i in batches[index]], pad_id, device)
                loss = reply_loss(peft_model, batch)
                (loss / s.grad_accum).backward()
                group.append(float(loss.detach()))
                state["tokens"] = int(state["tokens"]) + int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            state["batch"] = int(state["batch"]) + len(group)
            state["step"] = int(state["step"]) + 1
            step_loss = _mean(group)
            state["losses"].append(step_loss)  # type: ignore[union-attr]
            if on_step is not None:
                on_step(int(state["step"]), step_loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", epoch=f"{state['batch'] / per_epoch:.2f}")
            at_epoch_end = int(state["batch"]) % per_epoch == 0
            if (s.checkpoint_every and int(state["step"]) % s.checkpoint_every == 0) or at_epoch_end:
                state["seconds"] = time.perf_counter() - started
                _save_checkpoint(out, peft_model, optimizer, scheduler, state, s.keep_checkpoints)
    except KeyboardInterrupt:
        interrupted = True
        state["seconds"] = time.perf_counter() - started
        _save_checkpoint(out, peft_model, optimizer, scheduler, state, s.keep_checkpoints)
        raise
    finally:
        if bar is not None:
            bar.close()
        if not interrupted:
            peft_model.save_pretrained(str(out / "peft"), save_embedding_layers=False)
    seconds = time.perf_counter() - started
    epochs = int(state["batch"]) / per_epoch
    report = TrainReport(
        adapter_dir=str(out / "peft"),
        device=device,
        examples=len(encoded),
        skipped_too_long=skipped,
        steps=int(state["step"]),
        epochs=epochs,
        seconds=seconds,
        seconds_per_epoch=seconds / max(epochs, 1e-9),
        tokens=int(state["tokens"]),
        losses=[float(x) for x in state["losses"]],  # type: ignore[union-attr]
        resumed_from=resumed_from,
    )
    (out / "train_report.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


# --- checkpoints ---------------------------------------------------------------------------------


def latest_checkpoint(out: str | Path) -> Path | None:
    folder = Path(out) / CHECKPOINTS
    found = sorted(
        (p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    return found[-1] if found else None


def _save_checkpoint(out: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], keep: int) -> Path:
    import torch

    folder = out / CHECKPOINTS / f"step-{int(state['step'])}"
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # save_embedding_layers=False: PEFT would look up the base's config on the Hub otherwise.
    model.save_pretrained(str(tmp), save_embedding_layers=False)
    torch.save(
        {
            "state": state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a checkpoint is complete or absent, never half-written
    done = sorted(
        (p for p in (out / CHECKPOINTS).glob("step-*") if p.is_dir() and not p.name.endswith(".partial")),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    set_peft_model_state_dict(model, load_file(str(weights)))
    saved = torch.load(folder / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return dict(saved["state"])
