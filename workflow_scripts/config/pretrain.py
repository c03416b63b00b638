"""Configuration of pre-training and conversion (the ``pretrain:`` section), light: pydantic only.

The paper (PAPER.md section 5) states AdamW (0.9, 0.95), weight decay 0.1, peak LR 3e-4 and a linear
warmup then linear decay, but neither the warmup length nor the final LR: both are values here
(``lr_warmup_fraction`` / ``lr_warmup_steps``, ``min_lr``). Gradient clipping and the seed are not
stated either (``clip_grad``, ``seed``).

It is the ``pretrain`` section of ``workflow_scripts.config.PipelineConfig``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from workflow_scripts.config.base import Section
from workflow_scripts.config.model_configs import MODELS

# Config keys each stage reads (dotted; every key must exist literally in params.yaml for DVC).
PARAM_KEYS = tuple(
    f"pretrain.{key}" for key in (
        "model", "train_steps", "train_tokens", "micro_batch_size", "global_batch_size",
        "lr", "min_lr", "lr_warmup_steps", "lr_warmup_fraction", "lr_decay_style",
        "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "clip_grad", "eod_mask_loss",
        "checkpoint_interval", "keep_checkpoints", "seed", "precision",
        "tensor_parallel_size", "pipeline_parallel_size", "distributed_optimizer", "transformer_engine",
        "peak_tflops",
    )
)
PARAM_KEYS_CONVERT = ("pretrain.export_dtype",)
# Read by the stage but tracked by no job: when to checkpoint changes nothing a resumed run computes, so
# changing it must neither rerun a finished job nor restart one in progress.
UNTRACKED_KEYS = ("pretrain.checkpoint_every_minutes",)


class PretrainConfig(Section):
    """Megatron-core pre-training of one model per mix, then conversion to Hugging Face Llama."""

    model: str = Field("tiny", description="a named architecture of pretrain/model_configs.py")
    train_steps: int | None = Field(None, gt=0, description="optimizer steps; None = from train_tokens")
    train_tokens: int | None = Field(
        None, gt=0, description="token budget (rounded up to whole steps); None with train_steps None = the "
        "mix's total_tokens")
    micro_batch_size: int = Field(4, gt=0, description="sequences per forward pass on one data-parallel rank")
    global_batch_size: int = Field(
        8, gt=0, description="sequences per optimizer step = micro batch x gradient accumulation x data "
        "parallel size (paper: 256 for 350M, 128 for 1.4B)")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (paper: 3e-4)")
    min_lr: float = Field(3e-5, ge=0, description="final learning rate after linear decay (paper: not stated)")
    lr_warmup_steps: int | None = Field(None, ge=0, description="warmup steps; None = lr_warmup_fraction")
    lr_warmup_fraction: float = Field(0.01, ge=0, lt=1, description="warmup as a share of the steps")
    lr_decay_style: Literal["linear", "cosine", "constant"] = Field("linear", description="paper: linear")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay; norms are not decayed")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    clip_grad: float = Field(1.0, ge=0, description="global gradient-norm clipping (0 = off)")
    eod_mask_loss: bool = Field(False, description="exclude the end-of-document token from the loss")
    checkpoint_interval: int = Field(500, ge=0, description="steps between checkpoints (0 = only the final)")
    keep_checkpoints: int = Field(2, gt=0, description="in-progress checkpoints kept in the work directory")
    checkpoint_every_minutes: float | None = Field(
        60, gt=0, description="also checkpoint when this much wall-clock time has passed since the last one "
        "(None = steps only); SIGTERM (SLURM time limit, preemption) always checkpoints before stopping")
    seed: int = Field(1234, description="model initialisation, data order and dropout")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 on GPUs that support it, fp32 on CPU")
    tensor_parallel_size: int = Field(1, gt=0)
    pipeline_parallel_size: int = Field(1, gt=0)
    distributed_optimizer: bool = Field(
        False, description="GPU: shard optimizer state over data-parallel ranks (like the paper's ZeRO-2)")
    transformer_engine: bool = Field(True, description="GPU: use the Transformer Engine layer spec if installed")
    peak_tflops: float | None = Field(
        None, gt=0, description="per-GPU dense bf16 peak for MFU; None = known value for the device")
    export_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the converted Hugging Face weights")

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model config {name!r} (known: {sorted(MODELS)})")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> "PretrainConfig":
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                             f"micro_batch_size ({self.micro_batch_size})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.train_steps is not None and self.train_tokens is not None:
            raise ValueError("give train_steps or train_tokens, not both")
        arch = MODELS[self.model]
        if arch.num_attention_heads % self.tensor_parallel_size:
            raise ValueError(f"tensor_parallel_size {self.tensor_parallel_size} must divide the "
                             f"{arch.num_attention_heads} attention heads of {self.model!r}")
        if arch.num_layers % self.pipeline_parallel_size:
            raise ValueError(f"pipeline_parallel_size {self.pipeline_parallel_size} must divide the "
                             f"{arch.num_layers} layers of {self.model!r}")
        return self
