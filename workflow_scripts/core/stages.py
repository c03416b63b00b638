"""The table of the pipeline's stages: the one definition of its jobs.

Each row names a stage's module, its artifact directory, the config keys it reads, its code, its upstream
artifacts and its external files. The planner (:mod:`workflow_scripts.pipeline`) turns rows into jobs for
Snakemake and DVC; a stage process computes its own identity from its row (:mod:`workflow_scripts.core.identity`).
This module sits on the ground floor: it imports the configuration and nothing of any stage.
"""

from __future__ import annotations

import glob
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.root import BUILTIN_MODELS
from workflow_scripts.config.diversity import resolve_param_keys as diversity_param_keys
from workflow_scripts.config.evaluate import PARAM_KEYS_EVALUATE, PARAM_KEYS_TASKS
from workflow_scripts.config.generate import extraction_model, topic_extraction_param_keys
from workflow_scripts.config.generate import resolve_param_keys as generation_param_keys
from workflow_scripts.config.pretrain import PARAM_KEYS as PRETRAIN_PARAM_KEYS
from workflow_scripts.config.pretrain import PARAM_KEYS_CONVERT
from workflow_scripts.config.report import PARAM_KEYS as REPORT_PARAM_KEYS
from workflow_scripts.config.sft import PARAM_KEYS as SFT_PARAM_KEYS
from workflow_scripts.core import inputs

