"""The one definition of the pipeline's jobs, read by both front-ends.

``rules/*.smk`` build their Snakemake rules from :data:`STAGES` (inputs, output, params, log, shell),
and ``python -m workflow_scripts.dvc_yaml`` writes ``dvc.yaml`` from :func:`plan`. Both therefore run
the same commands with the same dependencies (including each stage's code), parameters and outputs;
``tests/test_frontends_in_step.py`` fails when they drift.

Rebuild decisions. Every job has a *fingerprint*: a hash of the config values it reads, its code, its
external input files and the fingerprints of the jobs it depends on (paths, core counts and other
irrelevant details are left out). Each stage records the fingerprint and its inputs' content ids in its
artifact's manifest; :func:`artifact_is_current` compares them with the plan. DVC hashes content itself;
Snakemake is told through rules/common.smk (ancient() inputs while current, a stamp file when stale),
because DVC does not keep mtimes on checkout and Snakemake's own metadata is absent in a fresh clone.
"""

from __future__ import annotations

import glob
import platform
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable

from workflow_scripts.core.artifacts import MANIFEST, ArtifactError, input_hash, read_manifest
from workflow_scripts.core.config import PipelineConfig, lookup
from workflow_scripts.core.hashing import hash_path, hash_value

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
PYTHON = "python"


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


# --- the stages -------------------------------------------------------------------------------------------


def _topic_files(config: PipelineConfig) -> list[str]:
    return [relative(builtin_topics_path()) if s == "builtin" else s for s in config.topics.sources]


def _corpus_files(config: PipelineConfig) -> list[str]:
    return sorted({f for s in config.real_corpus.sources for p in s.paths for f in glob.glob(p, recursive=True)})


def _stdlib_version(config: PipelineConfig) -> dict[str, str]:
    uses_stdlib = any(s.type.startswith("python_stdlib") for s in config.real_corpus.sources)
    return {"python": platform.python_version()} if uses_stdlib else {}


def _synthetic(config: PipelineConfig) -> list[str]:
    return config.synthetic_experiments()


def _generator_keys(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    from workflow_scripts.generate.config import resolve_param_keys

    return tuple(resolve_param_keys(config, experiment))


def _diversity_keys(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    from workflow_scripts.diversity.config import resolve_param_keys

    return tuple(resolve_param_keys(config.diversity))


def _diversity_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"generations": artifact(config, "generate", experiment)}
    roles = config.diversity.model_names().values()
    if any(config.models[name].local is not None for name in roles) or \
            config.diversity.lexical.tokenizer.startswith("local:"):
        inputs["models"] = artifact(config, "local_models")
    return inputs


def _all(config: PipelineConfig) -> list[str]:
    return list(config.experiments)


def _local_tokenizer(config: PipelineConfig) -> dict[str, str]:
    return {"local_models": artifact(config, "local_models")} if config.tokenize.tokenizer == "local" else {}


def _mix_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"real_tokens": artifact(config, "tokenize_real")}
    if config.experiments[experiment].synthetic is not None:
        inputs["synthetic_tokens"] = artifact(config, "tokenize_synthetic", experiment)
    return inputs


def _sft_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"model": artifact(config, "convert", experiment)}
    source = config.sft.generations_experiment(experiment)
    if source is not None and config.experiments[source].synthetic is not None:
        inputs["generations"] = artifact(config, "generate", source)  # else the stage says what is missing
    return inputs


def _report_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {}
    for name in config.experiments:
        inputs[f"evals_pt_{name}"] = artifact(config, "evaluate_pt", name)
        inputs[f"evals_sft_{name}"] = artifact(config, "evaluate_sft", name)
        inputs[f"train_metrics_pt_{name}"] = artifact(config, "pretrain", name)
        inputs[f"train_metrics_sft_{name}"] = artifact(config, "sft", name)
    for name in _synthetic(config):
        inputs[f"diversity_{name}"] = artifact(config, "diversity", name)
    return inputs


