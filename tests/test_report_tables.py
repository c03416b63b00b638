"""The paper's tables in polars: shapes, metric selection inside them, paper comparison and rendering."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from workflow_scripts.config import paper
from workflow_scripts.config.evaluate import PAPER_TASKS, EvaluationConfig, paper_evaluation
from workflow_scripts.config.report import ReportConfig
from workflow_scripts.report import tables
from workflow_scripts.report.collect import EvalRecord, headline, tidy


def paper_grid_tags() -> dict:
    tags: dict = {}
    for t in ("100K", "300K"):
        for g in (10, 20, 30):
            tags[f"t{t}_g{g}"] = {
                "table": "table6",
                "row": f"T={t}",
                "column": f"G={g}",
                "paper": {"size": "350M", "cell": f"T={t},G={g}"},
            }
    for cell in paper.TABLE7_CELLS:
        tags[_name(cell)] = {"table": "table7", "row": cell, "paper": {"size": "350M", "cell": cell}}
    for cell in paper.TABLE8_CELLS:
        tags[f"gen_{_name(cell)}"] = {"table": "table8", "row": cell, "paper": {"size": "350M", "cell": cell}}
    for x in (1, 5, 10, 20, 34, 50):
        tags[f"ratio_{x}"] = {"table": "ratio", "row": f"{x}B", "x": x}
    return tags


def _name(cell: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in cell.lower())


def record(experiment: str, stage: str, base: float, tasks=PAPER_TASKS) -> EvalRecord:
    """acc = base + i/100, acc_norm = acc + 0.1 for task i: the table must pick per the config."""
    scores = {
        task: {
            "acc": {"value": base + i / 100, "stderr": 0.01},
            "acc_norm": {"value": base + i / 100 + 0.1, "stderr": 0.01},
        }
        for i, task in enumerate(tasks)
    }
    return EvalRecord(experiment, stage, scores, 1000, Path(f"/eval/{stage}/{experiment}"))


@pytest.fixture()
def grid():
    report = ReportConfig.model_validate({"experiments": paper_grid_tags()})
    evaluation = paper_evaluation()
    records = [
        record(name, stage, 0.40 + 0.005 * i + (0.02 if stage == "sft" else 0))
        for i, name in enumerate(report.experiments)
        for stage in ("pt", "sft")
    ]
    return report, evaluation, records


def test_table_shapes_follow_the_paper(grid):
    report, evaluation, records = grid
    frame = headline(records, evaluation)
    assert frame.shape == (2 * len(report.experiments), 2 + 8 + 1)
    t6 = tables.table_frame(frame, report, evaluation, "table6", "pt")
    assert t6.columns == ["Topics (T)", "Generations per topic (G)", "experiment", *PAPER_TASKS, "mean"]
    assert t6.height == 6
    grid6 = tables.grid_frame(t6, "table6")
    assert grid6.columns == ["Topics (T)", "G=10", "G=20", "G=30"] and grid6.height == 2
    t7 = tables.table_frame(frame, report, evaluation, "table7", "sft")
    assert t7.shape == (7, 1 + 1 + 8 + 1) and t7["Template"].to_list() == list(paper.TABLE7_CELLS)
    assert tables.grid_frame(t7, "table7") is None
    assert tables.table_frame(frame, report, evaluation, "table8", "pt").height == 5
    ratio = tables.table_frame(frame, report, evaluation, "ratio", "pt")
    assert ratio["x"].to_list() == [1, 5, 10, 20, 34, 50]


def test_tables_use_acc_norm_only_where_configured(grid):
    report, evaluation, records = grid
    frame = headline(records, evaluation)
    row = frame.filter((pl.col("experiment") == "t100K_g10") & (pl.col("model_stage") == "pt")).row(
        0, named=True
    )
    base = 0.40
    for i, task in enumerate(PAPER_TASKS):
        expected = 100 * (base + i / 100 + (0.1 if task in ("arc_challenge", "hellaswag") else 0))
        assert row[task] == pytest.approx(expected), task
    assert row["mean"] == pytest.approx(sum(row[t] for t in PAPER_TASKS) / 8)


def test_tidy_has_every_metric_and_one_mean_per_model(grid):
    report, evaluation, records = grid
    frame = tidy(records, evaluation)
    assert frame.columns == ["experiment", "model_stage", "task", "metric", "value", "stderr", "selected"]
    assert frame.height == len(records) * (8 * 2 + 1)
    selected = frame.filter(pl.col("selected") & (pl.col("task") != "mean"))
    assert selected.height == len(records) * 8
    assert set(selected.filter(pl.col("metric") == "acc_norm")["task"].to_list()) == {
        "arc_challenge",
        "hellaswag",
    }


def test_paper_comparison_puts_ours_next_to_the_paper(grid):
    report, evaluation, records = grid
    frame = headline(records, evaluation)
    comparison = tables.paper_comparison(frame, report, evaluation)
    assert comparison.height == 2 * (6 + 7 + 5)
    row = comparison.filter((pl.col("paper_cell") == "Real only") & (pl.col("model_stage") == "sft")).row(
        0, named=True
    )
    assert row["paper"] == 50.00
    assert row["difference"] == pytest.approx(row["ours"] - 50.00)
    assert comparison["same_tasks_and_metrics"].all()
    tiny = tables.paper_comparison(frame, report, EvaluationConfig())
    assert not tiny["same_tasks_and_metrics"].any()


def test_missing_evaluations_leave_empty_cells(grid):
    report, evaluation, records = grid
    frame = headline([r for r in records if r.experiment != "t300K_g30"], evaluation)
    t6 = tables.table_frame(frame, report, evaluation, "table6", "pt")
    assert t6.height == 6 and t6.filter(pl.col("experiment") == "t300K_g30")["mean"].to_list() == [None]
    assert "| – |" in tables.to_markdown(t6)


def test_markdown_and_latex_rendering():
    frame = pl.DataFrame(
        {"Template": ["Topic_Styles & co"], "arc_easy": [51.234], "mean": [None]},
        schema={"Template": pl.String, "arc_easy": pl.Float64, "mean": pl.Float64},
    )
    markdown = tables.to_markdown(frame, 2).splitlines()
    assert markdown == [
        "| Template | arc_easy | mean |",
        "|---|---:|---:|",
        "| Topic_Styles & co | 51.23 | – |",
    ]
    latex = tables.to_latex(frame, 1, caption="Table 7 (PT)")
    assert r"\begin{tabular}{lrr}" in latex and r"Topic\_Styles \& co & 51.2 & -- \\" in latex
    assert r"arc\_easy" in latex and r"\toprule" in latex


def test_report_config_rejects_clashes_and_unknown_paper_cells():
    with pytest.raises(ValueError, match="both claim table6"):
        ReportConfig.model_validate(
            {
                "experiments": {
                    "a": {"table": "table6", "row": "T=1", "column": "G=1"},
                    "b": {"table": "table6", "row": "T=1", "column": "G=1"},
                }
            }
        )
    with pytest.raises(ValueError, match="paper cell 'GPT-5' is not in table8"):
        ReportConfig.model_validate(
            {
                "experiments": {
                    "a": {"table": "table8", "row": "x", "paper": {"size": "350M", "cell": "GPT-5"}}
                }
            }
        )
    with pytest.raises(ValueError, match="no 1.4B row in table8"):
        ReportConfig.model_validate(
            {
                "experiments": {
                    "a": {"table": "table8", "row": "x", "paper": {"size": "1.4B", "cell": "GPT-4o"}}
                }
            }
        )
    with pytest.raises(ValueError, match="a ratio tag needs x"):
        ReportConfig.model_validate({"experiments": {"a": {"table": "ratio", "row": "1B"}}})
    two = ReportConfig.model_validate(
        {
            "experiments": {
                "a": [{"table": "table7", "row": "Real only"}, {"table": "ratio", "row": "0B", "x": 0}]
            }
        }
    )
    assert [tag.table for tag in two.experiments["a"]] == ["table7", "ratio"]


def test_paper_numbers_are_complete():
    for (table, _size, _stage), values in paper.PAPER.items():
        assert list(values) == list(paper.cells(table))
        assert all(45 < v < 65 for v in values.values())
    assert paper.paper_value("table7", "1.4B", "sft", "Topic Styles Persona") == 61.32
    assert paper.paper_value("table6", "350M", "pt", "T=300K,G=20") == 51.28


def test_report_tags_must_name_known_experiments():
    from tests.helpers import minimal_config
    from workflow_scripts.config import parse_config
    from workflow_scripts.config.report import check_references

    config = parse_config(minimal_config())
    object.__setattr__(
        config,
        "report",
        ReportConfig.model_validate({"experiments": {"ghost": {"table": "table7", "row": "Topic"}}}),
    )
    with pytest.raises(ValueError, match=r"\['ghost'\] are not in 'experiments'"):
        check_references(config)
