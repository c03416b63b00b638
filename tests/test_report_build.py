"""The report stage end to end on small fake artifacts: tables, tidy Parquet, figures, DVC files, caveat."""

from __future__ import annotations

import json

import polars as pl
import pytest

from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest
from workflow_scripts.report.__main__ import main
from workflow_scripts.report.stats import correlate

EXPERIMENTS = {"real_only": None, "t8_g2": 3.1, "t16_g2": 3.8, "t8_g4": 3.4, "persona": 4.2}
TAGS = {
    "real_only": [
        {"table": "table7", "row": "Real only", "paper": {"size": "350M", "cell": "Real only"}},
        {"table": "ratio", "row": "0", "x": 0},
    ],
    "t8_g2": [
        {"table": "table6", "row": "T=8", "column": "G=2"},
        {"table": "table7", "row": "Topic"},
        {"table": "ratio", "row": "small", "x": 1},
    ],
    "t16_g2": {"table": "table6", "row": "T=16", "column": "G=2"},
    "t8_g4": [{"table": "table6", "row": "T=8", "column": "G=4"}, {"table": "ratio", "row": "big", "x": 2}],
    "persona": {
        "table": "table7",
        "row": "Topic Styles Persona",
        "paper": {"size": "350M", "cell": "Topic Styles Persona"},
    },
}




def accuracy(experiment: str, stage: str) -> float:
    score = EXPERIMENTS[experiment] or 2.5
    return 0.25 + 0.02 * score + (0.03 if stage == "sft" else 0.0)


def make_inputs(root):
    for experiment, score in EXPERIMENTS.items():
        for stage in ("pt", "sft"):
            identity = JobIdentity(stage=f"evaluate_{stage}", experiment=experiment)
            with build_artifact(root / "eval" / stage / experiment, identity=identity, inputs={}) as art:
                art.info.update(model_stage=stage, num_parameters=46_240)
                scores = {
                    "model_stage": stage,
                    "tasks": {
                        # the default scores this task by acc_norm; acc is a decoy
                        "heldout_continuation": {
                            "acc_norm": {"value": accuracy(experiment, stage), "stderr": 0.02},
                            "acc": {"value": 0.5, "stderr": 0.02},
                        },
                        "heldout_perplexity": {
                            "word_perplexity": {"value": 900.0 - 10 * (score or 0), "stderr": None},
                            "bits_per_byte": {"value": 3.0, "stderr": None},
                        },
                    },
                }
                (art.path / "scores.json").write_text(json.dumps(scores))
        if score is not None:
            with build_artifact(root / "diversity" / experiment, identity=JobIdentity(stage="diversity", experiment=experiment), inputs={}) as art:
                # the diversity stage's format: mean over seeds in "value", the spread in details.std
                (art.path / "scores.json").write_text(
                    json.dumps(
                        {
                            "cluster_agent": {"value": score, "details": {"std": 0.1, "per_seed": [score]}},
                            "compression_ratio": {"value": 3.0 - score / 10, "details": {"std": 0.01}},
                            "vendi": {"value": None, "details": {}},
                        }
                    )
                )
        with build_artifact(root / "pretrain" / experiment, identity=JobIdentity(stage="pretrain", experiment=experiment), inputs={}) as art:  # the pretrain stage writes TSV
            (art.path / "metrics.tsv").write_text(
                "step\tloss\tlr\tmfu\n1\t6.0\t0.001\t\n2\t5.0\t0.001\t\n3\t4.5\t0.001\t\n"
            )
        with build_artifact(root / "sft" / experiment, identity=JobIdentity(stage="sft", experiment=experiment), inputs={}) as art:
            pl.DataFrame({"step": [1, 2, 3], "loss": [6.0, 5.0, 4.5], "lr": [1e-3] * 3}).write_csv(
                art.path / "metrics.csv"
            )


