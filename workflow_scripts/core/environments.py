"""The software environment of each job: the envs/*.yaml file a rule's ``conda:`` names (``snakemake --sdm conda``).

Most stages always need the same libraries. The LLM stages (topic extraction, generate, diversity) run the models
the configuration names, so their environment follows the models' backends, job by job: vLLM lives in its own
environment (it pins its own torch and transformers), a job that asks for GPUs needs a CUDA build of torch (the
training environment has one and the project's full dependencies), and the rest runs in the CPU environment (a CPU
build of torch; API models need nothing more).
"""

from __future__ import annotations

from typing import Callable

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.generate import extraction_model

CPU = "envs/cpu.yaml"
VLLM = "envs/gpu-generation.yaml"
TRAINING = "envs/gpu-training.yaml"

FIXED: dict[str, str] = {
    "real_corpus": CPU, "local_models": CPU, "topics": CPU, "sample_topics": CPU, "tokenize_real": CPU,
    "tokenize_synthetic": CPU, "external_synthetic": CPU, "mixed_synthetic": CPU, "mix": CPU, "pretrain": TRAINING, "convert": TRAINING, "sft": TRAINING,
    "eval_tasks": CPU, "evaluate_pt": TRAINING, "evaluate_sft": TRAINING, "diversity_summary": CPU, "report": CPU,
}


def _generator(config: PipelineConfig, experiment: str | None) -> list[str]:
    synthetic = config.experiments[experiment].synthetic if experiment in config.experiments else None
    return [synthetic.generator] if synthetic is not None else []


# The registry models each job of an LLM stage runs.
LLM_MODELS: dict[str, Callable[[PipelineConfig, str | None], list[str]]] = {
    "topic_extraction": lambda config, experiment: [extraction_model(config)],
    "generate": _generator,
    "diversity": lambda config, experiment: list((config.diversity_for(experiment) if experiment in config.experiments
                                                  else config.diversity).model_names().values()),
}


def conda_env(config: PipelineConfig, stage: str, experiment: str | None = None) -> str:
    """The environment file (relative to the repository) that holds the backend of the stage's job."""
    if stage in FIXED:
        return FIXED[stage]
    if stage not in LLM_MODELS:
        raise KeyError(f"no environment is defined for stage {stage!r}: add it to {__name__}")
    models = LLM_MODELS[stage](config, experiment)
    if any(config.models[name].backend == "vllm" for name in models if name in config.models):
        return VLLM
    if config.resources.for_stage(stage).gpus:
        return TRAINING
    return CPU
