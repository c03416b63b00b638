"""Which runs a correlation may pool, as the paper draws Figure 1: per model size and stage, one point per distinct
synthetic set, replicates averaged, the ratio study on its own.

The design of every evaluated run: its replicate group (an experiment and the runs its ``seeds`` made), the
student's size, the synthetic set it trained on (its diversity score is that set's), whether it belongs only to
the ratio study (whose runs share one synthetic set and so one score: pooled, they would count one score many
times), the synthetic tokens of its set and the epochs of every source of its mix (tokens consumed / unique
tokens, from the mix artifact). Replicates are reported as mean, standard deviation (ddof 1) and n.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import polars as pl

from workflow_scripts.report import collect
from workflow_scripts.report.stats import Correlation, correlate, partial_correlation

DESIGN_SCHEMA = {"experiment": pl.String, "group": pl.String, "size": pl.String, "synthetic_set": pl.String,
                 "ratio_only": pl.Boolean, "in_ratio": pl.Boolean, "synthetic_tokens": pl.Float64}
POOLED, RATIO = "pooled", "ratio study"
EPOCHS_PREFIX = "epochs_"
COVARIATE = "epochs_synthetic"


def load_mixes(paths: Iterable[Any]) -> pl.DataFrame:
    """experiment, synthetic_tokens (unique tokens of its synthetic sources), epochs_<source> of every source."""
    from workflow_scripts.mixes.reader import read_blend

    rows = []
    for path, manifest in collect.find_artifacts(paths, ("mix",)):
        blend = read_blend(path)
        epochs = dict(manifest.info.get("epochs") or {})
        epochs.update({s.name: s.epochs for s in blend.sources})
        synthetic = [s for s in blend.sources if s.origin != "real"]
        row: dict[str, Any] = {"experiment": manifest.experiment or blend.experiment,
                               "synthetic_tokens": float(sum(s.unique_tokens for s in synthetic)) if synthetic
                               else None}
        row.update({f"{EPOCHS_PREFIX}{name}": float(value) for name, value in epochs.items()})
        if synthetic and COVARIATE not in row:  # all synthetic sources together
            unique = max(sum(s.unique_tokens for s in synthetic), 1)
            row[COVARIATE] = sum(s.effective_tokens for s in synthetic) / unique
        rows.append(row)
    if not rows:
        return pl.DataFrame(schema={"experiment": pl.String, "synthetic_tokens": pl.Float64})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return pl.DataFrame([{c: row.get(c) for c in columns} for row in rows],
                        schema={c: pl.String if c == "experiment" else pl.Float64 for c in columns})


def ratio_only(report: Any, experiment: str) -> bool:
    tables = {tag.table for tag in report.experiments.get(experiment, [])}
    return tables == {"ratio"}


def in_ratio(report: Any, experiment: str) -> bool:
    return any(tag.table == "ratio" for tag in report.experiments.get(experiment, []))


def experiment_design(config: Any, mixes: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per experiment of the configuration (see the module docstring), epochs columns from ``mixes``."""
    rows = []
    for name, spec in config.experiments.items():
        group = getattr(spec, "replicate_of", None) or name
        size = config.model_size(name) if hasattr(config, "model_size") else config.pretrain.model
        # without a set of its own (real data only) a run is matched to scores under its group's name, if any
        synthetic_set = (config.synthetic_set(name) if hasattr(config, "synthetic_set") else None) or group
        rows.append({"experiment": name, "group": group, "size": size, "synthetic_set": synthetic_set,
                     "ratio_only": ratio_only(config.report, group), "in_ratio": in_ratio(config.report, group),
                     "synthetic_tokens": None})
    design = pl.DataFrame(rows, schema=DESIGN_SCHEMA)
    return with_mixes(design, mixes)


def default_design(records: list[collect.EvalRecord], report: Any) -> pl.DataFrame:
    """Without a configuration's design: every experiment its own group and set, sized by its parameters."""
    rows = {}
    for record in records:
        size = f"{record.num_parameters:,} parameters" if record.num_parameters else "unknown size"
        rows[record.experiment] = {"experiment": record.experiment, "group": record.experiment, "size": size,
                                   "synthetic_set": record.experiment,
                                   "ratio_only": ratio_only(report, record.experiment),
                                   "in_ratio": in_ratio(report, record.experiment), "synthetic_tokens": None}
    return pl.DataFrame(list(rows.values()), schema=DESIGN_SCHEMA)


