"""Configuration of the evaluation stages (the ``evaluation:`` section), light: pydantic only.

Three consumers read different parts, so a change reruns only what it affects:

- ``eval_tasks`` (builds local task data from the held-out real corpus) reads ``local_tasks`` + ``seed``;
- ``evaluate`` (one lm-eval run per model) reads the run settings (tasks, limit, batch size, prompt);
- ``report`` reads ``scoring`` (which metric of each task is reported, and what enters the mean).

It is the ``evaluation`` section of ``workflow_scripts.config.PipelineConfig``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from workflow_scripts.config.base import Name, Section

# The paper's protocol: zero-shot, acc_norm for ARC-Challenge and HellaSwag, acc for the others.
# lm-eval 0.4.13's names of the paper's tasks (its SIQA is `social_iqa`; there is no task `siqa`)
PAPER_TASKS = ("arc_challenge", "arc_easy", "boolq", "social_iqa", "winogrande", "piqa", "copa", "hellaswag")
PAPER_METRICS = {
    task: ("acc_norm" if task in ("arc_challenge", "hellaswag") else "acc") for task in PAPER_TASKS
}

# Config keys each stage reads (dotted; every key must exist literally in params.yaml for DVC).
PARAM_KEYS_TASKS = ("evaluation.local_tasks", "evaluation.seed")
PARAM_KEYS_EVALUATE = (
    "evaluation.tasks",
    "evaluation.include_paths",
    "evaluation.limit",
    "evaluation.batch_size",
    "evaluation.bootstrap_iters",
    "evaluation.log_samples",
    "evaluation.dtype",
    "evaluation.system_prompt",
    "evaluation.sft_chat_template",
    "evaluation.seed",
)
PARAM_KEYS_SCORING = ("evaluation.tasks", "evaluation.scoring")


class PerplexityTask(Section):
    """lm-eval ``loglikelihood_rolling`` over held-out documents: word/byte perplexity and bits per byte
    (lower is better)."""

    type: Literal["perplexity"]
    documents: int = Field(100, gt=0, description="held-out documents used (fewer if the corpus has fewer)")
    kinds: list[Literal["web", "code", "math"]] = Field([], description="only these corpus kinds; [] = all")
    max_chars: int = Field(2000, gt=0, description="characters kept per document (cut at a space)")


class ContinuationTask(Section):
    """Multiple choice: the context is the start of a held-out document; the choices are its true
    continuation and the continuations of other held-out documents at the same cut rule (acc / acc_norm;
    chance = 1 / choices). A model that learned the corpus's language picks the coherent continuation."""

    type: Literal["continuation"]
    questions: int = Field(200, gt=0, description="questions (fewer if the held-out corpus is too small)")
    kinds: list[Literal["web", "code", "math"]] = Field([], description="only these corpus kinds; [] = all")
    context_chars: int = Field(300, gt=0, description="characters of context (cut at a space)")
    continuation_chars: int = Field(150, gt=0, description="characters per choice (cut at a space)")
    choices: int = Field(4, ge=2, le=26, description="options per question, one of them true")
    windows_per_document: int = Field(
        1, ge=1, description="questions cut from consecutive windows of one document (small held-out sets)"
    )
    same_kind_distractors: bool = Field(
        True, description="draw the wrong choices from documents of the same kind where possible"
    )


LocalTaskSpec = Annotated[PerplexityTask | ContinuationTask, Field(discriminator="type")]


class TaskScoring(Section):
    """Which number of an lm-eval task is reported and whether it enters the headline mean."""

    metric: str = Field("acc", description="lm-eval metric key, e.g. acc, acc_norm, word_perplexity")
    in_mean: bool = Field(True, description="part of the unweighted mean (the paper's headline)")
    higher_is_better: bool = True
    percent: bool = Field(True, description="show as a percentage (accuracies); False for perplexities")


def _default_local_tasks() -> dict[str, PerplexityTask | ContinuationTask]:
    return {
        "heldout_continuation": ContinuationTask(type="continuation"),
        "heldout_perplexity": PerplexityTask(type="perplexity"),
    }


def _default_scoring() -> dict[str, TaskScoring]:
    return {
        # acc_norm: the choices differ in token count, and unnormalised log-likelihood favours the shortest
        "heldout_continuation": TaskScoring(metric="acc_norm"),
        "heldout_perplexity": TaskScoring(
            metric="word_perplexity", in_mean=False, higher_is_better=False, percent=False
        ),
    }


class EvaluationConfig(Section):
    tasks: list[str] = Field(
        ["heldout_continuation", "heldout_perplexity"],
        min_length=1,
        description="lm-eval task names: built-in ones (the paper's 8 need the hub or local copies given by "
        "include_paths) and/or names defined in local_tasks",
    )
    local_tasks: dict[Name, LocalTaskSpec] = Field(default_factory=_default_local_tasks)
    scoring: dict[str, TaskScoring] = Field(
        default_factory=_default_scoring, description="one entry per task in 'tasks'"
    )
    include_paths: list[str] = Field(
        [], description="extra folders of lm-eval task YAMLs (e.g. the paper's tasks over local data copies)"
    )
    limit: int | None = Field(None, gt=0, description="documents per task (None = all); for smoke runs only")
    batch_size: int | Literal["auto"] = Field(8, description="lm-eval batch size")
    bootstrap_iters: int = Field(1000, ge=0, description="lm-eval bootstrap samples for stderr (0 = none)")
    log_samples: bool = Field(False, description="also keep every request and answer (samples/<task>.jsonl)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    system_prompt: str | None = Field(
        None, description="system prompt for SFT models; None = the one saved with the model in fine-tuning"
    )
    sft_chat_template: bool = Field(True, description="evaluate SFT models through their chat template")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> "EvaluationConfig":
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be unique, got {self.tasks}")
        missing = [t for t in self.tasks if t not in self.scoring]
        if missing:
            raise ValueError(f"scoring has no entry for tasks {missing}: say which metric each task reports")
        extra = [t for t in self.scoring if t not in self.tasks]
        if extra:
            raise ValueError(f"scoring names tasks {extra} that are not in 'tasks'")
        if not any(self.scoring[t].in_mean for t in self.tasks):
            raise ValueError("at least one task must have in_mean: true (the headline mean)")
        return self

    def mean_tasks(self) -> list[str]:
        return [t for t in self.tasks if self.scoring[t].in_mean]


def paper_evaluation() -> EvaluationConfig:
    """The paper's protocol as a config value (what configs/paper.yaml spells out)."""
    return EvaluationConfig(
        tasks=list(PAPER_TASKS),
        local_tasks={},
        scoring={t: TaskScoring(metric=m) for t, m in PAPER_METRICS.items()},
    )
