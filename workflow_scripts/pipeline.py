"""The planner: the jobs of a configuration, read by both front-ends.

The stages' table (:data:`workflow_scripts.core.stages.STAGES`) is the one definition of jobs; ``plan`` turns
it into commands, dependencies and fingerprints. ``rules/*.smk`` build their Snakemake rules from it
(inputs, output, params, log, shell) and ``python -m workflow_scripts.dvc_yaml`` writes ``dvc.yaml`` from it. Both therefore run
the same commands with the same dependencies (including each stage's code), parameters and outputs;
``tests/test_frontends_in_step.py`` fails when they drift.

Rebuild decisions. Every job has a *fingerprint* (:mod:`workflow_scripts.core.identity`): a hash of the
config values it reads, its code, its external input files and the fingerprints of the jobs it depends on
(paths, core counts and other irrelevant details are left out). Each stage records the fingerprint and its inputs' content ids in its
artifact's manifest; :func:`artifact_is_current` compares them with the plan. DVC hashes content itself;
Snakemake is told through rules/common.smk (ancient() inputs while current, a stamp file when stale),
because DVC does not keep mtimes on checkout and Snakemake's own metadata is absent in a fresh clone.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workflow_scripts.config import PipelineConfig
from workflow_scripts.core.artifacts import MANIFEST, ArtifactError, files_match_manifest, input_hash, read_manifest
from workflow_scripts.core.identity import fingerprint, param_keys
from workflow_scripts.core.stages import STAGES, Stage, artifact

PYTHON = "python"
log = logging.getLogger(__name__)
__all__ = ["STAGES", "Job", "artifact", "artifact_is_current", "final_outputs", "job_name", "plan"]


# --- jobs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    stage: str
    experiment: str | None
    cmd: str
    inputs: dict[str, str]            # upstream artifacts, passed as --<name> PATH
    deps: tuple[str, ...]             # what DVC hashes: inputs' manifests + code + externals (dvc_deps)
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


def log_path(stage: Stage, experiment: str | None) -> str:
    return f"logs/{stage.name}.log" if experiment is None else f"logs/{stage.name}/{experiment}.log"


def launcher(stage: Stage, config: PipelineConfig) -> list[str]:
    """``python -m`` or, for a multi-process stage, ``torchrun`` with the processes its resources ask for; on
    several nodes, ``srun`` starts one launcher per node (pretrain/launch.py: rendezvous on the first node)."""
    resources = config.resources.for_stage(stage.name)
    nproc, nodes = resources.nproc, resources.nodes
    if stage.distributed and nodes > 1:
        return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1", PYTHON, "-m",
                "workflow_scripts.pretrain.launch", "--nproc-per-node", str(nproc), "--", "-m", stage.module]
    if stage.distributed and nproc > 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), "-m", stage.module]
    return [PYTHON, "-m", stage.module]


HF_OFFLINE = ("HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "TRANSFORMERS_OFFLINE=1")


def environment_prefix(config: PipelineConfig) -> list[str]:
    """``env`` with the Hugging Face offline flags when ``hub.offline``. On the command line rather than set by
    the stage: huggingface_hub and datasets read them once, at import, and every process the command starts
    (torchrun's and srun's workers, lm-eval, vLLM's engine) inherits them."""
    return ["env", *HF_OFFLINE] if config.hub.offline else []


def command(stage: Stage, config: PipelineConfig, config_file: str, experiment: str | None,
            inputs: dict[str, str], out: str, log: str) -> str:
    """The stage's command line: the same string in dvc.yaml and in the Snakemake rule. Every word is quoted for
    the shell (a data_root or config file with a space stays one argument)."""
    words = environment_prefix(config) + launcher(stage, config) + ([stage.subcommand] if stage.subcommand else [])
    words += ["--config", config_file]
    if stage.per_experiment:
        words += ["--experiment", experiment or ""]
    for name, value in {**inputs, **stage.options(config)}.items():
        words += [f"--{name.replace('_', '-')}", value]
    words += ["--out", out, "--log-file", log]
    return shlex.join(words)


def dvc_deps(inputs: dict[str, str], code: Sequence[str], externals: Sequence[str]) -> tuple[str, ...]:
    """DVC's dependencies of a job: each upstream artifact through its manifest, then code and external files.

    The manifest lists every file of its artifact with its size and sha256, so it changes exactly when the
    artifact's content does, and it is the content id artifact_is_current compares on the Snakemake side. DVC
    hashes one small file per input instead of rebuilding the tree hash of every upstream directory for every
    stage that reads it (one no-op ``dvc status`` walked 301 trees), and still links the stages (a dependency
    inside another stage's output). A file edited inside an artifact shows as that stage's changed output.
    """
    manifests = [f"{path}/{MANIFEST}" for path in inputs.values()]
    return tuple(dict.fromkeys([*manifests, *code, *externals]))


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
            upstream = [fingerprints[path] for path in inputs.values()]
            fingerprints[out] = fingerprint(config, stage.name, experiment, upstream)
            jobs.append(Job(
                stage=stage.name, experiment=experiment,
                cmd=command(stage, config, config_file, experiment, inputs, out, log),
                inputs=inputs, deps=dvc_deps(inputs, stage.code, externals),
                params=param_keys(stage, config, experiment), out=out, log=log, fingerprint=fingerprints[out],
            ))
    return jobs


def artifact_is_current(job: Job) -> bool:
    """Whether the job's artifact was built from this plan and from its inputs' present content, and its
    files are still those its manifest lists.

    True when its manifest records the job's fingerprint and, for every upstream artifact, the content
    id that artifact has now, and every file has its recorded size and (where that is cheap: a stat
    cache hit or a small file) its recorded hash (:func:`files_match_manifest`), so Snakemake can ask it
    for every job at every start. A modified file makes the artifact stale: it is rebuilt.
    """
    try:
        manifest = read_manifest(job.out)
    except (ArtifactError, ValueError):
        return False
    if manifest.fingerprint != job.fingerprint:
        return False
    problem = files_match_manifest(job.out, manifest)
    if problem is not None:
        log.warning("%s is stale: %s", job.out, problem)
        return False
    recorded = set(manifest.inputs.values())  # by content, whatever names the stage gave its inputs
    for path in job.inputs.values():
        if not (Path(path) / MANIFEST).is_file() or input_hash(Path(path)) not in recorded:
            return False
    return True


def final_outputs(jobs: list[Job] | object) -> list[str]:
    """Outputs no other job consumes (the report, the diversity table): building them builds everything."""
    jobs = list(jobs)
    consumed = {path for job in jobs for path in job.inputs.values()}
    return [job.out for job in jobs if job.out not in consumed]
