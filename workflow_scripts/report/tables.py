"""The paper's tables as polars frames, and their Markdown / CSV / LaTeX renderings.

Per table and model stage (PT, SFT): one row per tagged experiment, in config order (the ratio study in
order of x): its row/column labels, each task's selected metric and the headline mean. Two-way tables
(Table 6: T x G) also get the paper's compact grid of means (rows x columns).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from workflow_scripts.config import paper
from workflow_scripts.config.evaluate import EvaluationConfig
from workflow_scripts.config.report import ReportConfig
from workflow_scripts.report.collect import MEAN_TASK

HEADERS = {  # (row header, column header) per table
    "table6": ("Topics (T)", "Generations per topic (G)"),
    "table7": ("Template", "Variant"),
    "table8": ("Generator", "Variant"),
    "ratio": ("Synthetic tokens", "Variant"),
}
MISSING = "–"


def table_frame(
    headline: pl.DataFrame, report: ReportConfig, evaluation: EvaluationConfig, table: str, stage: str
) -> pl.DataFrame:
    """Rows of one table for one model stage (empty frame when no experiment is tagged for it)."""
    tags = report.tags(table)
    if table == "ratio":
        tags = sorted(tags, key=lambda item: item[1].x if item[1].x is not None else math.inf)
    two_way = any(tag.column is not None for _, tag in tags)
    row_header, column_header = HEADERS[table]
    values = {
        (r["experiment"]): r for r in headline.filter(pl.col("model_stage") == stage).iter_rows(named=True)
    }
    rows = []
    for experiment, tag in tags:
        row: dict[str, Any] = {row_header: tag.row}
        if two_way:
            row[column_header] = tag.column or ""
        if table == "ratio":
            row["x"] = tag.x
        row["experiment"] = experiment
        found = values.get(experiment, {})
        for task in [*evaluation.tasks, MEAN_TASK]:
            row[task] = found.get(task)
        rows.append(row)
    schema: dict[str, Any] = {row_header: pl.String}
    if two_way:
        schema[column_header] = pl.String
    if table == "ratio":
        schema["x"] = pl.Float64
    schema["experiment"] = pl.String
    schema.update({task: pl.Float64 for task in [*evaluation.tasks, MEAN_TASK]})
    return pl.DataFrame(rows, schema=schema)


def grid_frame(frame: pl.DataFrame, table: str) -> pl.DataFrame | None:
    """The paper's compact layout of a two-way table: rows x columns of the mean."""
    row_header, column_header = HEADERS[table]
    if column_header not in frame.columns or frame.is_empty():
        return None
    columns = list(dict.fromkeys(frame[column_header].to_list()))
    grid = frame.pivot(on=column_header, index=row_header, values=MEAN_TASK, aggregate_function="first")
    return grid.select([row_header, *[c for c in columns if c in grid.columns]])


def paper_comparison(
    headline: pl.DataFrame, report: ReportConfig, evaluation: EvaluationConfig,
    factors: dict[tuple[str, str, str, str], list[str]] | None = None,
) -> pl.DataFrame:
    """Our mean next to the paper's for every tag that names a paper cell. ``factors``: (table, size, cell,
    experiment) -> the factors that differ from the paper's design (config/paper_design.py); a row is
    like-for-like only when none differs and the tasks and metrics are the paper's."""
    same_protocol = evaluation.mean_tasks() == list(paper.PAPER_TASKS) or sorted(
        evaluation.mean_tasks()
    ) == sorted(paper.PAPER_TASKS)
    if same_protocol:
        from workflow_scripts.config.evaluate import PAPER_METRICS

        same_protocol = all(evaluation.scoring[t].metric == m for t, m in PAPER_METRICS.items())
    means = {(r["experiment"], r["model_stage"]): r[MEAN_TASK] for r in headline.iter_rows(named=True)}
    rows = []
    for table in ("table6", "table7", "table8"):
        for experiment, tag in report.tags(table):
            if tag.paper is None:
                continue
            for stage in ("pt", "sft"):
                ours = means.get((experiment, stage))
                reference = paper.paper_value(table, tag.paper.size, stage, tag.paper.cell)
                differing = None if factors is None else factors.get((table, tag.paper.size, tag.paper.cell,
                                                                       experiment))
                same_factors = None if differing is None else not differing
                rows.append(
                    {
                        "table": table,
                        "paper_size": tag.paper.size,
                        "paper_cell": tag.paper.cell,
                        "model_stage": stage,
                        "experiment": experiment,
                        "ours": ours,
                        "paper": reference,
                        "difference": None if ours is None or reference is None else ours - reference,
                        "same_tasks_and_metrics": same_protocol,
                        "same_factors": same_factors,
                        "differing_factors": None if differing is None else "; ".join(differing),
                        "like_for_like": bool(same_protocol and same_factors),
                    }
                )
    return pl.DataFrame(
        rows,
        schema={
            "table": pl.String,
            "paper_size": pl.String,
            "paper_cell": pl.String,
            "model_stage": pl.String,
            "experiment": pl.String,
            "ours": pl.Float64,
            "paper": pl.Float64,
            "difference": pl.Float64,
            "same_tasks_and_metrics": pl.Boolean,
            "same_factors": pl.Boolean,
            "differing_factors": pl.String,
            "like_for_like": pl.Boolean,
        },
    )


# --- rendering --------------------------------------------------------------------------------------------


def _cell(value: Any, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def _numeric(frame: pl.DataFrame) -> list[bool]:
    return [dtype.is_numeric() for dtype in frame.dtypes]


def to_markdown(frame: pl.DataFrame, decimals: int = 2) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if numeric else "---" for numeric in _numeric(frame)) + "|"
    lines = [header, rule]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(_cell(v, decimals).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(frame: pl.DataFrame, decimals: int = 2, caption: str | None = None) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``)."""
    align = "".join("r" if numeric else "l" for numeric in _numeric(frame))
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + r" \\",
        r"\midrule",
    ]
    for row in frame.iter_rows():
        cells = ["--" if _cell(v, decimals) == MISSING else latex_escape(_cell(v, decimals)) for v in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(frame: pl.DataFrame, out: Path, stem: str, decimals: int, caption: str) -> list[Path]:
    """``stem.md``, ``stem.csv``, ``stem.tex``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.tex"]
    paths[0].write_text(f"**{caption}**\n\n" + to_markdown(frame, decimals))
    frame.write_csv(paths[1])
    paths[2].write_text(to_latex(frame, decimals, caption))
    return paths
