"""The SFT stage's command line: checks the inputs, loads the pairs, fine-tunes into one artifact.

``python -m workflow_scripts.sft --help`` shows the stage's description (the package docstring).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import workflow_scripts.sft
from workflow_scripts.config.sft import SFTConfig
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.identity import job_identity
from workflow_scripts.generate.reader import generation_shards
from workflow_scripts.sft.data import load_pairs
from workflow_scripts.sft.training import fine_tune

log = logging.getLogger(__name__)


def _check_upstream(path: Path, experiment: str, what: str) -> str | None:
    """Refuse an artifact made for another experiment; return its stage (None for external folders)."""
    if not (path / "manifest.json").is_file():
        log.warning("%s %s has no manifest: treated as external input", what, path)
        return None
    return read_manifest(path, experiment=experiment).stage


def _local_inputs(config: SFTConfig) -> dict[str, Path]:
    return {
        f"source_{i}": Path(s.path)
        for i, s in enumerate(config.sources)
        if s.path is not None and Path(s.path).exists()
    }


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    section = config.sft_for(args.experiment) if args.experiment in config.experiments else config.sft
    model = Path(args.model)
    inputs: dict[str, Path] = _local_inputs(section)
    info: dict[str, Any] = {}
    if model.exists():
        info["base_stage"] = _check_upstream(model, args.experiment, "the model")
        inputs["model"] = model
    wanted = section.generations_experiment(args.experiment)
    if wanted in config.experiments:  # an experiment trained on another's set reads that set's generations
        wanted = config.synthetic_set(wanted) or wanted
    if wanted is not None:
        if args.generations is None:
            raise InputError("sft.sources has a generated_mcq source: pass --generations")
        generation_shards(args.generations, wanted)  # refuses another stage's or experiment's artifact
        inputs["generations"] = args.generations
    if args.tokenizer is not None:
        inputs["tokenizer"] = args.tokenizer
    pairs, counts = load_pairs(section, args.generations if wanted is not None else None)
    identity = job_identity(config, "sft", args.experiment, inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        facts = fine_tune(
            str(args.model),
            pairs,
            section,
            artifact.path,
            tokenizer_path=str(args.tokenizer) if args.tokenizer else None,
        )
        artifact.counts.update({f"pairs_{k}": v for k, v in counts.items()})
        artifact.counts.update(
            {k: v for k, v in facts.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        )
        artifact.info.update(info, system_prompt=section.system_prompt, generations_experiment=wanted)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(workflow_scripts.sft.__doc__, experiment=True)
    parser.prog = "python -m workflow_scripts.sft"
    parser.add_argument(
        "--model", required=True, help="pre-trained Hugging Face model folder (convert artifact) or hub id"
    )
    parser.add_argument(
        "--generations",
        type=Path,
        default=None,
        help="generate artifact (Parquet shards) for a generated_mcq source",
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder when the model folder has none"
    )
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
