"""Read the report's inputs: evaluate artifacts, diversity scores and training-metrics CSVs.

Each ``--evals`` / ``--diversity`` / ``--train-metrics`` path is an artifact directory or a folder holding
artifact directories (found by their ``manifest.json``). The experiment of every input comes from its
manifest, never from its path.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from workflow_scripts.config.evaluate import EvaluationConfig
from workflow_scripts.core.artifacts import MANIFEST, ArtifactError, InputError, Manifest, read_manifest
from workflow_scripts.evaluate.reader import Scores, display_value, headline_mean, select

log = logging.getLogger(__name__)

TIDY_SCHEMA = {
    "experiment": pl.String,
    "model_stage": pl.String,
    "task": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "stderr": pl.Float64,
    "selected": pl.Boolean,
}
MEAN_TASK = "mean"
STAGE_ORDER = ("pt", "sft")


@dataclass(frozen=True)
class EvalRecord:
    experiment: str
    model_stage: str
    scores: Scores
    num_parameters: int | None
    path: Path


def find_artifacts(paths: Iterable[Path], stages: tuple[str, ...] | None) -> list[tuple[Path, Manifest]]:
    """Artifact directories of the given stages (None: any) under ``paths`` (each path: an artifact or a
    folder of them)."""
    found: dict[Path, Manifest] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"report input {path} does not exist")
        candidates = [path] if (path / MANIFEST).is_file() else sorted(p.parent for p in path.rglob(MANIFEST))
        for candidate in candidates:
            manifest = read_manifest(candidate)
            if stages is None or manifest.stage in stages:
                found[candidate.resolve()] = manifest
            elif candidate == path:
                raise ArtifactError(f"{path} was made by stage {manifest.stage!r}, expected one of {stages}")
    return sorted(found.items(), key=lambda item: str(item[0]))


def load_evals(paths: Iterable[Path]) -> list[EvalRecord]:
    records: dict[tuple[str, str], EvalRecord] = {}
    for path, manifest in find_artifacts(paths, ("evaluate_pt", "evaluate_sft")):
        file = path / "scores.json"
        if not file.is_file():
            raise ArtifactError(f"{path}: evaluate artifact without scores.json")
        data = json.loads(file.read_text())
        stage = data.get("model_stage") or manifest.info.get("model_stage")
        if manifest.experiment is None or stage not in STAGE_ORDER:
            raise InputError(
                f"{file}: needs an experiment in its manifest and model_stage pt/sft (got "
                f"{manifest.experiment!r}, {stage!r})"
            )
        key = (manifest.experiment, stage)
        if key in records:
            raise InputError(
                f"two evaluations of experiment {key[0]!r} ({key[1]}): {records[key].path} and {path}"
            )
        records[key] = EvalRecord(
            manifest.experiment, stage, data["tasks"], manifest.info.get("num_parameters"), path
        )
    return sorted(records.values(), key=lambda r: (r.experiment, STAGE_ORDER.index(r.model_stage)))


def tidy(records: list[EvalRecord], evaluation: EvaluationConfig) -> pl.DataFrame:
    """Every (experiment, model_stage, task, metric, value, stderr, selected); plus one row per model with
    task = metric = 'mean' (the headline, in display units: percent for accuracies)."""
    rows: list[dict[str, Any]] = []
    for record in records:
        for task, metrics in record.scores.items():
            chosen = evaluation.scoring[task].metric if task in evaluation.scoring else None
            for metric, number in metrics.items():
                rows.append(
                    {
                        "experiment": record.experiment,
                        "model_stage": record.model_stage,
                        "task": task,
                        "metric": metric,
                        "value": number["value"],
                        "stderr": number.get("stderr"),
                        "selected": metric == chosen,
                    }
                )
        rows.append(
            {
                "experiment": record.experiment,
                "model_stage": record.model_stage,
                "task": MEAN_TASK,
                "metric": MEAN_TASK,
                "value": model_mean(record, evaluation),
                "stderr": None,
                "selected": True,
            }
        )
    return pl.DataFrame(rows, schema=TIDY_SCHEMA)


def selected_values(record: EvalRecord, evaluation: EvaluationConfig) -> dict[str, float]:
    """task -> the configured metric's raw value, for every configured task."""
    return {
        task: select(record.scores, task, evaluation.scoring[task], str(record.path / "scores.json"))
        for task in evaluation.tasks
    }


def model_mean(record: EvalRecord, evaluation: EvaluationConfig) -> float:
    return headline_mean(selected_values(record, evaluation), evaluation.scoring)


