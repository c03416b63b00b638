"""The paper's design, cell by cell (``resources/paper_design.yaml``), and the factors of a configured experiment.

A *cell* is one number of the paper: (table, model size, cell name), e.g. ``("table6", "1.4B", "T=100K,G=10")``;
its factors are the table's defaults updated by the cell's own. An experiment *claims* a cell through its report
tag (``report.experiments.NAME.paper`` for Tables 6-8; a ``ratio`` tag's ``x`` for the ratio study). A claim is
like-for-like when the experiment's factors (:func:`experiment_factors`) match the cell's (:func:`mismatches`):
the same template, T, G (or unique tokens within 5 % or inside the paper's range), generator, external corpus,
effective synthetic tokens and model size. The Cluster-agent ablation's cells are matched by scorer settings
(:func:`scorer_factors`) among the experiments scored on the ablation's dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from workflow_scripts.config.root import TOKENS_PER_GENERATION, PipelineConfig, read_yaml

DESIGN_FILE = Path(__file__).resolve().parent.parent / "resources" / "paper_design.yaml"
RELATIVE_TOLERANCE = 0.05  # unique-token counts: ours are estimates (T x G x tokens per generation)
TAG_TABLES = ("table6", "table7", "table8")


@cache
def design() -> dict[str, Any]:
    return read_yaml(DESIGN_FILE)  # the configs' loader: 10.4e9 is a number, a repeated key an error


@dataclass(frozen=True)
class Cell:
    table: str
    size: str
    name: str
    factors: dict[str, Any]
    reported: dict[str, float] | None   # {"pt": .., "sft": ..}

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.table, self.size, self.name)


def cells() -> list[Cell]:
    """Every cell of Tables 6-8 and the ratio study, per model size the paper ran."""
    found = []
    for table, spec in design()["tables"].items():
        for size in spec["sizes"]:
            for name, cell in spec["cells"].items():
                factors = {**spec.get("defaults", {}), **cell.get("factors", {}), "model_size": size}
                reported = (cell.get("reported") or {}).get(size)
                found.append(Cell(table, size, name, factors, reported))
    return found


def ratio_cell_name(x: float) -> str:
    return f"{x:g}B"


def model_matches(path: str, model_id: str) -> bool:
    """Whether a registry path (``gpt-4o-2024-08-06``, ``meta-llama/Llama-3.1-8B-Instruct``) is the paper's model
    ``model_id``: its last component is the id, or the id followed by a dated or versioned suffix."""
    name = path.rsplit("/", 1)[-1].lower()
    model_id = model_id.lower()
    return name == model_id or name.startswith(model_id + "-")


def experiment_factors(config: PipelineConfig, experiment: str) -> dict[str, Any]:
    """The paper's factors of one configured experiment (those of the synthetic set it trains on)."""
    spec = config.experiments[experiment]
    factors: dict[str, Any] = {"model_size": config.model_size(experiment)}
    owner = config.synthetic_set(experiment)
    factors["effective_tokens"] = (spec.mix.synthetic_effective_tokens or 0) if owner else 0
    if owner is None:
        factors["synthetic"] = "none"
        return factors
    source = config.experiments[owner]
    if source.external is not None:
        factors["external"] = source.external.name
    elif source.mixed is not None:
        generated = [config.experiments[name].synthetic for name in source.mixed.sources]
        factors.update(generator="mixed", unique_tokens=source.mixed.unique_tokens,
                       mixed_generators=sorted(config.models[s.generator].path or s.generator for s in generated))
        for key in ("template", "topics"):
            values = {getattr(s, key) for s in generated}
            if len(values) == 1:
                factors[key] = values.pop()
    else:
        synthetic = source.synthetic
        per_generation = synthetic.tokens_per_generation or TOKENS_PER_GENERATION
        factors.update(template=synthetic.template, topics=synthetic.topics,
                       generations_per_topic=synthetic.generations_per_topic,
                       unique_tokens=synthetic.topics * synthetic.generations_per_topic * per_generation,
                       generator=config.models[synthetic.generator].path or synthetic.generator)
    return factors


def _matches(key: str, expected: Any, actual: Any) -> bool:
    if actual is None:
        return False
    if key == "model_size":
        return str(actual).lower() == str(expected).lower()
    if key in ("generator", "judge") and expected != "mixed":
        return model_matches(str(actual), str(expected))
    if key == "mixed_generators":
        return len(actual) == len(expected) and all(any(model_matches(a, e) for a in actual) for e in expected)
    if key == "unique_tokens":
        if isinstance(expected, list):
            low, high = expected
            return low * (1 - RELATIVE_TOLERANCE) <= actual <= high * (1 + RELATIVE_TOLERANCE)
        return abs(actual - expected) <= RELATIVE_TOLERANCE * expected
    return actual == expected


def mismatches(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """``key: paper X, configured Y`` for every factor of the cell the experiment does not have."""
    return [f"{key}: paper {value!r}, configured {actual.get(key)!r}" for key, value in expected.items()
            if not _matches(key, value, actual.get(key))]


def claims(config: PipelineConfig) -> list[tuple[tuple[str, str, str], str]]:
    """((table, size, cell), experiment) for every report tag that names a cell of the paper."""
    found = []
    for experiment, tags in config.report.experiments.items():
        for tag in tags:
            if tag.table in TAG_TABLES and tag.paper is not None:
                found.append(((tag.table, tag.paper.size, tag.paper.cell), experiment))
            elif tag.table == "ratio" and tag.x is not None and experiment in config.experiments:
                size = _paper_size(config.model_size(experiment))
                found.append((("ratio", size, ratio_cell_name(tag.x)), experiment))
    return found


def _paper_size(model: str) -> str:
    return {"350m": "350M", "1.4b": "1.4B"}.get(model.lower(), model)


def like_for_like(config: PipelineConfig) -> dict[tuple[str, str, str, str], list[str]]:
    """(table, size, cell, experiment) -> the factors that differ from the paper's ([] = like-for-like)."""
    by_key = {cell.key: cell for cell in cells()}
    result = {}
    for key, experiment in claims(config):
        cell = by_key.get(key)
        problems = ["the paper has no such cell"] if cell is None else mismatches(
            cell.factors, experiment_factors(config, experiment))
        result[(*key, experiment)] = problems
    return result


# --- the Cluster-agent ablation ---------------------------------------------------------------------------


def scorer_factors(config: PipelineConfig, experiment: str) -> dict[str, Any]:
    agent = config.diversity_for(experiment).cluster_agent
    judge = config.models[agent.judge].path if agent.judge in config.models else agent.judge
    return {"K": agent.K, "N": agent.N, "verification": agent.verification,
            "criteria": "handwritten" if agent.criteria is not None else "derived", "judge": judge}


def ablation_cells() -> dict[str, dict[str, Any]]:
    spec = design()["ablation"]
    return {name: {**spec["defaults"], **cell.get("factors", {})} for name, cell in spec["cells"].items()}


def ablation_matches(config: PipelineConfig, dataset: str) -> dict[str, list[str]]:
    """Ablation cell -> the experiments scored on ``dataset``'s set whose scorer has the cell's settings."""
    scored = [name for name in config.scored_experiments()
              if config.synthetic_set(name) == dataset and "cluster_agent" in config.diversity_for(name).metrics]
    return {cell: [name for name in scored if not mismatches(factors, scorer_factors(config, name))]
            for cell, factors in ablation_cells().items()}