def _evaluate_keys(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    from workflow_scripts.evaluate.config import PARAM_KEYS_EVALUATE

    return PARAM_KEYS_EVALUATE


EVALUATE_CODE = ("workflow_scripts/evaluate", "workflow_scripts/sft/config.py")


def _pretrain_keys(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    from workflow_scripts.pretrain.config import PARAM_KEYS

    return tuple(PARAM_KEYS)


def _generate_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    inputs = {"topics": artifact(config, "sample_topics", experiment)}
    generator = config.models[config.experiments[experiment].synthetic.generator]
    if generator.local is not None:
        inputs["models"] = artifact(config, "local_models")
    return inputs


def _extraction_keys(config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    from workflow_scripts.generate.topic_extraction import PARAM_KEYS, extraction_model

    model = extraction_model(config, config.generate.topic_extraction)
    return tuple(key.format(model=model) for key in PARAM_KEYS)


def _extraction_inputs(config: PipelineConfig, experiment: str | None) -> dict[str, str]:
    from workflow_scripts.generate.topic_extraction import extraction_model

    inputs = {"pages": artifact(config, "real_corpus")}
    if config.models[extraction_model(config, config.generate.topic_extraction)].local is not None:
        inputs["models"] = artifact(config, "local_models")
    return inputs


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
            code=("workflow_scripts/local_models.py",),
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus")},
            enabled=lambda c: bool(c.local_models.models),
        ),
        Stage(
            name="topic_extraction", module="workflow_scripts.generate.topic_extraction",
            out="topics/extracted", params=_extraction_keys,
            code=("workflow_scripts/generate/topic_extraction.py", "workflow_scripts/generate/llm.py",
                  "workflow_scripts/generate/cache.py", "workflow_scripts/generate/backends"),
            inputs=_extraction_inputs, enabled=lambda c: c.topics.extract_from_corpus,
            options=lambda c: {"cache": f"{c.data_root}/llm_cache"},
        ),
        Stage(
            name="topics", module="workflow_scripts.topics", subcommand="catalog",
            out="topics/catalog", params=("topics",),
            code=("workflow_scripts/topics.py", "workflow_scripts/resources/topics.json"),
            externals=_topic_files,
            inputs=lambda c, e: {"extracted": artifact(c, "topic_extraction")} if c.topics.extract_from_corpus else {},
        ),
        Stage(
            name="sample_topics", module="workflow_scripts.topics", subcommand="sample",
            out="topics/samples/{experiment}", params=("seed", "experiments.{experiment}.synthetic.topics"),
            code=("workflow_scripts/topics.py",),
            inputs=lambda c, e: {"catalog": artifact(c, "topics")},
            experiments=_synthetic,
        ),
        Stage(
            name="generate", module="workflow_scripts.generate",
            out="generations/{experiment}", params=_generator_keys,
            code=("workflow_scripts/generate", "workflow_scripts/resources/personas.jsonl"),
            inputs=_generate_inputs, experiments=_synthetic,
            # The request cache is shared by all experiments and outlives any one artifact: not an output.
            options=lambda c: {"cache": f"{c.data_root}/llm_cache"},
        ),
        Stage(
            name="diversity", module="workflow_scripts.diversity.stage",
            out="diversity/{experiment}", params=_diversity_keys,
            code=("workflow_scripts/diversity", "workflow_scripts/generate/llm.py", "workflow_scripts/generate/cache.py",
                  "workflow_scripts/generate/config.py", "workflow_scripts/generate/backends"),
            inputs=_diversity_inputs, experiments=_synthetic,
            options=lambda c: {"cache": f"{c.data_root}/llm_cache"},
        ),
        Stage(
            name="tokenize_real", module="workflow_scripts.tokenization", subcommand="real",
            out="tokens/real", params=("tokenize",), code=("workflow_scripts/tokenization",),
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus"), **_local_tokenizer(c)},
        ),
        Stage(
            name="tokenize_synthetic", module="workflow_scripts.tokenization", subcommand="synthetic",
            out="tokens/synthetic/{experiment}", params=("tokenize",), code=("workflow_scripts/tokenization",),
            inputs=lambda c, e: {"generations": artifact(c, "generate", e), **_local_tokenizer(c)},
            experiments=_synthetic,
        ),
        Stage(
            name="mix", module="workflow_scripts.mixes",
            out="mixes/{experiment}", params=("mixes", "experiments.{experiment}.mix"),
            code=("workflow_scripts/mixes", "workflow_scripts/tokenization/identity.py",
                  "workflow_scripts/tokenization/reader.py", "workflow_scripts/tokenization/indexed.py"),
            inputs=_mix_inputs, experiments=_all,
        ),
        Stage(
            name="pretrain", module="workflow_scripts.pretrain",
            out="pretrain/{experiment}", params=_pretrain_keys,
            code=("workflow_scripts/pretrain", "workflow_scripts/mixes/blend.py", "workflow_scripts/mixes/megatron.py"),
            inputs=lambda c, e: {"mix": artifact(c, "mix", e)}, experiments=_all,
            # data-parallel processes change the numbers (reduction order): part of the job's identity
            environment=lambda c: {"nproc": c.resources.for_stage("pretrain").nproc},
            distributed=True,
        ),
        Stage(
            name="convert", module="workflow_scripts.pretrain.convert",
            out="models/pt/{experiment}", params=("pretrain.export_dtype",),
            code=("workflow_scripts/pretrain/convert.py", "workflow_scripts/pretrain/model_configs.py"),
            inputs=lambda c, e: {"checkpoint": artifact(c, "pretrain", e)}, experiments=_all,
        ),
        Stage(
            name="sft", module="workflow_scripts.sft",
            out="models/sft/{experiment}", params=("sft",), code=("workflow_scripts/sft",),
            inputs=_sft_inputs, experiments=_all,
        ),
        Stage(
            name="eval_tasks", module="workflow_scripts.evaluate", subcommand="tasks",
            out="eval/tasks", params=("evaluation.local_tasks", "evaluation.seed"),
            code=("workflow_scripts/evaluate/tasks.py", "workflow_scripts/evaluate/config.py",
                  "workflow_scripts/evaluate/templates"),
            inputs=lambda c, e: {"corpus": artifact(c, "real_corpus")},
        ),
        Stage(
            name="evaluate_pt", module="workflow_scripts.evaluate", subcommand="run",
            out="eval/pt/{experiment}", params=_evaluate_keys, code=EVALUATE_CODE,
            inputs=lambda c, e: {"model": artifact(c, "convert", e), "tasks": artifact(c, "eval_tasks")},
            experiments=_all, options=lambda c: {"model_stage": "pt"},
        ),
        Stage(
            name="evaluate_sft", module="workflow_scripts.evaluate", subcommand="run",
            out="eval/sft/{experiment}", params=_evaluate_keys, code=EVALUATE_CODE,
            inputs=lambda c, e: {"model": artifact(c, "sft", e), "tasks": artifact(c, "eval_tasks")},
            experiments=_all, options=lambda c: {"model_stage": "sft"},
        ),
        Stage(
            name="diversity_summary", module="workflow_scripts.diversity.summary",
            out="diversity/summary", params=(),
            code=("workflow_scripts/diversity/summary.py",),
            inputs=lambda c, e: {f"diversity_{x}": artifact(c, "diversity", x) for x in _synthetic(c)},
            enabled=lambda c: bool(_synthetic(c)),
        ),
        Stage(
            name="report", module="workflow_scripts.report",
            out="report", params=("report", "evaluation.tasks", "evaluation.scoring", "experiments"),
            code=("workflow_scripts/report",),
            inputs=_report_inputs,
        ),
    ]
}