def headline(records: list[EvalRecord], evaluation: EvaluationConfig) -> pl.DataFrame:
    """One row per (experiment, model_stage): each task's selected metric in display units, and 'mean'."""
    rows = []
    for record in records:
        values = selected_values(record, evaluation)
        row: dict[str, Any] = {"experiment": record.experiment, "model_stage": record.model_stage}
        row.update({task: display_value(values[task], evaluation.scoring[task]) for task in evaluation.tasks})
        row[MEAN_TASK] = headline_mean(values, evaluation.scoring)
        rows.append(row)
    schema = {
        "experiment": pl.String,
        "model_stage": pl.String,
        **{t: pl.Float64 for t in evaluation.tasks},
        MEAN_TASK: pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


# --- diversity --------------------------------------------------------------------------------------------

DIVERSITY_FILES = ("scores.json", "diversity.json", "metrics.json", "summary.json")


def _metric_entries(data: Any, source: Path) -> dict[str, tuple[float, float | None]]:
    """``{metric: (value, std)}`` from {metric: {"value", "std"}}, {metric: {"value", "details": {"std"}}}
    (the diversity stage's scores.json) or {metric: number} (optionally under a "metrics" / "scores" key)."""
    if isinstance(data, dict):
        for key in ("metrics", "scores"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object of metric -> score")
    out: dict[str, tuple[float, float | None]] = {}
    for metric, entry in data.items():
        if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
            details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
            std = entry.get("std", entry.get("stderr", details.get("std")))
            out[metric] = (float(entry["value"]), float(std) if isinstance(std, (int, float)) else None)
        elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
            out[metric] = (float(entry), None)
    return out


def load_diversity(paths: Iterable[Path]) -> pl.DataFrame:
    """experiment, metric, value, std: one row per diversity score of each experiment."""
    rows = []
    seen: dict[str, Path] = {}
    for path, manifest in find_artifacts(paths, ("diversity",)):
        file = next((path / n for n in DIVERSITY_FILES if (path / n).is_file()), None)
        if file is None:
            raise ArtifactError(f"{path}: diversity artifact without any of {DIVERSITY_FILES}")
        if manifest.experiment is None:
            raise InputError(f"{path}: diversity artifact without an experiment in its manifest")
        if manifest.experiment in seen:
            raise InputError(
                f"two diversity artifacts for {manifest.experiment!r}: {seen[manifest.experiment]}, {path}"
            )
        seen[manifest.experiment] = path
        for metric, (value, std) in _metric_entries(json.loads(file.read_text()), file).items():
            if not math.isnan(value):
                rows.append({"experiment": manifest.experiment, "metric": metric, "value": value, "std": std})
    return pl.DataFrame(
        rows, schema={"experiment": pl.String, "metric": pl.String, "value": pl.Float64, "std": pl.Float64}
    )


RATE_COLUMNS = ("generation_valid_first_attempt_rate", "generation_valid_within_attempts_rate",
                "judge_valid_first_attempt_rate", "judge_valid_within_attempts_rate")


def load_llm_output(paths: Iterable[Path]) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Per experiment: how often the generator and the judge gave schema-valid JSON (from the diversity
    manifests), and the example texts the diversity stage kept (``examples.json``)."""
    rows, examples = [], {}
    for path, manifest in find_artifacts(paths, ("diversity",)):
        if manifest.experiment is None:
            continue
        rows.append({"experiment": manifest.experiment,
                     **{c: float(manifest.counts[c]) if c in manifest.counts else None for c in RATE_COLUMNS}})
        file = path / "examples.json"
        if file.is_file():
            examples[manifest.experiment] = [str(t) for t in json.loads(file.read_text())]
    schema = {"experiment": pl.String, **{c: pl.Float64 for c in RATE_COLUMNS}}
    return pl.DataFrame(rows, schema=schema).sort("experiment"), examples


# --- training curves --------------------------------------------------------------------------------------

CURVE_SCHEMA = {"experiment": pl.String, "stage": pl.String, "step": pl.Int64, "loss": pl.Float64}


def load_curves(paths: Iterable[Path]) -> pl.DataFrame:
    """experiment, stage (the artifact's stage: pretrain, sft ...), step, loss from per-step CSV/TSV files
    (columns step, loss, ...; e.g. the sft stage's ``metrics.csv``, the pretrain stage's ``metrics.tsv``)
    inside the given artifacts."""
    frames = []
    for path, manifest in find_artifacts(paths, None):
        for file in sorted([*path.rglob("*.csv"), *path.rglob("*.tsv")]):
            with open(file) as handle:
                first = handle.readline().strip()
            separator = "\t" if "\t" in first else ","
            header = first.split(separator)
            if "step" not in header or "loss" not in header:
                continue
            frame = pl.read_csv(
                file,
                separator=separator,
                columns=["step", "loss"],
                schema_overrides={"step": pl.Int64, "loss": pl.Float64},
            )
            frame = frame.filter(pl.col("loss").is_not_null() & pl.col("loss").is_finite())
            frames.append(
                frame.with_columns(
                    pl.lit(manifest.experiment or path.name).alias("experiment"),
                    pl.lit(manifest.stage).alias("stage"),
                ).select(list(CURVE_SCHEMA))
            )
    if not frames:
        return pl.DataFrame(schema=CURVE_SCHEMA)
    return pl.concat(frames)
