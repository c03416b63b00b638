"""lm-eval results -> plain scores, and the per-task metric selection (acc vs acc_norm ...). Light: no torch.

lm-eval keys its numbers as ``"<metric>,<filter>"`` (``"acc_norm,none"``, ``"acc_norm_stderr,none"``).
:func:`scores_from_results` turns them into ``{task: {metric: {"value": v, "stderr": s}}}`` (the
``scores.json`` of an evaluate artifact); :func:`select` picks the configured metric of each task and
:func:`headline_mean` averages the tasks marked ``in_mean`` (the paper's unweighted mean).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from workflow_scripts.config.evaluate import TaskScoring
from workflow_scripts.core.artifacts import InputError

Scores = dict[str, dict[str, dict[str, float | None]]]
STDERR = "_stderr"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # lm-eval writes "N/A" for a stderr it did not compute
    return None if math.isnan(float(value)) else float(value)


def scores_from_results(results: Mapping[str, Any]) -> Scores:
    """``{task: {metric: {"value", "stderr"}}}`` from lm-eval's ``results["results"]`` (filter 'none')."""
    out: Scores = {}
    for task, entries in results.get("results", {}).items():
        metrics: dict[str, dict[str, float | None]] = {}
        for key, value in entries.items():
            if "," not in key:
                continue  # "alias" and friends
            metric, _, filter_name = key.partition(",")
            if metric.endswith(STDERR):
                continue
            if metric in metrics and filter_name != "none":
                continue
            metrics[metric] = {
                "value": _number(value),
                "stderr": _number(entries.get(f"{metric}{STDERR},{filter_name}")),
            }
        out[task] = metrics
    return out


def select(scores: Scores, task: str, scoring: TaskScoring, source: str = "scores") -> float:
    """The configured metric of one task; a clear error when the run did not produce it."""
    if task not in scores:
        raise InputError(f"{source}: task {task!r} was not evaluated (has {sorted(scores)})")
    metrics = scores[task]
    if scoring.metric not in metrics:
        raise InputError(f"{source}: task {task!r} has no metric {scoring.metric!r} (has {sorted(metrics)})")
    value = metrics[scoring.metric]["value"]
    if value is None:
        raise InputError(f"{source}: task {task!r} metric {scoring.metric!r} is missing or NaN")
    return float(value)


def display_value(value: float, scoring: TaskScoring) -> float:
    """Accuracies as percentages (the paper's tables); other metrics unchanged."""
    return value * 100.0 if scoring.percent else value


def headline_mean(selected: Mapping[str, float], scoring: Mapping[str, TaskScoring]) -> float:
    """Unweighted mean over the tasks marked ``in_mean`` (in display units)."""
    tasks = [t for t in scoring if scoring[t].in_mean]
    missing = [t for t in tasks if t not in selected]
    if missing or not tasks:
        raise InputError(f"the headline mean needs every in_mean task; missing {missing or 'all'}")
    return sum(display_value(selected[t], scoring[t]) for t in tasks) / len(tasks)