def with_mixes(design: pl.DataFrame, mixes: pl.DataFrame | None) -> pl.DataFrame:
    if mixes is None or mixes.is_empty():
        return design
    return design.drop("synthetic_tokens").join(mixes, on="experiment", how="left").select(
        *DESIGN_SCHEMA, *[c for c in mixes.columns if c.startswith(EPOCHS_PREFIX)])


def epochs_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(EPOCHS_PREFIX)]


def replicate_summary(headline: pl.DataFrame, design: pl.DataFrame) -> pl.DataFrame:
    """Per (group, model_stage): size, synthetic set, ratio_only, the mean accuracy of its runs with its standard
    deviation and n, synthetic tokens and mean epochs of every source; plus every task's mean."""
    tasks = [c for c in headline.columns if c not in ("experiment", "model_stage")]
    joined = headline.join(design, on="experiment", how="inner")
    epochs = epochs_columns(design)
    return (
        joined.group_by("group", "model_stage", maintain_order=True)
        .agg(
            pl.col("size").first(), pl.col("synthetic_set").first(), pl.col("ratio_only").first(),
            pl.col("in_ratio").first(),
            *[pl.col(t).mean() for t in tasks],
            pl.col(collect.MEAN_TASK).std(ddof=1).alias("std"), pl.len().alias("n"),
            pl.col("experiment").str.join(", ").alias("runs"),
            pl.col("synthetic_tokens").mean(), *[pl.col(c).mean() for c in epochs],
        )
        .with_columns(pl.col("n").cast(pl.Int64))
    )


def correlation_points(summary: pl.DataFrame, diversity: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The points of one diversity metric: a replicate group's mean accuracy against its synthetic set's score,
    tagged pooled or ratio study. Pooled points are one per (size, stage, synthetic set): a later group on a set
    already pooled (the same data at another mix) is left out, so no score counts twice. A run tagged in the ratio
    study and in another table (the ratio study's 20B point is Table 7's run) is in both populations."""
    scores = diversity.filter(pl.col("metric") == metric).select(
        pl.col("experiment").alias("synthetic_set"), pl.col("value").alias("score"),
        pl.col("std").alias("score_std"))
    points = (summary.join(scores, on="synthetic_set", how="inner")
              .rename({"group": "experiment", collect.MEAN_TASK: "accuracy"}))
    pooled = points.filter(~pl.col("ratio_only")).unique(
        subset=["size", "model_stage", "synthetic_set"], keep="first", maintain_order=True
    ).with_columns(pl.lit(POOLED).alias("population"))
    ratio = points.filter(pl.col("in_ratio")).with_columns(pl.lit(RATIO).alias("population"))
    keep = ["experiment", "model_stage", "size", "population", "synthetic_set", "score", "score_std",
            "accuracy", "std", "n", "synthetic_tokens", *epochs_columns(summary)]
    return pl.concat([pooled.select(keep), ratio.select(keep)])


def correlations(points: pl.DataFrame) -> list[dict[str, Any]]:
    """Per (size, stage, population): Pearson/Spearman of accuracy on score, and the partial Pearson r given the
    synthetic epochs (when they vary)."""
    rows = []
    for (size, stage, population), part in _groups(points):
        fit = correlate(part["score"].to_list(), part["accuracy"].to_list())
        partial_r, partial_p, partial_reason = math.nan, math.nan, "no synthetic epochs recorded"
        if COVARIATE in part.columns and part[COVARIATE].null_count() == 0:
            partial_r, partial_p, partial_reason = partial_correlation(
                part["score"].to_list(), part["accuracy"].to_list(), part[COVARIATE].to_list())
        rows.append({"size": size, "model_stage": stage, "population": population, **fit.as_dict(),
                     "partial_r_given_synthetic_epochs": partial_r, "partial_p": partial_p,
                     "partial_reason": partial_reason})
    return rows


def _groups(points: pl.DataFrame) -> list[tuple[tuple[str, str, str], pl.DataFrame]]:
    keys = points.select("size", "model_stage", "population").unique(maintain_order=True)
    order = {POOLED: 0, RATIO: 1}
    ordered = sorted(keys.iter_rows(), key=lambda k: (order.get(k[2], 2), k[0], collect.STAGE_ORDER.index(k[1])))
    return [((size, stage, population), points.filter((pl.col("size") == size) & (pl.col("model_stage") == stage)
                                                      & (pl.col("population") == population)))
            for size, stage, population in ordered]


def fits_by_panel(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Correlation]:
    """The pooled fit of every (size, stage) panel, for the figure."""
    fields = Correlation.__dataclass_fields__
    return {(r["size"], r["model_stage"]): Correlation(**{k: r[k] for k in fields})
            for r in rows if r["population"] == POOLED}
