"""GPU-hours, disk and dollars of a configuration, from its grid and the ``plan`` section's assumptions.

Training FLOPs are 6 x parameters x tokens (forward and backward; attention's share left out, as in the usual
estimate), SFT the same over its tokens x epochs, evaluation 2 x parameters x tokens (forward only); GPU-hours =
FLOPs / (plan.mfu x plan.peak_tflops x 3600). Local LLMs (generator, judge) take their tokens at
plan.generation_tokens_per_gpu_second; API models use no GPU of ours and cost their list (or Batch API) price.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.model_configs import ModelArch, get_arch
from workflow_scripts.config.root import CHARS_PER_TOKEN
from workflow_scripts.llm.cost import Usage, cost_usd
from workflow_scripts.plan.requests import RequestLine

GIB = 1024 ** 3
FALLBACK_VOCAB = 50_304  # the paper's CodeGen-Mono tokenizer, padded


def parameters(arch: ModelArch, vocab_size: int | None = None) -> int:
    """Parameters of a Llama-style decoder (SwiGLU, RMSNorm, untied embeddings unless tied)."""
    vocab = arch.vocab_size or vocab_size or FALLBACK_VOCAB
    hidden, kv = arch.hidden_size, arch.head_dim * arch.groups
    attention = hidden * hidden * 2 + hidden * kv * 2
    mlp = 3 * hidden * arch.ffn_hidden_size
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if arch.tie_embeddings else 2)
    return arch.num_layers * per_layer + embeddings + hidden


def gpu_hours(flops: float, config: PipelineConfig) -> float:
    return flops / (config.plan.mfu * config.plan.peak_tflops * 1e12 * 3600)


@dataclass
class ExperimentCompute:
    experiment: str
    model: str
    parameters: int
    train_tokens: int
    sft_tokens: int
    gpu_hours: dict[str, float] = field(default_factory=dict)   # pretrain, sft, evaluate
    disk_gib: dict[str, float] = field(default_factory=dict)    # checkpoints, hf_models, tokens
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_tokens(config: PipelineConfig, experiment: str) -> tuple[int, str]:
    """Tokens the student is trained on, and which setting fixes them."""
    pretrain, mixes = config.pretrain_for(experiment), config.mixes
    seq = mixes.seq_length if mixes is not None else get_arch(pretrain.model).seq_length
    if pretrain.train_tokens is not None:
        return int(pretrain.train_tokens), "pretrain.train_tokens"
    if pretrain.train_steps is not None:
        return pretrain.train_steps * pretrain.global_batch_size * seq, "pretrain.train_steps"
    if mixes is not None and mixes.budget_tokens is not None:
        return int(mixes.budget_tokens), "the mixes' budget"
    real = int(mixes.real_tokens or 0) if mixes is not None else 0
    synthetic = config.experiments[experiment].mix.synthetic_effective_tokens
    return real + int(synthetic or 0), "mixes.real_tokens + the experiment's synthetic_effective_tokens"


def sft_tokens(config: PipelineConfig, generations: dict[str, int]) -> tuple[int, str]:
    """Tokens of one SFT epoch (plan.sft_tokens_per_epoch, else examples x max_length / 2)."""
    sft, plan = config.sft, config.plan
    if plan.sft_tokens_per_epoch is not None:
        return plan.sft_tokens_per_epoch, "plan.sft_tokens_per_epoch"
    examples = 0
    for source in sft.sources:
        experiment = getattr(source, "experiment", None)
        if experiment is not None and experiment in generations:
            examples += generations[experiment]
        else:
            examples += getattr(source, "max_examples", None) or plan.sft_examples or 100_000
    return examples * sft.max_length // 2, f"{examples:,} examples x sft.max_length {sft.max_length} / 2"


def experiment_compute(config: PipelineConfig, generations: dict[str, int], vocab: int | None
                       ) -> list[ExperimentCompute]:
    plan = config.plan
    sft_epoch, sft_how = sft_tokens(config, generations)
    rows = []
    trained = config.trained_experiments() if hasattr(config, "trained_experiments") else list(config.experiments)
    for name in trained:
        arch = get_arch(config.pretrain_for(name).model)
        n = parameters(arch, vocab)
        tokens, how = train_tokens(config, name)
        sft_total = int(sft_epoch * config.sft.epochs)
        hours = {"pretrain": gpu_hours(6 * n * tokens, config), "sft": gpu_hours(6 * n * sft_total, config),
                 "evaluate": 2 * gpu_hours(2 * n * plan.eval_tokens_per_model, config)}  # PT and SFT models
        disk = {"checkpoints": plan.checkpoints_kept * n * plan.bytes_per_checkpoint_parameter / GIB,
                "hf_models": 2 * n * _export_bytes(config) / GIB}
        rows.append(ExperimentCompute(name, arch.name, n, tokens, sft_total, hours, disk,
                                      [f"training tokens: {how}", f"SFT tokens per epoch: {sft_how}"]))
    return rows


def _export_bytes(config: PipelineConfig) -> int:
    return 2 if config.pretrain.export_dtype in ("bfloat16", "float16") else 4


def generation_gpu_hours(lines: list[RequestLine], config: PipelineConfig) -> dict[str, float]:
    """GPU-hours of the LLM requests still to send, for models we run ourselves (not API models)."""
    hours: dict[str, float] = {}
    for line in lines:
        if config.models[line.model].backend == "openai":
            continue
        tokens = line.to_send * (line.prompt_tokens_per_request + line.completion_tokens_per_request)
        hours[line.stage] = hours.get(line.stage, 0.0) + tokens / config.plan.generation_tokens_per_gpu_second / 3600
    return hours


def request_cost(line: RequestLine, config: PipelineConfig, *, to_send: bool) -> dict[str, float]:
    """Dollars at list and at batch price: of every request (to_send False) or of those still to send."""
    count = line.to_send if to_send else line.requests
    usage = Usage(requests=round(count), prompt_tokens=round(count * line.prompt_tokens_per_request),
                  completion_tokens=round(count * line.completion_tokens_per_request))
    price = config.models[line.model].price
    return {"list_usd": cost_usd(usage, price, "online"), "batch_usd": cost_usd(usage, price, "batch")}


def generation_disk_gib(lines: list[RequestLine], config: PipelineConfig) -> float:
    """Generations on disk: completion tokens x characters a token x bytes a character."""
    tokens = sum(line.completion_tokens for line in lines if line.stage == "generate")
    return tokens * CHARS_PER_TOKEN * config.plan.bytes_per_document_char / GIB


def token_disk_gib(config: PipelineConfig, unique_synthetic_tokens: float, vocab: int | None) -> float:
    """Tokenized corpora (.bin): real tokens once plus every synthetic set's unique tokens; 2 bytes a token
    below 65,536 entries of vocabulary, else 4."""
    width = 2 if (vocab or FALLBACK_VOCAB) < 65_536 else 4
    mixes = config.mixes
    real = int(mixes.real_tokens) if mixes is not None and mixes.real_tokens is not None else 0
    if not real and mixes is not None and mixes.budget_tokens is not None:
        real = int(mixes.budget_tokens)
    return (real + unique_synthetic_tokens) * width / GIB