def test_report_stage_writes_tables_figures_and_dvc_files(tmp_path):
    from tests.helpers import write_config

    make_inputs(tmp_path)
    config = write_config(
        tmp_path, experiments={name: {} for name in EXPERIMENTS}, report={"experiments": TAGS}
    )
    out = tmp_path / "report"
    assert (
        main(
            [
                "--config",
                str(config),
                "--evals",
                str(tmp_path / "eval"),
                "--diversity",
                str(tmp_path / "diversity"),
                "--train-metrics",
                str(tmp_path / "pretrain"),
                str(tmp_path / "sft"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = read_manifest(out, stage="report")
    from workflow_scripts.config.report import PARAM_KEYS

    assert set(manifest.params) == set(PARAM_KEYS) >= {"report", "evaluation.tasks", "experiments", "models"}
    assert "**Models.**" in (out / "report.md").read_text()  # which models are real, which random
    assert manifest.counts["models"] == 10

    for table in ("table6", "table7", "ratio"):
        for stage in ("pt", "sft"):
            for suffix in ("md", "csv", "tex"):
                assert (out / "tables" / f"{table}_{stage}.{suffix}").is_file()
    assert not (out / "tables" / "table8_pt.md").exists()  # nothing tagged for table 8
    grid = pl.read_csv(out / "tables" / "table6_grid_pt.csv")
    assert grid.columns == ["Topics (T)", "G=2", "G=4"] and grid.height == 2
    t7 = pl.read_csv(out / "tables" / "table7_sft.csv")
    assert t7["Template"].to_list() == ["Real only", "Topic", "Topic Styles Persona"]
    assert t7["mean"].to_list() == pytest.approx(
        [100 * accuracy(e, "sft") for e in ("real_only", "t8_g2", "persona")]
    )

    tidy = pl.read_parquet(out / "results.parquet")
    assert tidy.height == 10 * (2 + 2 + 1)
    assert set(tidy.columns) >= {"experiment", "model_stage", "task", "metric", "value"}

    correlations = pl.read_csv(out / "correlations.csv")
    row = correlations.filter((pl.col("metric") == "cluster_agent") & (pl.col("model_stage") == "pt")).row(
        0, named=True
    )
    names = [e for e, s in EXPERIMENTS.items() if s is not None]
    expected = correlate([EXPERIMENTS[e] for e in names], [100 * accuracy(e, "pt") for e in names])
    assert row["n"] == 4 and row["pearson_r"] == pytest.approx(expected.pearson_r)
    assert "vendi" not in correlations["metric"].to_list()  # NaN scores are dropped, not plotted

    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures == {
        "figure1_accuracy_vs_cluster_agent.png",
        "accuracy_vs_compression_ratio.png",
        "ratio.png",
        "loss_pretrain.png",
        "loss_sft.png",
    }
    metrics = json.loads(
        (out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON")
    )
    assert metrics["mean"]["sft"]["persona"] == pytest.approx(100 * accuracy("persona", "sft"))
    assert metrics["correlation"]["pt"]["cluster_agent"]["n"] == 4
    scatter = pl.read_csv(out / "plots" / "accuracy_vs_cluster_agent" / "sft.csv")
    assert scatter.height == 4 and {"score", "accuracy"} <= set(scatter.columns)
    assert pl.read_csv(out / "plots" / "ratio" / "pt.csv")["x"].to_list() == [0, 1, 2]
    assert pl.read_csv(out / "plots" / "loss" / "pretrain" / "t8_g2.csv").columns == ["step", "loss"]
    assert pl.read_csv(out / "plots" / "loss" / "pretrain" / "t8_g2.csv").height == 3

    comparison = pl.read_csv(out / "paper_comparison.csv")
    assert comparison.height == 4 and comparison["paper"].to_list()[:2] == [48.94, 50.00]
    text = (out / "report.md").read_text()
    assert "they say nothing about the paper's findings" in text and "46,240 parameters" in text
    assert "not a like-for-like comparison" in text
    assert "![Accuracy vs cluster_agent" in text


def test_report_refuses_evaluations_of_unknown_experiments(tmp_path):
    from tests.helpers import write_config

    make_inputs(tmp_path)
    config = write_config(tmp_path, experiments={"real_only": {}})
    # one option per input, as the pipeline's job commands write them
    assert (
        main(
            [
                "--config",
                str(config),
                "--evals-pt",
                str(tmp_path / "eval" / "pt"),
                "--evals-sft",
                str(tmp_path / "eval" / "sft"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "r").exists()