PACKAGE = Path(__file__).resolve().parent.parent
REPO = PACKAGE.parent


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline: one command, one artifact directory, optionally one job per experiment."""

    name: str
    module: str                       # run as ``python -m <module> <subcommand>``
    out: str                          # artifact directory under data_root; may contain {experiment}
    params: tuple[str, ...] | Callable[[PipelineConfig, str | None], tuple[str, ...]]
    # ^ dotted config keys the stage reads; may contain {experiment}, or a function giving them
    code: tuple[str, ...]             # source files or packages, relative to the repository
    subcommand: str = ""
    inputs: Callable[[PipelineConfig, str | None], dict[str, str]] = lambda c, e: {}
    experiments: Callable[[PipelineConfig], list[str]] | None = None   # None: one shared job
    externals: Callable[[PipelineConfig], list[str]] = lambda c: []    # files read from outside data_root
    environment: Callable[[PipelineConfig], dict[str, str]] = lambda c: {}  # facts outside config and files
    enabled: Callable[[PipelineConfig], bool] = lambda c: True
    options: Callable[[PipelineConfig], dict[str, str]] = lambda c: {}  # arguments that are not dependencies
    distributed: bool = False         # launched with torchrun when its resources ask for several processes

    @property
    def per_experiment(self) -> bool:
        return self.experiments is not None


def artifact(config: PipelineConfig, stage: str, experiment: str | None = None) -> str:
    path = f"{config.data_root}/{STAGES[stage].out}"
    return path.format(experiment=experiment) if experiment is not None else path


def builtin_topics_path() -> Path:
    return PACKAGE / "resources" / "topics.json"


def relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


# --- what the rows compute from the configuration ---------------------------------------------------------


def _topic_files(config: PipelineConfig) -> list[str]:
    return [relative(builtin_topics_path()) if s == "builtin" else s for s in config.topics.sources]


def _corpus_files(config: PipelineConfig) -> list[str]:
    return sorted({f for s in config.real_corpus.sources for p in s.paths for f in glob.glob(p, recursive=True)})


def _persona_files(config: PipelineConfig) -> list[str]:
    file = inputs.personas_file(config)
    return [] if file is None else [file.as_posix()]


def _instruction_files(config: PipelineConfig) -> list[str]:
    return [path.as_posix() for path in inputs.local_instruction_paths(config)]


def _task_folders(config: PipelineConfig) -> list[str]:
    return list(config.evaluation.include_paths)


def _stdlib_version(config: PipelineConfig) -> dict[str, str]:
    uses_stdlib = any(s.type.startswith("python_stdlib") for s in config.real_corpus.sources)
    return {"python": platform.python_version()} if uses_stdlib else {}


def _builtin_packages(config: PipelineConfig) -> dict[str, str]:
    """The versions of the packages that ship the builtin models the config uses (their weights' identity)."""
    from importlib import metadata

    versions = {}
    for name in config.builtin_models():
        try:
            versions[name] = metadata.version(BUILTIN_MODELS[name])
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _synthetic(config: PipelineConfig) -> list[str]:
    return config.synthetic_experiments()


def _generated(config: PipelineConfig) -> list[str]:
    return config.generated_experiments()


def _external(config: PipelineConfig) -> list[str]:
    return [name for name, exp in config.experiments.items() if exp.external is not None]


def _mixed(config: PipelineConfig) -> list[str]:
    return [name for name, exp in config.experiments.items() if exp.mixed is not None]


def synthetic_set_artifact(config: PipelineConfig, experiment: str) -> str:
    """The generations-format artifact of an experiment's own synthetic set: generated, external or mixed."""
    spec = config.experiments[experiment]
    if spec.external is not None:
        return artifact(config, "external_synthetic", experiment)
    if spec.mixed is not None:
        return artifact(config, "mixed_synthetic", experiment)
    return artifact(config, "generate", experiment)


def external_synthetic_files(config: PipelineConfig, experiment: str) -> list[str]:
    """The files an external synthetic corpus's globs match now (sorted)."""
    spec = config.experiments[experiment].external
    return sorted({f for p in spec.paths for f in glob.glob(p, recursive=True)}) if spec else []


def _external_synthetic_files(config: PipelineConfig) -> list[str]:
    return sorted({f for name in _external(config) for f in external_synthetic_files(config, name)})


def _pretrain_params(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    spec = config.experiments[experiment] if experiment in config.experiments else None
    extra = [f"experiments.{{experiment}}.{key}" for key in ("pretrain", "seed")
             if spec is not None and getattr(spec, key) is not None]
    return (*PRETRAIN_PARAM_KEYS, *extra)


def _sft_params(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    spec = config.experiments[experiment] if experiment in config.experiments else None
    return (*SFT_PARAM_KEYS, *(("experiments.{experiment}.seed",) if spec is not None and spec.seed is not None
                               else ()))


def _all(config: PipelineConfig) -> list[str]:
    return config.trained_experiments()


def _scored(config: PipelineConfig) -> list[str]:
    return config.scored_experiments()


def _diversity_params(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    extra = ("experiments.{experiment}.diversity",) if config.experiments[experiment].diversity is not None else ()
    return (*diversity_param_keys(config.diversity_for(experiment)), *extra)


def _uses_local(config: PipelineConfig, model: str) -> bool:
    return config.models[model].in_local_models


def _local_models(config: PipelineConfig, *models: str) -> dict[str, str]:
    return {"models": artifact(config, "local_models")} if any(_uses_local(config, m) for m in models) else {}


def _extraction_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    return {"pages": artifact(config, "real_corpus"), **_local_models(config, extraction_model(config))}


def _generate_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    generator = config.experiments[experiment].synthetic.generator
    return {"topics": artifact(config, "sample_topics", experiment), **_local_models(config, generator)}


def _diversity_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"generations": synthetic_set_artifact(config, config.synthetic_set(experiment))}
    section = config.diversity_for(experiment)
    if section.lexical.tokenizer.startswith("local:"):
        inputs["models"] = artifact(config, "local_models")
    return inputs | _local_models(config, *section.model_names().values())


def _local_tokenizer(config: PipelineConfig) -> dict[str, str]:
    return {"local_models": artifact(config, "local_models")} if config.tokenize.tokenizer == "local" else {}


def _pretrain_world(config: PipelineConfig) -> dict[str, int]:
    """Data-parallel processes change the numbers (reduction order): part of a pre-training job's identity.
    Nodes enter only when more than one, so that single-node identities stay as they were."""
    resources = config.resources.for_stage("pretrain")
    return {"nproc": resources.nproc, **({"nodes": resources.nodes} if resources.nodes > 1 else {})}


def _mix_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"real_tokens": artifact(config, "tokenize_real")}
    synthetic_set = config.synthetic_set(experiment)
    if synthetic_set is not None:
        inputs["synthetic_tokens"] = artifact(config, "tokenize_synthetic", synthetic_set)
    return inputs


def _sft_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"model": artifact(config, "convert", experiment)}
    source = config.sft.generations_experiment(experiment)
    source = config.synthetic_set(source) if source in config.experiments else None
    if source is not None and config.experiments[source].synthetic is not None:
        inputs["generations"] = artifact(config, "generate", source)  # else the stage says what is missing
    return inputs


def _report_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {}
    for name in _all(config):
        inputs[f"evals_pt_{name}"] = artifact(config, "evaluate_pt", name)
        inputs[f"evals_sft_{name}"] = artifact(config, "evaluate_sft", name)
        inputs[f"train_metrics_pt_{name}"] = artifact(config, "pretrain", name)
        inputs[f"train_metrics_sft_{name}"] = artifact(config, "sft", name)
        inputs[f"mixes_{name}"] = artifact(config, "mix", name)  # the epochs of every source
    for name in _scored(config):
        inputs[f"diversity_{name}"] = artifact(config, "diversity", name)
    return inputs


def _cache(config: PipelineConfig) -> dict[str, str]:
    # The request cache is shared by all experiments and outlives any one artifact: not an output.
    return {"cache": f"{config.data_root}/llm_cache"}


LLM = "workflow_scripts/llm"
GENERATIONS_READER = "workflow_scripts/generate/reader.py"
TOKENS_READER = ("workflow_scripts/tokenization/reader.py", "workflow_scripts/tokenization/indexed.py")
EVALUATE = ("workflow_scripts/evaluate", "workflow_scripts/sft/reader.py")

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in [
        Stage(
            name="real_corpus", module="workflow_scripts.real_corpus",
            out="real_corpus", params=("real_corpus",),
            code=("workflow_scripts/real_corpus.py",),
            externals=_corpus_files, environment=_stdlib_version,
        ),
        Stage(
            name="local_models", module="workflow_scripts.local_models",
            out="models/local", params=("local_models",),
            code=("workflow_scripts/local_models.py", "workflow_scripts/llm/builtin.py"),
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus")},
            enabled=lambda c: bool(c.local_models.models or c.builtin_models()),
            environment=_builtin_packages,
        ),
        Stage(
            name="topic_extraction", module="workflow_scripts.topic_extraction",
            out="topics/extracted", params=lambda c, e: tuple(topic_extraction_param_keys(c)),
            code=("workflow_scripts/topic_extraction.py", LLM),
            inputs=_extraction_inputs, enabled=lambda c: c.topics.extract_from_corpus, options=_cache,
        ),
        Stage(
            name="topics", module="workflow_scripts.topics", subcommand="catalog",
            out="topics/catalog", params=("topics",),
            code=("workflow_scripts/topics.py", "workflow_scripts/core/inputs.py", "workflow_scripts/resources/topics.json"),
            externals=_topic_files,
            inputs=lambda c, e: {"extracted": artifact(c, "topic_extraction")} if c.topics.extract_from_corpus else {},
        ),
        Stage(
            name="sample_topics", module="workflow_scripts.topics", subcommand="sample",
            out="topics/samples/{experiment}", params=("seed", "experiments.{experiment}.synthetic.topics"),
            code=("workflow_scripts/topics.py",),
            inputs=lambda c, e: {"catalog": artifact(c, "topics")},
            experiments=_generated,
        ),
        Stage(
            name="generate", module="workflow_scripts.generate",
            out="generations/{experiment}", params=lambda c, e: tuple(generation_param_keys(c, e)),
            code=("workflow_scripts/generate", LLM, "workflow_scripts/resources/personas.jsonl"),
            inputs=_generate_inputs, experiments=_generated, options=_cache, externals=_persona_files,
        ),
        Stage(
            name="external_synthetic", module="workflow_scripts.synthetic_sets", subcommand="external",
            out="synthetic_sets/external/{experiment}", params=("experiments.{experiment}.external",),
            code=("workflow_scripts/synthetic_sets.py", GENERATIONS_READER),
            experiments=_external, externals=_external_synthetic_files,
        ),
        Stage(
            name="mixed_synthetic", module="workflow_scripts.synthetic_sets", subcommand="mixed",
            out="synthetic_sets/mixed/{experiment}", params=("experiments.{experiment}.mixed",),
            code=("workflow_scripts/synthetic_sets.py", GENERATIONS_READER),
            inputs=lambda c, e: {f"generations_{source}": artifact(c, "generate", source)
                                 for source in c.experiments[e].mixed.sources},
            experiments=_mixed,
        ),
        Stage(
            name="diversity", module="workflow_scripts.diversity.stage",
            out="diversity/{experiment}", params=_diversity_params,
            code=("workflow_scripts/diversity", LLM, GENERATIONS_READER),
            inputs=_diversity_inputs, experiments=_scored, options=_cache,
        ),
        Stage(
            name="tokenize_real", module="workflow_scripts.tokenization", subcommand="real",
            out="tokens/real", params=("tokenize",), code=("workflow_scripts/tokenization", GENERATIONS_READER),
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus"), **_local_tokenizer(c)},
        ),
        Stage(
            name="tokenize_synthetic", module="workflow_scripts.tokenization", subcommand="synthetic",
            out="tokens/synthetic/{experiment}", params=("tokenize",),
            code=("workflow_scripts/tokenization", GENERATIONS_READER),
            inputs=lambda c, e: {"generations": synthetic_set_artifact(c, e), **_local_tokenizer(c)},
            experiments=_synthetic,
        ),
        Stage(
            name="mix", module="workflow_scripts.mixes",
            out="mixes/{experiment}", params=("mixes", "experiments.{experiment}.mix"),
            code=("workflow_scripts/mixes", *TOKENS_READER),
            inputs=_mix_inputs, experiments=_all,
        ),
        Stage(
            name="pretrain", module="workflow_scripts.pretrain",
            out="pretrain/{experiment}", params=_pretrain_params,
            code=("workflow_scripts/pretrain", "workflow_scripts/mixes/reader.py", *TOKENS_READER),
            inputs=lambda c, e: {"mix": artifact(c, "mix", e)}, experiments=_all,
            environment=_pretrain_world,
            distributed=True,
        ),
        Stage(
            name="convert", module="workflow_scripts.pretrain.convert",
            out="models/pt/{experiment}", params=PARAM_KEYS_CONVERT,
            code=("workflow_scripts/pretrain", "workflow_scripts/mixes/reader.py", *TOKENS_READER),
            inputs=lambda c, e: {"checkpoint": artifact(c, "pretrain", e)}, experiments=_all,
        ),
        Stage(
            name="sft", module="workflow_scripts.sft",
            out="models/sft/{experiment}", params=_sft_params, code=("workflow_scripts/sft", GENERATIONS_READER),
            inputs=_sft_inputs, experiments=_all, externals=_instruction_files,
        ),
        Stage(
            name="eval_tasks", module="workflow_scripts.evaluate", subcommand="tasks",
            out="eval/tasks", params=PARAM_KEYS_TASKS, code=EVALUATE,
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus")},
        ),
        Stage(
            name="evaluate_pt", module="workflow_scripts.evaluate", subcommand="run",
            out="eval/pt/{experiment}", params=PARAM_KEYS_EVALUATE, code=EVALUATE,
            inputs=lambda c, e: {"model": artifact(c, "convert", e), "tasks": artifact(c, "eval_tasks")},
            experiments=_all, options=lambda c: {"model_stage": "pt"}, externals=_task_folders,
        ),
        Stage(
            name="evaluate_sft", module="workflow_scripts.evaluate", subcommand="run",
            out="eval/sft/{experiment}", params=PARAM_KEYS_EVALUATE, code=EVALUATE,
            inputs=lambda c, e: {"model": artifact(c, "sft", e), "tasks": artifact(c, "eval_tasks")},
            experiments=_all, options=lambda c: {"model_stage": "sft"}, externals=_task_folders,
        ),
        Stage(
            name="diversity_summary", module="workflow_scripts.diversity.summary",
            out="diversity/summary", params=(),
            code=("workflow_scripts/diversity/summary.py",),
            inputs=lambda c, e: {f"diversity_{x}": artifact(c, "diversity", x) for x in _scored(c)},
            enabled=lambda c: bool(_synthetic(c)),
        ),
        Stage(
            name="report", module="workflow_scripts.report",
            out="report", params=REPORT_PARAM_KEYS,
            code=("workflow_scripts/report", "workflow_scripts/evaluate/reader.py",
                  "workflow_scripts/resources/paper_design.yaml", "workflow_scripts/mixes/reader.py",
                  *TOKENS_READER),
            inputs=_report_inputs,
        ),
    ]
}
