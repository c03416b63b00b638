"""Stage report: the paper's tables, figures, correlations and a Markdown report from all evaluations.

Inputs (each an artifact directory or a folder of them):
  --evals            evaluate artifacts (scores.json; experiment and model stage from the manifest)
  --diversity        diversity artifacts (JSON of {metric: {"value", "std"}}), optional
  --train-metrics    artifacts holding per-step CSV/TSV files: step, loss, ... (pre-training, SFT), optional
  --mixes            mix artifacts (blend.json): the epochs of every source and the synthetic tokens, optional

Output artifact:
  report.md                      everything below in one page, led by a plain statement of scale
  results.parquet                tidy: experiment, model_stage, task, metric, value, stderr, selected
                                 (+ one task='mean' row per model: the headline in display units)
  headline.csv                   experiment, model_stage, selected metric per task, mean
  tables/<table>_<pt|sft>.{md,csv,tex} and tables/<table>_grid_<pt|sft>.* (two-way tables)
  paper_comparison.{md,csv}      our mean next to the paper's (tags with a paper cell)
  correlations.csv               per diversity metric, model size, stage and population (pooled distinct
                                 synthetic sets / ratio study): n, Pearson/Spearman r and p, fit, and the
                                 partial r given the synthetic epochs (see report/design.py)
  figures/*.png                  accuracy vs each diversity metric, ratio curve, training-loss curves
  metrics.json                   for `dvc metrics` (means, per-task values, correlations; NaN -> null)
  plots/<name>/<series>.csv      for `dvc plots`: accuracy_vs_<metric>/{pt,sft}.csv (score, accuracy),
                                 ratio/{pt,sft}.csv (x, accuracy), loss/<stage>/<experiment>.csv (step, loss)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import polars as pl

from workflow_scripts.config.evaluate import EvaluationConfig
from workflow_scripts.config.generate import extraction_model
from workflow_scripts.config import paper_design
from workflow_scripts.config.paper import RATIO_SHAPE
from workflow_scripts.config.report import TABLE_TITLES, TABLES, ReportConfig
from workflow_scripts.core.artifacts import InputError, build_artifact
from workflow_scripts.core.cli import load_checked_config
from workflow_scripts.core.identity import job_identity
from workflow_scripts.report import collect, design, figures, tables

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent


def _finite(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None (DVC reads metrics with a strict JSON parser)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def scale_statement(records: list[collect.EvalRecord], report: ReportConfig) -> str:
    sizes = sorted({r.num_parameters for r in records if r.num_parameters is not None})
    size_text = (
        f"Evaluated models have {sizes[0]:,} to {sizes[-1]:,} parameters."
        if len(sizes) > 1
        else f"Evaluated models have {sizes[0]:,} parameters."
        if sizes
        else "The evaluated models' sizes are not recorded."
    )
    tiny = any(n < report.tiny_parameters for n in sizes)
    if tiny or not sizes:
        return f"**Scale.** {report.caveat} {size_text}"
    return f"**Scale.** {size_text}"


def _model_kind(config: Any, name: str | None) -> str:
    if name is None or name not in config.models:
        return "none"
    return f"`{name}`: {config.models[name].describe()}"


def llm_output_section(rates: pl.DataFrame | None, examples: dict[str, list[str]] | None) -> list[str]:
    """Schema-valid JSON rates of the generator and the judge, and one generated text per experiment."""
    if rates is None or rates.is_empty():
        return []
    lines = ["## LLM output", "",
             "Share of requests answered with usable, schema-valid JSON, at the first attempt and within the "
             "configured attempts (generation: one request per document; judge: every Cluster-agent request).", "",
             tables.to_markdown(rates.rename({c: c.replace("_rate", "") for c in rates.columns if c.endswith("_rate")}),
                                3), ""]
    for experiment, texts in sorted((examples or {}).items()):
        if texts:
            quoted = "\n".join(f"> {line}" if line else ">" for line in texts[0].splitlines())
            lines += [f"First generated document of `{experiment}`:", "", quoted, ""]
    return lines


def models_statement(config: Any) -> str:
    """Which models are real and which are random, role by role: the first thing a reader must know."""
    generators = sorted({e.synthetic.generator for e in config.experiments.values() if e.synthetic})
    diversity = config.diversity
    roles = [("Generator", "; ".join(_model_kind(config, g) for g in generators) or "none"),
             ("Topic extractor", _model_kind(config, extraction_model(config) if generators else None)),
             ("Cluster-agent judge", _model_kind(config, diversity.cluster_agent.judge)),
             ("Perplexity scorer", _model_kind(config, diversity.perplexity.scorer))]
    if "perplexity_gap" not in diversity.metrics:
        roles.append(("Perplexity gap", "not computed (it needs a second real model)"))
    roles.append(("Students", f"`{config.pretrain.model}` architecture, randomly initialised and pre-trained "
                  "from scratch by this pipeline (then fine-tuned)"))
    return "**Models.** " + " ".join(f"{role}: {text}." for role, text in roles)


CORRELATION_SCHEMA = {
    "metric": pl.String, "size": pl.String, "model_stage": pl.String, "population": pl.String, "n": pl.Int64,
    "pearson_r": pl.Float64, "pearson_p": pl.Float64, "spearman_r": pl.Float64, "spearman_p": pl.Float64,
    "slope": pl.Float64, "intercept": pl.Float64, "reason": pl.String,
    "partial_r_given_synthetic_epochs": pl.Float64, "partial_p": pl.Float64, "partial_reason": pl.String,
}
CORRELATION_TEXT = (
    "As the paper draws Figure 1: one correlation per model size and stage, over experiments with distinct "
    "synthetic sets (a point is a replicate group: the mean accuracy of its runs against its set's score; a set "
    "used by several groups of one size enters once). The ratio study's runs share one synthetic set, so one "
    "score: they are correlated on their own (population 'ratio study'), never pooled. "
    "partial_r_given_synthetic_epochs is the Pearson r with the synthetic data's epochs (tokens consumed / "
    "unique tokens) partialled out of both variables, since up-weighting changes how often every source is "
    "seen; the epochs of every source are in the runs table below."
)
TINY_CORRELATIONS = (
    "**What these correlations can show here.** The students are tiny and randomly initialised: their "
    "accuracies sit at chance and differ by noise, so these r and p values show that the computation runs "
    "(grouping, replicates, epochs), not whether diversity predicts accuracy. They cannot confirm or refute "
    "the paper's claim."
)


def _tiny(records: list[collect.EvalRecord], report: ReportConfig) -> bool:
    sizes = [r.num_parameters for r in records if r.num_parameters is not None]
    return not sizes or min(sizes) < report.tiny_parameters


def _with_spread(frame: pl.DataFrame, grouped: pl.DataFrame, stage: str) -> pl.DataFrame:
    """A table with the replicates' spread of the mean (std, n) and the epochs of every source."""
    extra = ["std", "n", *design.epochs_columns(grouped)]
    if frame.is_empty() or "experiment" not in frame.columns:
        return frame
    part = grouped.filter(pl.col("model_stage") == stage).select("experiment", *extra)
    return frame.join(part, on="experiment", how="left", maintain_order="left")


