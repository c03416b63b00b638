"""Configuration of the plan command (the ``plan:`` section): the assumptions behind its estimates.

``python -m workflow_scripts.plan --configfile CONFIG`` prices a run before it starts. Counts of LLM requests
are exact (computed from the grid); tokens, GPU-hours and disk are estimates, and every assumption they rest on
is a key here, printed with the plan. No stage reads this section: changing it reruns nothing.
"""

from __future__ import annotations

from pydantic import Field

from workflow_scripts.config.base import Section


class CompletionTokens(Section):
    """Mean completion tokens per request, by role. Unset: measured from the cached answers of the planned
    requests when the cache holds any, else ``completion_fraction`` x the role's max_new_tokens."""

    generate: float | None = Field(None, gt=0, description="one synthetic document (paper: about 580 tokens)")
    cluster_agent: float | None = Field(None, gt=0, description="one Cluster-agent judge request")
    topic_extraction: float | None = Field(None, gt=0, description="one topic-extraction request")


class PlanConfig(Section):
    mfu: float = Field(0.4, gt=0, le=1, description="model FLOPs utilisation assumed for training, SFT and "
                       "evaluation (achieved / peak FLOP/s)")
    peak_tflops: float = Field(989.0, gt=0, description="peak dense TFLOP/s of one GPU (989: H100 SXM, bf16, "
                               "without sparsity)")
    generation_tokens_per_gpu_second: float = Field(
        2500.0, gt=0, description="prompt + completion tokens one GPU serves per second for local (vllm or "
        "transformers) generators and judges; API models use no GPU of ours")
    completion_tokens: CompletionTokens = CompletionTokens()
    completion_fraction: float = Field(0.5, gt=0, le=1, description="share of max_new_tokens a completion "
                                       "uses, when neither measured nor given")
    retry_rate: float = Field(0.0, ge=0, description="extra requests per planned request for answers that "
                              "fail validation (the retries' share, e.g. 0.05)")
    sample_requests: int = Field(2000, gt=0, description="rendered prompts tokenized per request group; the "
                                 "rest is extrapolated from their mean")
    cache_lookup_limit: int = Field(200_000, gt=0, description="request keys looked up in the cache per group; "
                                    "larger groups are sampled evenly and the hit share extrapolated")
    sft_tokens_per_epoch: int | None = Field(None, gt=0, description="tokens of one SFT epoch; unset: the "
                                             "number of instruction examples x sft.max_length / 2")
    sft_examples: int | None = Field(None, gt=0, description="instruction examples when the sources are "
                                     "external files (unset: their max_examples, or 100K)")
    eval_tokens_per_model: int = Field(30_000_000, gt=0, description="tokens one evaluation scores (every "
                                       "task, every answer option); the 8 paper tasks are about 30M")
    checkpoints_kept: int = Field(1, ge=1, description="pre-training checkpoints kept per experiment")
    bytes_per_checkpoint_parameter: float = Field(
        16.0, gt=0, description="bytes per parameter of a training checkpoint: bf16 weights (2) + fp32 master "
        "weights (4) + Adam moments (8) + gradients' share (2)")
    bytes_per_document_char: float = Field(
        1.2, gt=0, description="bytes on disk per character of a generated document (raw JSON and rendered "
        "text, compressed Parquet)")
