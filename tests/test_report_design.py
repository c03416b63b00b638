"""Correlations and Figure 1 as the paper draws them, on small hand-made result tables: per model size and stage,
one point per distinct synthetic set, replicates as mean and spread, the ratio study on its own, epochs as a
covariate."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from workflow_scripts.report import design
from workflow_scripts.report.collect import EvalRecord
from workflow_scripts.report.stats import correlate, partial_correlation

SCORES = {"a": 2.0, "b": 3.0, "c": 3.5, "d": 4.5, "tsp": 5.0}            # one score per synthetic set
SMALL = {"a": 50.0, "b": 50.6, "c": 50.9, "d": 51.7, "tsp": 52.0}        # 350m accuracy per set
LARGE = {s: v + 4.0 + 0.1 * i for i, (s, v) in enumerate(SMALL.items()) if s != "tsp"}  # 1.4b: four sets
REPLICATES = {"a": 49.0, "a-seed2": 50.0, "a-seed3": 51.0}                # mean 50.0 = SMALL["a"]
RATIO = {"ratio_1b": 51.0, "ratio_20b": 52.5, "ratio_50b": 51.2}          # all on the tsp set
EPOCHS = {"a": 4.0, "b": 2.0, "c": 1.5, "d": 1.0, "tsp": 0.5}


def runs() -> tuple[pl.DataFrame, pl.DataFrame]:
    """(headline, design) of the hand-made grid: PT only; SFT = PT + 1."""
    rows, plan = [], []

    def add(experiment, group, size, synthetic_set, accuracy, ratio_only=False, epochs=1.0):
        for stage, shift in (("pt", 0.0), ("sft", 1.0)):
            rows.append({"experiment": experiment, "model_stage": stage, "acc": accuracy + shift,
                         "mean": accuracy + shift})
        plan.append({"experiment": experiment, "group": group, "size": size, "synthetic_set": synthetic_set,
                     "ratio_only": ratio_only, "in_ratio": ratio_only or experiment == "tsp",
                     "synthetic_tokens": 1e9 * SCORES[synthetic_set],
                     "epochs_web": 0.8, "epochs_synthetic": epochs})

    for name, accuracy in REPLICATES.items():
        add(name, "a", "350m", "a", accuracy, epochs=EPOCHS["a"])
    for name in ("b", "c", "d", "tsp"):
        add(name, name, "350m", name, SMALL[name], epochs=EPOCHS[name])
    add("b_other_mix", "b_other_mix", "350m", "b", 40.0, epochs=9.0)  # the b set again: must not count twice
    for name, accuracy in LARGE.items():
        add(f"{name}_1.4b", f"{name}_1.4b", "1.4b", name, accuracy, epochs=EPOCHS[name])
    for name, accuracy in RATIO.items():
        add(name, name, "350m", "tsp", accuracy, ratio_only=True, epochs=float(len(name)))
    schema = {**design.DESIGN_SCHEMA, "epochs_web": pl.Float64, "epochs_synthetic": pl.Float64}
    return pl.DataFrame(rows), pl.DataFrame(plan, schema=schema)


def diversity() -> pl.DataFrame:
    return pl.DataFrame({"experiment": list(SCORES), "metric": ["cluster_agent"] * len(SCORES),
                         "value": list(SCORES.values()), "std": [0.1] * len(SCORES)})


def test_replicates_are_reported_as_mean_std_and_n():
    headline, plan = runs()
    summary = design.replicate_summary(headline, plan)
    a = summary.filter((pl.col("group") == "a") & (pl.col("model_stage") == "pt")).row(0, named=True)
    assert a["mean"] == pytest.approx(50.0) and a["n"] == 3
    assert a["std"] == pytest.approx(statistics.stdev(REPLICATES.values()))
    assert a["runs"] == "a, a-seed2, a-seed3" and a["epochs_synthetic"] == pytest.approx(4.0)
    single = summary.filter((pl.col("group") == "b") & (pl.col("model_stage") == "pt")).row(0, named=True)
    assert single["n"] == 1 and single["std"] is None


def test_pooled_points_are_one_per_size_stage_and_synthetic_set_without_the_ratio_runs():
    headline, plan = runs()
    points = design.correlation_points(design.replicate_summary(headline, plan), diversity(), "cluster_agent")
    pooled_small = points.filter((pl.col("population") == design.POOLED) & (pl.col("size") == "350m")
                                 & (pl.col("model_stage") == "pt"))
    assert pooled_small["experiment"].to_list() == ["a", "b", "c", "d", "tsp"]  # not b_other_mix, no ratio run
    ratio = points.filter((pl.col("population") == design.RATIO) & (pl.col("model_stage") == "pt"))
    # tsp is tagged in the ratio study and in Table 7: in both populations
    assert sorted(ratio["experiment"].to_list()) == sorted([*RATIO, "tsp"]) and set(ratio["score"].to_list()) == {5.0}

    rows = {(r["size"], r["model_stage"], r["population"]): r for r in design.correlations(points)}
    assert set(rows) == {(size, stage, population) for size in ("350m", "1.4b") for stage in ("pt", "sft")
                         for population in (design.POOLED,)} | {("350m", s, design.RATIO) for s in ("pt", "sft")}
    expected = correlate(list(SCORES.values()), list(SMALL.values()))
    small = rows[("350m", "pt", design.POOLED)]
    assert small["n"] == 5 and small["pearson_r"] == pytest.approx(expected.pearson_r)
    large = rows[("1.4b", "sft", design.POOLED)]
    assert large["n"] == 4
    assert large["pearson_r"] == pytest.approx(correlate([SCORES[s] for s in LARGE], list(LARGE.values())).pearson_r)
    assert rows[("350m", "pt", design.RATIO)]["n"] == 4
    assert rows[("350m", "pt", design.RATIO)]["reason"] == "a constant variable, no correlation"  # one score


def test_partial_correlation_removes_the_covariate():
    rng = np.random.default_rng(0)
    z = rng.normal(size=40)
    x, y = z + 0.1 * rng.normal(size=40), z + 0.1 * rng.normal(size=40)
    assert correlate(list(x), list(y)).pearson_r > 0.9
    r, p, reason = partial_correlation(list(x), list(y), list(z))
    assert reason == "" and abs(r) < 0.4 and p > 0.01
    # by hand: the residuals of x and y regressed on z
    rx = x - np.polyval(np.polyfit(z, x, 1), z)
    ry = y - np.polyval(np.polyfit(z, y, 1), z)
    assert r == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))
    assert partial_correlation([1, 2, 3, 4], [2, 1, 4, 3], [5, 5, 5, 5])[2].startswith("the covariate is constant")
    headline, plan = runs()
    points = design.correlation_points(design.replicate_summary(headline, plan), diversity(), "cluster_agent")
    small = next(r for r in design.correlations(points) if (r["size"], r["model_stage"], r["population"])
                 == ("350m", "pt", design.POOLED))
    expected = partial_correlation(list(SCORES.values()), list(SMALL.values()), list(EPOCHS.values()))
    assert small["partial_r_given_synthetic_epochs"] == pytest.approx(expected[0])


def _records(headline: pl.DataFrame, parameters: int) -> list[EvalRecord]:
    return [EvalRecord(r["experiment"], r["model_stage"],
                       {"heldout_continuation": {"acc_norm": {"value": r["acc"] / 100, "stderr": None}},
                        "heldout_perplexity": {"word_perplexity": {"value": 10.0, "stderr": None}}},
                       parameters, Path(r["experiment"])) for r in headline.iter_rows(named=True)]


def test_report_draws_figure1_per_size_and_states_what_tiny_models_show(tmp_path):
    from workflow_scripts.config import load_config
    from workflow_scripts.report.build import build

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    headline, plan = runs()
    experiments = list(dict.fromkeys(headline["experiment"].to_list()))
    counts = build(_records(headline, 46_240), diversity(), pl.DataFrame(
        schema={"experiment": pl.String, "stage": pl.String, "step": pl.Int64, "loss": pl.Float64}),
        config.report.model_copy(update={"experiments": {}}), config.evaluation, tmp_path, experiments, runs=plan)
    correlations = pl.read_csv(tmp_path / "correlations.csv")
    pooled = correlations.filter((pl.col("population") == design.POOLED) & (pl.col("model_stage") == "pt"))
    assert dict(zip(pooled["size"].to_list(), pooled["n"].to_list())) == {"350m": 5, "1.4b": 4}
    assert "partial_r_given_synthetic_epochs" in correlations.columns
    assert (tmp_path / "figures" / "figure1_accuracy_vs_cluster_agent.png").is_file() and counts["figures"] >= 1
    text = (tmp_path / "report.md").read_text()
    assert "never pooled" in text and "Runs: replicates and epochs" in text and "epochs_synthetic" in text
    assert "cannot confirm or refute the paper's claim" in text  # tiny students: said plainly


def test_experiment_design_reads_replicates_sizes_sets_and_ratio_tags_from_the_config(tmp_path):
    import yaml

    from workflow_scripts.config import parse_config

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    raw["experiments"]["topic_t8_g2"]["seeds"] = [1, 2]
    raw["experiments"]["ratio_big"] = {"synthetic_from": "topic_t8_g2", "mix": {"synthetic_effective_tokens": 16384}}
    raw["report"]["experiments"]["ratio_big"] = {"table": "ratio", "row": "big", "x": 2}
    config = parse_config(raw, "tiny")
    mixes = pl.DataFrame({"experiment": ["topic_t8_g2", "topic_t8_g2-seed2"], "synthetic_tokens": [3000.0] * 2,
                          "epochs_web": [0.1, 0.1], "epochs_synthetic": [2.7, 2.7]})
    plan = design.experiment_design(config, mixes)
    rows = {r["experiment"]: r for r in plan.iter_rows(named=True)}
    assert rows["topic_t8_g2-seed2"]["group"] == "topic_t8_g2" == rows["topic_t8_g2-seed2"]["synthetic_set"]
    assert rows["ratio_big"]["synthetic_set"] == "topic_t8_g2" and rows["ratio_big"]["ratio_only"]
    assert rows["topic_t16_g2"]["size"] == "tiny" and not rows["topic_t16_g2"]["ratio_only"]
    assert rows["topic_t8_g2"]["epochs_synthetic"] == 2.7 and rows["real_only"]["epochs_synthetic"] is None