def builtin_topics_path() -> Path:
    return PACKAGE / "resources" / "topics.json"


def relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


# --- jobs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    stage: str
    experiment: str | None
    cmd: str
    inputs: dict[str, str]            # upstream artifacts, passed as --<name> PATH
    deps: tuple[str, ...]             # everything DVC should hash: inputs + code + externals
    params: tuple[str, ...]           # resolved dotted config keys
    out: str
    log: str
    fingerprint: str = field(compare=False)

    @property
    def name(self) -> str:
        return job_name(self.stage, self.experiment)


def job_name(stage: str, experiment: str | None) -> str:
    """``stage`` or ``stage--experiment``: also the DVC stage name (DVC reserves ``@`` for foreach)."""
    return stage if experiment is None else f"{stage}--{experiment}"


def param_keys(stage: Stage, config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    keys = stage.params(config, experiment) if callable(stage.params) else stage.params
    return tuple(key.format(experiment=experiment) for key in keys)


def stage_params(config: PipelineConfig, stage: str, experiment: str | None = None) -> dict:
    """The exact config values a stage reads: what its manifest records and its fingerprint hashes."""
    return {key: lookup(config, key) for key in param_keys(STAGES[stage], config, experiment)}


def log_path(stage: Stage, experiment: str | None) -> str:
    return f"logs/{stage.name}.log" if experiment is None else f"logs/{stage.name}/{experiment}.log"


def launcher(stage: Stage, config: PipelineConfig) -> list[str]:
    """``python -m`` or, for a multi-process stage, ``torchrun`` with the processes its resources ask for."""
    nproc = config.resources.for_stage(stage.name).nproc
    if stage.distributed and nproc > 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), "-m", stage.module]
    return [PYTHON, "-m", stage.module]


