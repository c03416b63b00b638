"""Stage: one experiment's training mix - real web/code/math by weight plus its synthetic corpus.

Inputs: the real tokens artifact (``tokenization real``: datasets web, code, math and heldout_*) and, for
an experiment with synthetic data, its synthetic tokens artifact (``tokenization synthetic``). Both must come
from the same tokenizer (hash, vocabulary size, EOD id, dtype), or the stage stops.

Output (one artifact per experiment):

- ``blend.json``: Megatron blend for the training stage - prefixes (paths of the .bin/.idx pairs, relative to
  the working directory), normalised weights, total_tokens, num_samples, seq_length, the tokenizer's identity,
  per-source numbers and content hashes, and the held-out real blend under ``valid``;
- ``sources.parquet`` / ``sources.md``: for every source its documents, unique tokens, effective tokens,
  epochs, share of the budget and whether it is in the blend.

The arithmetic (:func:`workflow_scripts.mixes.plan.plan_mix`) is explained in
:mod:`workflow_scripts.config.mixes`; an impossible request (budget below a required pass, repetition needed
but disabled, every weight zero, ...) is an error naming the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import polars as pl

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.mixes import KINDS, MixConfig, MixSpec
from workflow_scripts.core.artifacts import ArtifactError, JobIdentity, build_artifact
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.core.identity import job_identity
from workflow_scripts.mixes.plan import SYNTHETIC, MixPlan, SourceStats, plan_mix
from workflow_scripts.mixes.reader import BLEND_FILE, BlendFile, BlendSource, BlendTokenizer, ValidBlend
from workflow_scripts.tokenization.reader import (
    CHECKED_KEYS,
    TokenizedArtifact,
    TokenizedDataset,
    read_tokenized,
)

log = logging.getLogger(__name__)

STAGE = "mix"
PARAM_KEYS = ("mixes", "experiments.{experiment}.mix")
HELDOUT_PREFIX = "heldout_"
SOURCES_PARQUET, SOURCES_MD = "sources.parquet", "sources.md"


def portable_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (as the pipeline names artifacts)."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def source_stats(dataset: TokenizedDataset, origin: str) -> SourceStats:
    return SourceStats(
        name=dataset.name,
        origin=origin,
        unique_tokens=dataset.tokens,  # type: ignore[arg-type]
        documents=dataset.documents,
        prefix=portable_path(dataset.prefix),
    )


def real_sources(real: TokenizedArtifact) -> dict[str, SourceStats]:
    return {k: source_stats(real.datasets[k], "real") for k in KINDS if k in real.datasets}


def synthetic_source(synthetic: TokenizedArtifact) -> SourceStats:
    if len(synthetic.datasets) != 1:
        raise ArtifactError(
            f"{synthetic.path}: expected one synthetic dataset, found {sorted(synthetic.datasets)}"
        )
    return source_stats(next(iter(synthetic.datasets.values())), "synthetic")


def make_blend(
    plan: MixPlan,
    real: TokenizedArtifact,
    synthetic: TokenizedArtifact | None,
    config: MixConfig,
    experiment: str | None,
) -> BlendFile:
    datasets = {**{k: real.datasets[k] for k in KINDS if k in real.datasets}}
    if synthetic is not None:
        datasets[SYNTHETIC] = next(iter(synthetic.datasets.values()))
    used = plan.blend
    total_share = sum(s.share for s in used)
    tokenizer = real.tokenizer
    blend_tokenizer = BlendTokenizer(
        **tokenizer.model_dump(),
        path=portable_path(Path(tokenizer.name)) if Path(tokenizer.name).is_dir() else None,
    )
    return BlendFile(
        experiment=experiment,
        prefixes=[s.prefix for s in used],
        weights=[s.share / total_share for s in used],
        total_tokens=plan.total_tokens,
        num_samples=plan.num_samples,
        seq_length=plan.seq_length,
        tokenizer=blend_tokenizer,
        sources=[
            BlendSource(
                name=s.name,
                origin=s.origin,
                prefix=s.prefix,
                documents=s.documents,
                unique_tokens=s.unique_tokens,
                effective_tokens=round(s.effective_tokens),
                epochs=s.epochs,
                share=s.share,
                bin_sha256=datasets[s.name].bin_hash,
                idx_sha256=datasets[s.name].idx_hash,
            )
            for s in used
        ],
        valid=valid_blend(real, config),
    )


def valid_blend(real: TokenizedArtifact, config: MixConfig) -> ValidBlend | None:
    """Held-out real data, weighted like the real part of the mix (None when the artifact has none)."""
    entries = [
        (real.datasets[HELDOUT_PREFIX + k], w)
        for k, w in config.real_weights.items()
        if w > 0 and HELDOUT_PREFIX + k in real.datasets
    ]
    if not entries:
        return None
    total = sum(w for _, w in entries)
    return ValidBlend(
        prefixes=[portable_path(d.prefix) for d, _ in entries],
        weights=[w / total for _, w in entries],
        content=[hash_value([d.bin_hash, d.idx_hash]) for d, _ in entries],
    )


def sources_table(plan: MixPlan, experiment: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "experiment": experiment or "",
                "source": s.name,
                "origin": s.origin,
                "prefix": s.prefix,
                "documents": s.documents,
                "unique_tokens": s.unique_tokens,
                "effective_tokens": round(s.effective_tokens),
                "epochs": s.epochs,
                "share": s.share,
                "in_blend": s.included,
            }
            for s in plan.sources
        ],
        schema={
            "experiment": pl.String,
            "source": pl.String,
            "origin": pl.String,
            "prefix": pl.String,
            "documents": pl.Int64,
            "unique_tokens": pl.Int64,
            "effective_tokens": pl.Int64,
            "epochs": pl.Float64,
            "share": pl.Float64,
            "in_blend": pl.Boolean,
        },
    )


def sources_markdown(plan: MixPlan, blend: BlendFile, experiment: str | None) -> str:
    tok = blend.tokenizer
    lines = [
        f"# Mix {experiment or ''}".rstrip(),
        "",
        f"Budget: {plan.total_tokens:,} tokens = {plan.num_samples:,} sequences of {plan.seq_length} tokens.",
        f"Tokenizer: `{tok.name}` (hash {tok.hash[:12]}, vocabulary {tok.vocab_size:,}, EOD id {tok.eod_id}, "
        f"{tok.dtype}).",
        "",
        *[f"- {note}" for note in plan.notes],
        "",
        "| source | origin | documents | unique tokens | effective tokens | epochs | share of budget |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in plan.sources:
        mark = "" if s.included else " (not in blend)"
        lines.append(
            f"| {s.name}{mark} | {s.origin} | {s.documents:,} | {s.unique_tokens:,} | "
            f"{round(s.effective_tokens):,} | {s.epochs:.3f} | {100 * s.share:.2f}% |"
        )
    used = plan.blend
    lines.append(
        f"| **total** | | {sum(s.documents for s in used):,} | {sum(s.unique_tokens for s in used):,} | "
        f"{plan.total_tokens:,} | | 100.00% |"
    )
    lines += [
        "",
        "Epochs = effective / unique tokens (EOD tokens included); an epoch above 1 is repetition, "
        "below 1 a random partial pass.",
        "",
    ]
    return "\n".join(lines)


def _inputs(real_dir: Path, synthetic_dir: Path | None) -> dict[str, Path]:
    inputs = {"real_tokens": real_dir}
    if synthetic_dir is not None:
        inputs["synthetic_tokens"] = synthetic_dir
    return inputs


def build_mix(
    out: Path,
    real_dir: Path,
    synthetic_dir: Path | None,
    config: MixConfig,
    spec: MixSpec,
    identity: JobIdentity,
    experiment: str | None = None,
) -> BlendFile:
    real = read_tokenized(real_dir)
    synthetic = None
    if synthetic_dir is not None:
        synthetic = read_tokenized(
            synthetic_dir,
            expect={k: getattr(real.tokenizer, k) for k in CHECKED_KEYS} | {"name": real.tokenizer.name},
        )
    where = f"experiments.{experiment}.mix" if experiment else "mix"
    plan = plan_mix(
        real_sources(real), synthetic_source(synthetic) if synthetic else None, config, spec, where
    )
    blend = make_blend(plan, real, synthetic, config, experiment)
    inputs = _inputs(real_dir, synthetic_dir)
    with build_artifact(out, identity=identity, inputs=inputs) as artifact:
        (artifact.path / BLEND_FILE).write_text(json.dumps(blend.model_dump(mode="json"), indent=2) + "\n")
        sources_table(plan, experiment).write_parquet(artifact.path / SOURCES_PARQUET)
        (artifact.path / SOURCES_MD).write_text(sources_markdown(plan, blend, experiment))
        artifact.info.update(
            tokenizer=blend.tokenizer.model_dump(),
            total_tokens=plan.total_tokens,
            num_samples=plan.num_samples,
            seq_length=plan.seq_length,
            blend_hash=blend.content_hash(),
            epochs={s.name: s.epochs for s in plan.sources},
            shares={s.name: s.share for s in plan.sources},
        )
        artifact.counts.update(
            total_tokens=plan.total_tokens,
            num_samples=plan.num_samples,
            sources=len(plan.blend),
            unique_tokens=sum(s.unique_tokens for s in plan.blend),
        )
    for s in plan.sources:
        log.info(
            "%-10s unique %12d  effective %14.0f  epochs %8.3f  share %6.2f%%",
            s.name,
            s.unique_tokens,
            s.effective_tokens,
            s.epochs,
            100 * s.share,
        )
    return blend


# --- command line -----------------------------------------------------------------------------------------


def mix_sections(config: PipelineConfig, experiment: str) -> tuple[MixConfig, MixSpec]:
    if config.mixes is None:
        raise ArtifactError("the configuration has no 'mixes' section (budget, real weights, seq_length)")
    return config.mixes, config.experiments[experiment].mix


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    mixes, spec = mix_sections(config, args.experiment)
    build_mix(
        args.out,
        args.real_tokens,
        args.synthetic_tokens,
        mixes,
        spec,
        job_identity(config, STAGE, args.experiment, _inputs(args.real_tokens, args.synthetic_tokens)),
        args.experiment,
    )


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, experiment=True)
    parser.prog = "python -m workflow_scripts.mixes"
    parser.add_argument(
        "--real-tokens", type=Path, required=True, help="real tokens artifact (tokenization real)"
    )
    parser.add_argument(
        "--synthetic-tokens",
        type=Path,
        default=None,
        help="the experiment's synthetic tokens artifact (tokenization synthetic); omit for a "
        "real-only experiment",
    )
    return run_main(run, parser, argv)
