"""A job's identity, computed one way for the planner and for the stage that builds the artifact.

The *fingerprint* hashes the config values the stage reads (its row's param keys), its code (the row's code
list), its external files, facts of its environment and the fingerprints of its upstream artifacts. Paths,
core counts and timings stay out, so a moved or re-pulled artifact keeps its identity. The planner passes
the upstream fingerprints it planned; a stage passes its input artifacts, whose manifests record theirs.
A test checks that the two agree for every job of a full run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from workflow_scripts.config import PipelineConfig, lookup
from workflow_scripts.config.root import is_untracked, tracked
from workflow_scripts.core.artifacts import MANIFEST, JobIdentity, read_manifest
from workflow_scripts.core.hashing import hash_path_cached, hash_value
from workflow_scripts.core.stages import REPO, STAGES, Stage


def stage_row(stage: str) -> Stage:
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r} (known: {sorted(STAGES)})")
    return STAGES[stage]


def param_keys(row: Stage, config: PipelineConfig, experiment: str | None) -> tuple[str, ...]:
    keys = row.params(config, experiment) if callable(row.params) else row.params
    return tuple(key.format(experiment=experiment) for key in keys)


def stage_params(config: PipelineConfig, stage: str, experiment: str | None = None) -> dict[str, Any]:
    """The exact config values a stage reads: what its manifest records and its fingerprint hashes (less the
    untracked ones, :data:`workflow_scripts.config.root.UNTRACKED`: prices and budgets)."""
    return {key: tracked(key, lookup(config, key)) for key in param_keys(stage_row(stage), config, experiment)
            if not is_untracked(key)}


@cache
def code_hash(paths: tuple[str, ...]) -> str:
    """Hash of a row's code list (relative names and contents)."""
    return hash_value([(p, hash_path_cached(REPO / p)) for p in paths])


def external_hash(paths: Iterable[str]) -> str:
    return hash_value([(p, hash_path_cached(Path(p)) if Path(p).exists() else "missing") for p in paths])


def fingerprint(config: PipelineConfig, stage: str, experiment: str | None, upstream: Iterable[str],
                params: dict[str, Any] | None = None) -> str:
    """``params``: the stage's params when the caller has them already (else they are looked up)."""
    row = stage_row(stage)
    return hash_value({
        "stage": row.name, "params": stage_params(config, stage, experiment) if params is None else params,
        "code": code_hash(row.code), "externals": external_hash(row.externals(config)),
        "environment": row.environment(config), "upstream": sorted(upstream),
    })


def upstream_fingerprints(inputs: Mapping[str, Path | str]) -> list[str]:
    """The fingerprints recorded by the input artifacts (plain input files have none)."""
    return [read_manifest(path).fingerprint for path in inputs.values() if (Path(path) / MANIFEST).is_file()]


def job_identity(config: PipelineConfig, stage: str, experiment: str | None = None,
                 inputs: Mapping[str, Path | str] | None = None) -> JobIdentity:
    """The identity of the job that builds ``stage`` (for ``experiment``) from ``inputs``."""
    params = stage_params(config, stage, experiment)
    return JobIdentity(
        stage=stage, experiment=experiment, params=params, code_hash=code_hash(stage_row(stage).code),
        fingerprint=fingerprint(config, stage, experiment, upstream_fingerprints(inputs or {}), params),
    )