def command(stage: Stage, config: PipelineConfig, config_file: str, experiment: str | None,
            inputs: dict[str, str], out: str, log: str) -> str:
    """The stage's command line: the same string in dvc.yaml and in the Snakemake rule."""
    words = launcher(stage, config) + ([stage.subcommand] if stage.subcommand else [])
    words += ["--config", config_file]
    if stage.per_experiment:
        words += ["--experiment", experiment or ""]
    for name, value in {**inputs, **stage.options(config)}.items():
        words += [f"--{name.replace('_', '-')}", value]
    words += ["--out", out, "--log-file", log]
    return " ".join(words)


@cache
def code_hash(paths: tuple[str, ...]) -> str:
    return hash_value([(p, hash_path(REPO / p)) for p in paths])


def external_hash(paths: list[str]) -> str:
    return hash_value([(p, hash_path(Path(p)) if Path(p).exists() else "missing") for p in paths])


def plan(config: PipelineConfig, config_file: str = "params.yaml") -> list[Job]:
    """Every job of the pipeline for this configuration, upstream jobs first."""
    jobs: list[Job] = []
    fingerprints: dict[str, str] = {}
    for stage in STAGES.values():
        if not stage.enabled(config):
            continue
        for experiment in stage.experiments(config) if stage.experiments else [None]:
            inputs = stage.inputs(config, experiment)
            out = artifact(config, stage.name, experiment)
            log = log_path(stage, experiment)
            externals = stage.externals(config)
            upstream = sorted(fingerprints[path] for path in inputs.values())
            fingerprint = hash_value({
                "stage": stage.name, "params": stage_params(config, stage.name, experiment),
                "code": code_hash(stage.code), "externals": external_hash(externals),
                "environment": stage.environment(config), "upstream": upstream,
            })
            fingerprints[out] = fingerprint
            jobs.append(Job(
                stage=stage.name, experiment=experiment,
                cmd=command(stage, config, shlex.quote(config_file), experiment, inputs, out, log),
                inputs=inputs, deps=tuple(dict.fromkeys([*inputs.values(), *stage.code, *externals])),
                params=param_keys(stage, config, experiment), out=out, log=log, fingerprint=fingerprint,
            ))
    return jobs


def planned_job(config: PipelineConfig, stage: str, experiment: str | None = None) -> Job | None:
    name = job_name(stage, experiment)
    return next((job for job in plan(config) if job.name == name), None)


def job_identity(config: PipelineConfig, stage: str, experiment: str | None = None) -> dict:
    """What a stage passes to ``build_artifact``: its resolved params and its fingerprint in the plan."""
    job = planned_job(config, stage, experiment)
    if job is None:
        raise KeyError(f"no job {job_name(stage, experiment)!r} in the plan of this configuration")
    return {"params": stage_params(config, stage, experiment), "fingerprint": job.fingerprint,
            "stage": stage, "experiment": experiment, "code_files": [REPO / p for p in STAGES[stage].code]}


def artifact_is_current(job: Job) -> bool:
    """Whether the job's artifact was built from this plan and from its inputs' present content.

    True when its manifest records the job's fingerprint and, for every upstream artifact, the content
    id that artifact has now. Reads manifests only (no data hashing), so Snakemake can ask it for every
    job at every start.
    """
    try:
        manifest = read_manifest(job.out)
    except (ArtifactError, ValueError):
        return False
    if manifest.fingerprint != job.fingerprint:
        return False
    recorded = set(manifest.inputs.values())  # by content, whatever names the stage gave its inputs
    for path in job.inputs.values():
        if not (Path(path) / MANIFEST).is_file() or input_hash(Path(path)) not in recorded:
            return False
    return True


def job_fingerprint(config: PipelineConfig, stage: str, experiment: str | None = None) -> str:
    """The job's fingerprint, or "" when this configuration's plan has no such job (a stage run by hand)."""
    job = planned_job(config, stage, experiment)
    return job.fingerprint if job is not None else ""


def final_outputs(jobs: list[Job] | object) -> list[str]:
    """Outputs no other job consumes (the report, the diversity table): building them builds everything."""
    jobs = list(jobs)
    consumed = {path for job in jobs for path in job.inputs.values()}
    return [job.out for job in jobs if job.out not in consumed]
