"""Configuration of the report stage (the ``report:`` section), light: pydantic only.

Which experiment fills which cell of the paper's tables is declared here, as tags::

    report:
      experiments:
        t100k_g10: {table: table6, row: "T=100K", column: "G=10", paper: {size: 350M, cell: "T=100K,G=10"}}
        real_only: [{table: table7, row: "Real only", paper: {size: 350M, cell: "Real only"}},
                    {table: ratio, row: "0B", x: 0}]

An experiment may carry several tags (one per table it appears in). ``paper`` marks the tag as the
reproduction of one of the paper's cells: the report then shows our mean next to the paper's.
It is the ``report`` section of ``workflow_scripts.config.PipelineConfig``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from workflow_scripts.config import paper
from workflow_scripts.config.base import Name, Section

TABLES = ("table6", "table7", "table8", "ratio")
TABLE_TITLES = {
    "table6": "Table 6: topics (T) x generations per topic (G)",
    "table7": "Table 7: prompt templates, with the real-data-only baseline",
    "table8": "Table 8: generator models",
    "ratio": "Ratio study: effective synthetic tokens next to the real data",
}

# Config keys the report reads (every key must exist literally in params.yaml for DVC).
PARAM_KEYS = ("report", "evaluation.tasks", "evaluation.scoring", "experiments", "models", "local_models",
              "diversity.perplexity", "diversity.cluster_agent.judge", "generate.topic_extraction.model",
              "pretrain.model")

DEFAULT_CAVEAT = (
    "The students here are tiny, randomly initialised models pre-trained on a few thousand tokens, on CPU. "
    "Their accuracies show that the machinery works end to end; they say nothing about the paper's findings "
    "(for those, run configs/paper.yaml on GPUs). The diversity scores are real measurements of the "
    "generated text, by the models named below."
)


class PaperCell(Section):
    size: Literal["350M", "1.4B"] = Field(..., description="the paper's model size this experiment mirrors")
    cell: str = Field(..., description="column of the paper's table, e.g. 'T=100K,G=10' or 'GPT-4o'")


class ExperimentTag(Section):
    table: Literal[TABLES]  # type: ignore[valid-type]
    row: str = Field(..., min_length=1, description="row label in the table (e.g. 'T=100K', 'Topic')")
    column: str | None = Field(None, description="column label for two-way tables (e.g. 'G=10')")
    x: float | None = Field(
        None, description="numeric position on a curve (ratio: effective synthetic tokens, billions)"
    )
    paper: PaperCell | None = None


class ReportConfig(Section):
    experiments: dict[Name, list[ExperimentTag]] = Field(
        {},
        description="experiment -> its table tags; untagged experiments still enter the tidy data, "
        "the metrics and the figures",
    )
    llm_cluster_metric: str = Field(
        "cluster_agent", description="diversity key of the LLM cluster-agent score"
    )
    baseline_metrics: list[str] | None = Field(
        None, description="diversity keys plotted against accuracy; None = every other key found"
    )
    tiny_parameters: int = Field(
        100_000_000,
        ge=0,
        description="models below this many parameters make the report state plainly "
        "that its numbers show the machinery, not the science",
    )
    caveat: str = DEFAULT_CAVEAT
    note: str = Field("", description="extra text printed under the title")
    decimals: int = Field(2, ge=0, le=6)

    @field_validator("experiments", mode="before")
    @classmethod
    def _single_tag_as_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, dict) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _cells_unique_and_known(self) -> "ReportConfig":
        seen: dict[tuple[str, str, str | None], str] = {}
        for name, tags in self.experiments.items():
            for tag in tags:
                key = (tag.table, tag.row, tag.column)
                if key in seen:
                    raise ValueError(
                        f"experiments {seen[key]!r} and {name!r} both claim {tag.table} row "
                        f"{tag.row!r} column {tag.column!r}"
                    )
                seen[key] = name
                if tag.table == "ratio" and tag.x is None:
                    raise ValueError(f"experiments.{name}: a ratio tag needs x (effective synthetic tokens)")
                if tag.paper is not None:
                    known = paper.cells(tag.table)
                    if not known:
                        raise ValueError(f"experiments.{name}: the paper reports no numbers for {tag.table}")
                    if tag.paper.cell not in known:
                        raise ValueError(
                            f"experiments.{name}: paper cell {tag.paper.cell!r} is not in "
                            f"{tag.table} (known: {list(known)})"
                        )
                    if paper.paper_value(tag.table, tag.paper.size, "pt", tag.paper.cell) is None:
                        raise ValueError(
                            f"experiments.{name}: the paper has no {tag.paper.size} row in {tag.table}"
                        )
        return self

    def tags(self, table: str) -> list[tuple[str, ExperimentTag]]:
        """(experiment, tag) of one table in config order."""
        return [(name, tag) for name, tags in self.experiments.items() for tag in tags if tag.table == table]




def check_references(config: Any) -> None:
    """Raise ValueError when ``report.experiments`` names an experiment the grid does not have (for a
    PipelineConfig validator; the stage checks it again at run time)."""
    unknown = sorted(set(config.report.experiments) - set(config.experiments))
    if unknown:
        raise ValueError(
            f"report.experiments: {unknown} are not in 'experiments' (known: {sorted(config.experiments)})"
        )
