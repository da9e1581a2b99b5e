"""The `tune:` section of a config: how `agentkit tune` builds its data and trains an adapter.

Pure pydantic, no torch: configs validate without the `tune` extra installed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    """The adapter's shape (PEFT's LoraConfig)."""

    rank: int = Field(8, ge=1, le=512)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    #: Hugging Face module names; llama.cpp takes q/k/v/o_proj and gate/up/down_proj.
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainSettings(_Strict):
    learning_rate: float = Field(5e-4, gt=0, le=1.0)
    epochs: float = Field(2.0, gt=0)
    #: Examples per optimiser step is batch_size x grad_accum.
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    #: Longer examples are cut from the left of the prompt (the answer is always kept).
    max_seq_tokens: int = Field(1024, ge=32)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    #: Save a resumable checkpoint every this many optimiser steps (0 = only at epoch ends).
    checkpoint_every: int = Field(50, ge=0)
    #: Checkpoints kept on disk (the newest).
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    #: auto = CUDA when torch sees a GPU, else the CPU.
    device: str = "auto"
    #: auto = float32 on the CPU, bfloat16 (or float16) on a GPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class DataSettings(_Strict):
    #: Passages shown per example (the gold one plus distractors).
    passages: int = Field(4, ge=1, le=20)
    #: Share of examples that show only distractors and teach the refusal.
    refusal_rate: float = Field(0.1, ge=0.0, le=0.5)
    #: Share of questions held out for `agentkit eval qa` (never trained on).
    heldout: float = Field(0.1, ge=0.0, lt=1.0)
    #: Questions the model writes per passage when no labelled file is given.
    per_passage: int = Field(1, ge=1, le=10)
    #: Passages sampled for question generation (None = all).
    max_passages: int | None = Field(200, ge=1)
    seed: int = 0


class TuneSettings(_Strict):
    #: The base model to adapt: a GGUF file or a Hugging Face folder; None = llm.model_path,
    #: else the bundled SmolLM2-135M-Instruct.
    base_model: str | None = None
    #: Where adapters are written, relative to the config file's folder (data_dir for the default).
    output_dir: str = "adapters"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    data: DataSettings = Field(default_factory=DataSettings)