def runs_section(summary: pl.DataFrame, decimals: int) -> list[str]:
    """Every replicate group: size, stage, mean accuracy with std and n, its synthetic set and epochs."""
    if summary.is_empty():
        return []
    columns = ["group", "size", "model_stage", "synthetic_set", "ratio_only", collect.MEAN_TASK, "std", "n",
               "synthetic_tokens", *design.epochs_columns(summary), "runs"]
    return ["## Runs: replicates and epochs", "",
            "Mean accuracy of each experiment's runs (its replicates: one per seed), their standard deviation "
            "(ddof 1; empty for a single run) and n, the synthetic set it trained on, and the epochs of every "
            "source of its mix (tokens consumed / unique tokens; averaged over replicates).", "",
            tables.to_markdown(summary.select([c for c in columns if c in summary.columns]), decimals), ""]


def build(
    records: list[collect.EvalRecord],
    diversity: pl.DataFrame,
    curves: pl.DataFrame,
    report: ReportConfig,
    evaluation: EvaluationConfig,
    out: Path,
    experiments: list[str],
    models: str = "",
    llm_output: pl.DataFrame | None = None,
    examples: dict[str, list[str]] | None = None,
    runs: pl.DataFrame | None = None,
    paper_factors: dict[tuple[str, str, str, str], list[str]] | None = None,
) -> dict[str, int]:
    """Write every output into ``out``; returns counts for the manifest. ``runs`` is the design of every run
    (:func:`design.experiment_design`: replicate group, size, synthetic set, epochs); without it every
    experiment is its own group and set."""
    if not records:
        raise InputError("no evaluate artifacts found in --evals")
    unknown = sorted({r.experiment for r in records} - set(experiments))
    if unknown:
        raise InputError(f"evaluations of experiments not in the configuration: {unknown}")
    untagged = sorted(set(report.experiments) - set(experiments))
    if untagged:
        raise InputError(f"report.experiments names experiments not in the configuration: {untagged}")
    records = sorted(
        records, key=lambda r: (experiments.index(r.experiment), collect.STAGE_ORDER.index(r.model_stage))
    )
    decimals = report.decimals
    tidy = collect.tidy(records, evaluation)
    tidy.write_parquet(out / "results.parquet")
    headline = collect.headline(records, evaluation)
    headline.write_csv(out / "headline.csv")
    runs = runs if runs is not None else design.default_design(records, report)
    summary = design.replicate_summary(headline, runs)
    grouped = summary.rename({"group": "experiment"})
    accuracy_label = f"mean of {', '.join(evaluation.mean_tasks())} (%)"

    sections: list[str] = [
        "# Synthetic-data diversity and downstream accuracy: results",
        "",
        scale_statement(records, report),
        "",
    ]
    if models:
        sections += [models, ""]
    if report.note:
        sections += [report.note, ""]
    sections += [
        "## Headline",
        "",
        "Selected metric per task: "
        + ", ".join(_describe(t, evaluation) for t in evaluation.tasks)
        + f". Mean = unweighted mean of {', '.join(evaluation.mean_tasks())}.",
        "",
        tables.to_markdown(headline, decimals),
    ]

    written_tables = 0
    for table in TABLES:
        if not report.tags(table):
            continue
        sections += [f"## {TABLE_TITLES[table]}", ""]
        for stage in ("pt", "sft"):
            frame = _with_spread(tables.table_frame(grouped, report, evaluation, table, stage), grouped, stage)
            caption = f"{TABLE_TITLES[table]} ({stage.upper()} models)"
            tables.write_table(frame, out / "tables", f"{table}_{stage}", decimals, caption)
            sections += [f"### {stage.upper()}", "", tables.to_markdown(frame, decimals)]
            written_tables += 1
            grid = tables.grid_frame(frame, table)
            if grid is not None:
                tables.write_table(
                    grid, out / "tables", f"{table}_grid_{stage}", decimals, f"{caption}: mean, paper layout"
                )
                sections += [
                    f"Mean, in the paper's layout ({stage.upper()}):",
                    "",
                    tables.to_markdown(grid, decimals),
                ]
        if table == "ratio":
            sections += [f"The paper reports only the shape: {RATIO_SHAPE}.", ""]

    comparison = tables.paper_comparison(grouped, report, evaluation, paper_factors)  # replicates: their mean
    comparison.write_csv(out / "paper_comparison.csv")
    (out / "paper_comparison.md").write_text(tables.to_markdown(comparison, decimals))
    sections += ["## Comparison with the paper", ""]
    if comparison.is_empty():
        sections += ["No experiment is tagged with a paper cell (report.experiments.<name>.paper).", ""]
    else:
        if not comparison["same_tasks_and_metrics"].all():
            sections += [
                "Our mean is over different tasks or metrics than the paper's 8 tasks, so the "
                "difference is not a like-for-like comparison.",
                "",
            ]
        sections += [tables.to_markdown(comparison, decimals)]

    # Diversity vs accuracy (Figure 1 and one figure per baseline metric).
    plots = out / "plots"
    plots.mkdir()
    correlation_rows = []
    figure_lines: list[str] = []
    metrics_present = sorted(set(diversity["metric"].to_list())) if diversity.height else []
    baselines = (
        report.baseline_metrics
        if report.baseline_metrics is not None
        else [m for m in metrics_present if m != report.llm_cluster_metric]
    )
    for metric in [report.llm_cluster_metric, *baselines]:
        points = design.correlation_points(summary, diversity, metric)
        if points.is_empty():
            if metric == report.llm_cluster_metric and diversity.height:
                log.warning("no %s score among the diversity inputs: Figure 1 skipped", metric)
            continue
        rows = design.correlations(points)
        correlation_rows += [{"metric": metric, **row} for row in rows]
        pooled = points.filter(pl.col("population") == design.POOLED)
        for stage in dict.fromkeys(pooled["model_stage"].to_list()):  # one file per series (DVC)
            pooled.filter(pl.col("model_stage") == stage).write_csv(
                _mkdir(plots / f"accuracy_vs_{_safe(metric)}") / f"{stage}.csv"
            )
        stem = (
            f"figure1_accuracy_vs_{_safe(metric)}"
            if metric == report.llm_cluster_metric
            else f"accuracy_vs_{_safe(metric)}"
        )
        title = f"Accuracy vs {metric}" + (
            " (LLM cluster-agent; the paper's Figure 1)" if metric == report.llm_cluster_metric else ""
        )
        path = figures.diversity_figure(
            points, design.fits_by_panel(rows), metric, title, accuracy_label, out / "figures" / f"{stem}.png"
        )
        if path is not None:
            figure_lines.append(f"![{title}](figures/{path.name})")
    correlation_frame = pl.DataFrame(correlation_rows, schema=CORRELATION_SCHEMA)
    correlation_frame.write_csv(out / "correlations.csv")
    sections += ["## Diversity and accuracy", "", CORRELATION_TEXT, ""]
    if _tiny(records, report):
        sections += [TINY_CORRELATIONS, ""]
    if correlation_frame.is_empty():
        sections += [
            "No diversity scores were given (--diversity), or none matches an evaluated experiment.",
            "",
        ]
    else:
        sections += [tables.to_markdown(correlation_frame, 3), *figure_lines, ""]
    sections += runs_section(summary, decimals)

    ratio = _ratio_points(headline, report)
    if ratio.height:
        for stage in sorted(set(ratio["model_stage"].to_list())):
            ratio.filter(pl.col("model_stage") == stage).write_csv(_mkdir(plots / "ratio") / f"{stage}.csv")
        path = figures.ratio_curve(ratio, accuracy_label, out / "figures" / "ratio.png")
        sections += ["## Ratio study curve", "", f"![Ratio study](figures/{path.name})" if path else "", ""]

    sections += llm_output_section(llm_output, examples)
    sections += ["## Training loss", ""]
    for stage in sorted(set(curves["stage"].to_list())) if curves.height else []:
        path = figures.loss_curves(curves, stage, out / "figures" / f"loss_{_safe(stage)}.png")
        for experiment in sorted(set(curves.filter(pl.col("stage") == stage)["experiment"].to_list())):
            (
                curves.filter((pl.col("stage") == stage) & (pl.col("experiment") == experiment))
                .select("step", "loss")
                .sort("step")
                .write_csv(_mkdir(plots / "loss" / _safe(stage)) / f"{_safe(experiment)}.csv")
            )
        if path is not None:
            sections.append(f"![Training loss ({stage})](figures/{path.name})")
    if not curves.height:
        sections.append("No training-metrics CSVs were given (--train-metrics).")
    sections += ["", "## Inputs", ""] + [
        f"- {r.experiment} ({r.model_stage}): `{'/'.join(r.path.parts[-3:])}`" for r in records
    ]

    metrics = {
        "mean": {
            stage: {
                r["experiment"]: r[collect.MEAN_TASK]
                for r in headline.iter_rows(named=True)
                if r["model_stage"] == stage
            }
            for stage in ("pt", "sft")
        },
        "tasks": {
            stage: {
                r["experiment"]: {t: r[t] for t in evaluation.tasks}
                for r in headline.iter_rows(named=True)
                if r["model_stage"] == stage
            }
            for stage in ("pt", "sft")
        },
        "correlation": {  # the pooled correlation of the first model size (the others: correlation_by_size)
            stage: {
                row["metric"]: {k: row[k] for k in ("n", "pearson_r", "spearman_r")}
                for row in reversed(correlation_rows)
                if row["model_stage"] == stage and row["population"] == design.POOLED
            }
            for stage in ("pt", "sft")
        },
        "correlation_by_size": {
            f"{row['size']}/{row['model_stage']}/{row['population']}/{row['metric']}": {
                k: row[k] for k in ("n", "pearson_r", "spearman_r", "partial_r_given_synthetic_epochs")
            }
            for row in correlation_rows
        },
    }
    (out / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text("\n".join(sections).rstrip() + "\n")
    return {
        "models": len(records),
        "tables": written_tables,
        "figures": len(list((out / "figures").glob("*.png"))) if (out / "figures").exists() else 0,
        "correlations": correlation_frame.height,
    }


def _describe(task: str, evaluation: EvaluationConfig) -> str:
    scoring = evaluation.scoring[task]
    direction = "higher" if scoring.higher_is_better else "lower"
    return f"{task}: {scoring.metric} ({direction} is better{', in %' if scoring.percent else ''})"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ratio_points(headline: pl.DataFrame, report: ReportConfig) -> pl.DataFrame:
    tags = {name: tag.x for name, tag in report.tags("ratio")}
    rows = [
        {
            "x": tags[r["experiment"]],
            "model_stage": r["model_stage"],
            "accuracy": r[collect.MEAN_TASK],
            "experiment": r["experiment"],
        }
        for r in headline.iter_rows(named=True)
        if r["experiment"] in tags
    ]
    return pl.DataFrame(
        rows,
        schema={"x": pl.Float64, "model_stage": pl.String, "accuracy": pl.Float64, "experiment": pl.String},
    ).sort("model_stage", "x")


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    report, evaluation = config.report, config.evaluation
    evals, diversity_paths, curve_paths = (
        sorted(set(paths or [])) for paths in (args.evals, args.diversity, args.train_metrics)
    )
    mix_paths = sorted(set(args.mixes or []))
    records = collect.load_evals(evals)
    diversity = collect.load_diversity(diversity_paths)
    curves = collect.load_curves(curve_paths)
    runs = design.experiment_design(config, design.load_mixes(mix_paths))
    inputs = {f"evals_{i}": p for i, p in enumerate(evals)}
    inputs.update({f"mixes_{i}": p for i, p in enumerate(mix_paths)})
    inputs.update({f"diversity_{i}": p for i, p in enumerate(diversity_paths)})
    inputs.update({f"train_metrics_{i}": p for i, p in enumerate(curve_paths)})
    with build_artifact(args.out, identity=job_identity(config, "report", inputs=inputs), inputs=inputs) as artifact:
        counts = build(
            records, diversity, curves, report, evaluation, artifact.path, list(config.experiments),
            models_statement(config), *collect.load_llm_output(diversity_paths), runs=runs,
            paper_factors=paper_design.like_for_like(config),
        )
        artifact.counts.update(counts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--evals",
        type=Path,
        nargs="+",
        action="extend",
        required=True,
        help="evaluate artifacts, or folders holding them (repeatable; --evals-<name> PATH too)",
    )
    parser.add_argument(
        "--diversity",
        type=Path,
        nargs="*",
        action="extend",
        default=[],
        help="diversity artifacts, or folders holding them (repeatable; --diversity-<name> too)",
    )
    parser.add_argument(
        "--mixes",
        type=Path,
        nargs="*",
        action="extend",
        default=[],
        help="mix artifacts, or folders holding them: the epochs of every source and the synthetic tokens "
        "(repeatable; --mixes-<name> too)",
    )
    parser.add_argument(
        "--train-metrics",
        type=Path,
        nargs="*",
        action="extend",
        default=[],
        help="artifacts (or folders of them) with per-step CSVs: step, loss, ... "
        "(repeatable; --train-metrics-<name> too)",
    )
