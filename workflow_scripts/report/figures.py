"""Figures (matplotlib, PNG): accuracy vs diversity scores (the paper's Figure 1), the ratio-study curve and
training-loss curves. Each function returns the path it wrote, or None when there is nothing to draw."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from workflow_scripts.report.stats import Correlation

STAGE_TITLES = {"pt": "pre-trained", "sft": "after SFT"}
DPI = 120


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_with_fit(
    points: pl.DataFrame,
    correlations: dict[str, Correlation],
    metric: str,
    title: str,
    y_label: str,
    path: Path,
) -> Path | None:
    """One panel per model stage: accuracy (y) against ``metric`` (x), a least-squares line, r and n.

    ``points``: experiment, model_stage, score, accuracy.
    """
    stages = [s for s in ("pt", "sft") if s in set(points["model_stage"].to_list())]
    if not stages:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 4.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        part = points.filter(pl.col("model_stage") == stage).sort("score")
        xs, ys = part["score"].to_list(), part["accuracy"].to_list()
        ax.scatter(xs, ys, color="tab:blue" if stage == "pt" else "tab:orange", zorder=3)
        for name, x, y in zip(part["experiment"].to_list(), xs, ys):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fit = correlations.get(stage)
        if fit is not None and not math.isnan(fit.slope) and len(xs) >= 2:
            lo, hi = min(xs), max(xs)
            ax.plot(
                [lo, hi],
                [fit.intercept + fit.slope * lo, fit.intercept + fit.slope * hi],
                color="gray",
                linestyle="--",
                zorder=2,
            )
        ax.set_title(f"{STAGE_TITLES[stage]}\n{fit.label() if fit else ''}", fontsize=9)
        ax.set_xlabel(metric)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def ratio_curve(points: pl.DataFrame, y_label: str, path: Path) -> Path | None:
    """Mean accuracy against effective synthetic tokens (x), one line per model stage.

    ``points``: x, model_stage, accuracy, experiment.
    """
    if points.is_empty():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in ("pt", "sft"):
        part = points.filter(pl.col("model_stage") == stage).sort("x")
        if part.height:
            ax.plot(part["x"].to_list(), part["accuracy"].to_list(), marker="o", label=STAGE_TITLES[stage])
    ax.set_xlabel("effective synthetic tokens (as tagged, e.g. billions)")
    ax.set_ylabel(y_label)
    ax.set_title("Ratio study")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def loss_curves(curves: pl.DataFrame, stage: str, path: Path) -> Path | None:
    """Training loss against step, one line per experiment (``curves``: experiment, stage, step, loss)."""
    part = curves.filter(pl.col("stage") == stage)
    if part.is_empty():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for experiment in sorted(set(part["experiment"].to_list())):
        series = part.filter(pl.col("experiment") == experiment).sort("step")
        ax.plot(series["step"].to_list(), series["loss"].to_list(), label=experiment, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Training loss ({stage})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def diversity_figure(
    points: pl.DataFrame,
    fits: dict[tuple[str, str], Correlation],
    metric: str,
    title: str,
    y_label: str,
    path: Path,
) -> Path | None:
    """The paper's Figure 1 layout: one panel per (model size, stage); a point per distinct synthetic set (mean
    accuracy of its replicates, error bars: their standard deviation and the score's bootstrap spread), its area
    proportional to the set's synthetic tokens, the pooled least-squares line with r and n. Ratio-study runs
    (one synthetic set) are drawn as open triangles and left out of the fit.

    ``points``: experiment, model_stage, size, population, score, score_std, accuracy, std, n, synthetic_tokens.
    """
    if points.is_empty():
        return None
    sizes = list(dict.fromkeys(points["size"].to_list()))
    stages = [s for s in ("pt", "sft") if s in set(points["model_stage"].to_list())]
    plt = _pyplot()
    fig, axes = plt.subplots(len(sizes), len(stages), figsize=(5.4 * len(stages), 4.4 * len(sizes)), squeeze=False)
    tokens = [t for t in points["synthetic_tokens"].to_list() if t is not None and t > 0]
    largest = max(tokens) if tokens else None
    for row, size in enumerate(sizes):
        for column, stage in enumerate(stages):
            ax = axes[row][column]
            part = points.filter((pl.col("size") == size) & (pl.col("model_stage") == stage))
            for population, style in (("pooled", {"marker": "o", "color": "tab:blue" if stage == "pt" else
                                                  "tab:orange"}),
                                      ("ratio study", {"marker": "^", "color": "gray", "facecolors": "none"})):
                group = part.filter(pl.col("population") == population).sort("score")
                if group.is_empty():
                    continue
                xs, ys = group["score"].to_list(), group["accuracy"].to_list()
                areas = [40.0 if largest is None or t is None else 30.0 + 270.0 * t / largest
                         for t in group["synthetic_tokens"].to_list()]
                ax.errorbar(xs, ys, yerr=[s or 0.0 for s in group["std"].to_list()],
                            xerr=[s or 0.0 for s in group["score_std"].to_list()], fmt="none",
                            ecolor="lightgray", zorder=2)
                edge = style.pop("color")
                ax.scatter(xs, ys, s=areas, edgecolors=edge, c=edge if "facecolors" not in style else "none",
                           marker=style["marker"], zorder=3,
                           label="distinct synthetic sets" if population == "pooled" else
                           "ratio study (one set, not in the fit)")
                for name, x, y, n in zip(group["experiment"].to_list(), xs, ys, group["n"].to_list()):
                    ax.annotate(name + (f" (n={n})" if n > 1 else ""), (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
            fit = fits.get((size, stage))
            pooled = part.filter(pl.col("population") == "pooled")
            if fit is not None and not math.isnan(fit.slope) and pooled.height >= 2:
                lo, hi = min(pooled["score"].to_list()), max(pooled["score"].to_list())
                ax.plot([lo, hi], [fit.intercept + fit.slope * lo, fit.intercept + fit.slope * hi], color="gray",
                        linestyle="--", zorder=1)
            ax.set_title(f"{size}, {STAGE_TITLES[stage]}\n{fit.label() if fit else 'no pooled fit'}", fontsize=9)
            ax.set_xlabel(metric)
            ax.set_ylabel(y_label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title}\npoint area: synthetic tokens of the set; error bars: std over replicate runs (y) "
                 "and over bootstrap seeds (x)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
