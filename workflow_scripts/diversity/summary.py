"""Stage: one table of every diversity metric across experiments, with bootstrap error bars.

Reads the ``diversity`` artifacts given with ``--diversity DIR [DIR ...]`` (experiment names come
from their manifests) and writes:

- ``summary.parquet``: long format, one row per (experiment, metric): value (mean over seeds), std
  (sample std over seeds), seeds, subset_size, per_seed (JSON text);
- ``summary.md``: experiments x metrics, each cell ``mean ± std``; under it, when the Cluster-agent ran, what
  its judge's answers cost (tokens, the share of prompt tokens from the provider's prompt cache, dollars at
  the judge's list price, as if every answer were paid; 0 for a local model).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import polars as pl

from workflow_scripts.config.diversity import METRICS
from workflow_scripts.core.artifacts import ArtifactError, build_artifact, read_manifest
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import job_identity

log = logging.getLogger(__name__)

STAGE = "diversity"  # the stage whose artifacts are summarised
SUMMARY_STAGE = "diversity_summary"
SCHEMA = {"experiment": pl.String, "metric": pl.String, "value": pl.Float64, "std": pl.Float64,
          "seeds": pl.Int64, "subset_size": pl.Int64, "per_seed": pl.String}


def collect(artifacts: list[Path]) -> pl.DataFrame:
    rows = []
    seen: dict[str, Path] = {}
    for directory in artifacts:
        manifest = read_manifest(directory, stage=STAGE)
        experiment = manifest.experiment or directory.name
        if experiment in seen:
            raise ArtifactError(f"{directory} and {seen[experiment]} both hold experiment {experiment!r}")
        seen[experiment] = directory
        scores = json.loads((directory / "scores.json").read_text())
        for metric, result in scores.items():
            details = result.get("details", {})
            rows.append({"experiment": experiment, "metric": metric, "value": _number(result.get("value")),
                         "std": _number(details.get("std")), "seeds": len(details.get("seeds", [])),
                         "subset_size": details.get("subset_size"),
                         "per_seed": json.dumps(details.get("per_seed", {}), sort_keys=True)})
    order = {m: i for i, m in enumerate(METRICS)}
    table = pl.DataFrame(rows, schema=SCHEMA)
    return table.with_columns(pl.col("metric").replace_strict(order, default=len(order)).alias("_order")) \
        .sort("experiment", "_order").drop("_order")


COST_KEYS = ("judge_prompt_tokens", "judge_cached_prompt_share", "judge_completion_tokens", "judge_cost_usd")


def judge_costs(artifacts: list[Path]) -> dict[str, dict[str, float | int]]:
    """experiment -> the judge's token and dollar counts from its diversity manifest (when it has them)."""
    costs = {}
    for directory in artifacts:
        manifest = read_manifest(directory, stage=STAGE)
        if all(key in manifest.counts for key in COST_KEYS):
            costs[manifest.experiment or directory.name] = {key: manifest.counts[key] for key in COST_KEYS}
    return costs


def cost_markdown(costs: dict[str, dict[str, float | int]]) -> str:
    if not costs:
        return ""
    lines = ["\n## Cluster-agent judge cost\n", "| experiment | prompt tokens | cached share | completion tokens | "
             "USD |", "|---|---|---|---|---|"]
    for experiment, c in costs.items():
        lines.append(f"| {experiment} | {c['judge_prompt_tokens']:,} | {c['judge_cached_prompt_share']:.1%} | "
                     f"{c['judge_completion_tokens']:,} | {c['judge_cost_usd']:.2f} |")
    return "\n".join(lines) + "\n"


def _number(value) -> float | None:
    return None if value is None else float(value)


def _cell(value: float | None, std: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{value:.4g}"
    return text if not std else f"{text} ± {std:.2g}"


LOCAL_MODELS_NOTE = (
    "\n**Scale.** The judge and scorer models here are tiny, randomly initialised local models: these scores "
    "show that the machinery works, not the paper's science.\n"
)


REAL_MODELS_NOTE = (
    "\n**Models.** {roles}. These are real measurements of the generated text by these models; at a scale "
    "other than the paper's, compare the experiments with each other, not with the paper's numbers.\n"
)


def models_note(config) -> str:
    """What the scores can mean, from the models behind them: random local models, or real ones."""
    roles = config.diversity.model_names()
    if any(config.models[name].local is not None for name in roles.values()):
        return LOCAL_MODELS_NOTE
    if not roles:
        return ""
    described = [f"{role}: `{name}`, {config.models[name].describe()}" for role, name in roles.items()]
    return REAL_MODELS_NOTE.format(roles="; ".join(described))


def markdown(table: pl.DataFrame, note_on_models: str = "") -> str:
    """The experiments x metrics table; ``note_on_models`` (see :func:`models_note`) goes under it."""
    metrics = [m for m in METRICS if m in set(table["metric"])]
    metrics += sorted(set(table["metric"]) - set(metrics))
    experiments = list(dict.fromkeys(table["experiment"]))
    cells = {(r["experiment"], r["metric"]): _cell(r["value"], r["std"]) for r in table.iter_rows(named=True)}
    lines = ["| experiment | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for experiment in experiments:
        lines.append(f"| {experiment} | " + " | ".join(cells.get((experiment, m), "") for m in metrics) + " |")
    seeds = sorted(set(table["seeds"].drop_nulls().to_list()))
    note = (f"\nValues: mean over bootstrap seeds ± sample standard deviation (seeds per cell: "
            f"{', '.join(map(str, seeds))}).\n")
    return "# Diversity metrics\n\n" + "\n".join(lines) + "\n" + note + note_on_models


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    artifacts = list(dict.fromkeys(args.diversity))
    table = collect(artifacts)
    # named like the pipeline's inputs (diversity_<experiment>), so the manifest can be checked against the plan
    inputs = {f"diversity_{read_manifest(path).experiment}": path for path in artifacts}
    identity = job_identity(config, SUMMARY_STAGE, inputs=inputs)
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        table.write_parquet(artifact.path / "summary.parquet")
        (artifact.path / "summary.md").write_text(markdown(table, models_note(config))
                                                  + cost_markdown(judge_costs(artifacts)))
        artifact.counts.update(experiments=table["experiment"].n_unique(), rows=table.height)
        artifact.info["experiments"] = sorted(set(table["experiment"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.diversity.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--diversity", type=Path, nargs="+", action="extend", required=True,
                        help="diversity artifact directories (one per experiment; repeatable; "
                        "--diversity-<experiment> DIR is accepted too)")
    return parser


def normalise_argv(argv: list[str]) -> list[str]:
    """Accept ``--diversity-<experiment> DIR`` (one flag per input, as pipeline commands are built) too."""
    out = []
    for word in argv:
        if word.startswith("--diversity-") or word.startswith("--diversity_"):
            word = "--diversity"
        out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    import sys

    return run_main(run, build_parser(), normalise_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
