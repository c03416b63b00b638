"""The ``sft:`` configuration section (light: pydantic only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from workflow_scripts.config.base import Name, Section

# Config keys the stage reads ({experiment}: the experiment being fine-tuned). Every key must exist literally
# in params.yaml for DVC.
PARAM_KEYS = ("sft",)

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant. Work through each request step by step and finish with a clear answer."
)


class InstructionSource(Section):
    type: Literal["alpaca", "flan", "generated_mcq"]
    path: str | None = Field(
        None, description="alpaca/flan: local JSON/JSONL/Parquet file or folder, or hub id"
    )
    split: str = Field("train", description="split of a hub dataset")
    max_examples: int | None = Field(None, gt=0, description="first N records of this source (None = all)")
    experiment: Name | None = Field(
        None,
        description="generated_mcq: whose generations (fixed so every model gets the same SFT data); "
        "None = the experiment being fine-tuned",
    )

    @model_validator(mode="after")
    def _path_when_needed(self) -> "InstructionSource":
        if self.type in ("alpaca", "flan") and not self.path:
            raise ValueError(f"source type {self.type!r} needs 'path' (local file/folder or hub dataset id)")
        if self.type == "generated_mcq" and self.path:
            raise ValueError(
                "generated_mcq reads the generations artifact given by --generations, not 'path'"
            )
        return self


class SFTConfig(Section):
    """Fine-tuning settings. The paper: 3 epochs, AdamW, LR 2e-5, weight decay 0; the rest is not stated."""

    sources: list[InstructionSource] = Field(
        default_factory=lambda: [InstructionSource(type="generated_mcq")], min_length=1
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, description="saved with the model; used again at evaluation"
    )
    chat_template: str | None = Field(
        None,
        description="Jinja chat template; None = the tokenizer's own, or the project's plain template "
        "when the tokenizer has none",
    )
    include_explanation: bool = Field(
        True, description="generated_mcq: answer with the step-by-step explanation"
    )
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="pairs kept out of training (by prompt hash)"
    )
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="after warmup")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(8, gt=0, description="sequences per micro-batch")
    gradient_accumulation: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=8, description="tokens per sequence; longer responses are cut")
    max_grad_norm: float | None = Field(1.0, gt=0)
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="compute dtype: bfloat16 runs forward and backward under autocast (GPUs); the weights, "
        "gradients and optimizer state stay float32 (master weights) and are saved in float32",
    )
    log_every: int = Field(10, gt=0, description="steps between log lines (metrics.csv gets every step)")
    seed: int = 0

    @model_validator(mode="after")
    def _one_generated_source(self) -> "SFTConfig":
        if sum(s.type == "generated_mcq" for s in self.sources) > 1:
            raise ValueError("at most one generated_mcq source (the stage takes one --generations artifact)")
        return self

    def generations_experiment(self, experiment: str) -> str | None:
        """The experiment whose generations the stage needs (None when no source is generated_mcq)."""
        for source in self.sources:
            if source.type == "generated_mcq":
                return source.experiment or experiment
        return None




def check_references(config: Any) -> None:
    """Raise ValueError when a generated_mcq source names an experiment without synthetic data (for a
    PipelineConfig validator; the stage checks the generations artifact's experiment at run time)."""
    for index, source in enumerate(config.sft.sources):
        if source.type == "generated_mcq" and source.experiment is not None:
            spec = config.experiments.get(source.experiment)
            if spec is None or spec.synthetic is None:
                raise ValueError(
                    f"sft.sources.{index}.experiment: {source.experiment!r} is not an experiment with "
                    f"synthetic data (known: {sorted(config.synthetic_experiments())})"
                )
