"""Validate a pipeline configuration and every file it names, before any job runs.

    python -m workflow_scripts.validate                          # params.yaml
    python -m workflow_scripts.validate --config configs/paper.yaml
    python -m workflow_scripts.validate --out data/validated/config.json   # what dvc.yaml's first stage runs

Checks, in this order, and reports every problem with its key path (or file) on one line each:
  1. the schema: unknown keys, strict types (no bool/str coercion into numbers), ranges, duplicate YAML keys;
  2. cross-field constraints: references between sections, the mixes' budget against the experiments'
     synthetic tokens and pre-training's batch, warmup and context, K-means clusters against T x G, ...;
  3. external inputs: topic files, persona files, real-corpus files, instruction data and lm-eval task
     folders exist, are not empty and parse (workflow_scripts/core/inputs.py);
  4. the job plan builds (resources name known stages).

Snakemake runs these checks when it plans (rules/common.smk), so `snakemake -n` fails on a bad configuration.
DVC runs this command as the stage ``validate`` that every other stage depends on, so `dvc repro` stops before
it touches any output. `dvc repro --dry` runs no command, so it checks nothing: run this command first (or
``bash scripts/dvc-repro.sh --dry``, which does both).

``WORKFLOW_SCRIPTS_INPUT_CHECKS=warn`` turns the input checks (3) into warnings, for planning a configuration
whose input files live elsewhere (the paper's on a laptop); nothing else is relaxed.

``--out`` writes a small file whose bytes depend only on the config file's name, never on its values, so
that a successful validation does not by itself make DVC rerun the stages after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from workflow_scripts.config import ConfigError, PipelineConfig, load_config
from workflow_scripts.core.cli import setup_logging
from workflow_scripts.core.inputs import external_input_problems
from workflow_scripts.pipeline import STAGES, Job, plan

log = logging.getLogger(__name__)
# Set to "warn" to plan a configuration whose input files are not on this machine (to inspect the paper's job
# graph on a laptop, say): missing or broken inputs are then logged, not refused.
INPUT_CHECKS = "WORKFLOW_SCRIPTS_INPUT_CHECKS"
# The code whose checks the validated file vouches for: the validate stage's dependencies in dvc.yaml.
CODE = ("workflow_scripts/validate.py", "workflow_scripts/config", "workflow_scripts/core/inputs.py")


def validated_path(config: PipelineConfig) -> str:
    """Where the validate stage writes its file (under data_root, beside the artifacts)."""
    return f"{config.data_root}/validated/config.json"


def plan_problems(config: PipelineConfig) -> list[str]:
    unknown = sorted(set(config.resources.stages) - set(STAGES))
    if unknown:
        return [f"resources.stages: unknown stages {unknown} (known: {sorted(STAGES)})"]
    return []


def validate(config_file: str | Path) -> tuple[PipelineConfig, list[Job]]:
    """The configuration and its job plan; :class:`ConfigError` listing every problem when anything is wrong."""
    config = load_config(config_file)
    inputs = external_input_problems(config)
    if inputs and os.environ.get(INPUT_CHECKS) == "warn":
        for problem in inputs:
            log.warning("%s (%s=warn: planned anyway; the job that reads it will fail)", problem, INPUT_CHECKS)
        inputs = []
    problems = plan_problems(config) + inputs
    if problems:
        raise ConfigError("\n".join([f"invalid configuration {config_file}:", *(f"  - {p}" for p in problems)]))
    return config, plan(config, str(config_file))


def write_validated(out: Path, config_file: str) -> None:
    """The validate stage's output, replaced atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_text(json.dumps({"config": config_file, "valid": True}, indent=1) + "\n")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--configfile", dest="config", default="params.yaml",
                        help="pipeline configuration (default: params.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the validated marker here (dvc.yaml's validate stage does)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config, jobs = validate(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if args.out is not None:
        write_validated(args.out, args.config)
    log.info("%s is valid: %d experiments, %d jobs", args.config, len(config.experiments), len(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
