"""JSON schemas of the judge's answers. Every free string is bounded (``pattern`` mode) so a model
that never chooses to stop still closes it; sample ids and cluster labels are enums of the batch."""

from __future__ import annotations

from typing import Any, Sequence

from workflow_scripts.config.diversity import StringBounds

SCORES = [1, 2, 3, 4, 5]


def string(max_chars: int, bounds: StringBounds) -> dict[str, Any]:
    if bounds.mode == "free":
        return {"type": "string", "minLength": 1}
    # no quotes, backslashes or control characters: nothing to escape, and the repeat is bounded
    return {"type": "string", "pattern": f'^[^"\\\\\\x00-\\x1f]{{1,{max_chars}}}$'}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _array(items: dict[str, Any], low: int, high: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": low, "maxItems": high}


def _metadata_item(bounds: StringBounds) -> dict[str, Any]:
    return _object({"name": string(bounds.max_name_chars, bounds),
                    "description": string(bounds.max_sentence_chars, bounds)})


def _metric_item(bounds: StringBounds) -> dict[str, Any]:
    return _object({"name": string(bounds.max_name_chars, bounds),
                    "description": string(bounds.max_sentence_chars, bounds),
                    "rubric": _array(string(bounds.max_sentence_chars, bounds), 5, 5)})


def generation_schema(low: int, high: int, bounds: StringBounds) -> dict[str, Any]:
    """Stage 1: metadata (broad to specific) and metrics with a 1-5 rubric (lowest level first)."""
    return _object({"metadata": _array(_metadata_item(bounds), low, high),
                    "metrics": _array(_metric_item(bounds), low, high)})


def gathering_schema(kind: str, k: int, bounds: StringBounds) -> dict[str, Any]:
    """Stage 2: exactly k merged items of one kind ("metadata" or "metrics")."""
    item = _metadata_item(bounds) if kind == "metadata" else _metric_item(bounds)
    return _object({"items": _array(item, k, k)})


def summary_schema(k: int, bounds: StringBounds) -> dict[str, Any]:
    """Stage 3: one sentence per metadata item and per metric, as k (metadata, metric) pairs."""
    pair = _object({"metadata": string(bounds.max_sentence_chars, bounds),
                    "metric": string(bounds.max_sentence_chars, bounds)})
    return _object({"sentences": _array(pair, k, k)})


def clustering_schema(labels: Sequence[str], k_metadata: int, k_metrics: int,
                      bounds: StringBounds) -> dict[str, Any]:
    """Stage 4: every cluster (singletons too) with members, uniqueness reasoning, metadata, scores."""
    n = len(labels)
    cluster = _object({
        "members": _array({"type": "string", "enum": list(labels)}, 1, n),
        "uniqueness": string(bounds.max_reason_chars, bounds),
        "metadata": _array(string(bounds.max_value_chars, bounds), k_metadata, k_metadata),
        "scores": _array({"type": "integer", "enum": SCORES}, k_metrics, k_metrics),
    })
    return _object({"clusters": _array(cluster, 1, n)})


def verification_schema(cluster_labels: Sequence[str], bounds: StringBounds) -> dict[str, Any]:
    """Stage 5: a verdict (reasoning, then 1 = valid / 0 = invalid) for each listed cluster, by label."""
    verdict = _object({"reasoning": string(bounds.max_reason_chars, bounds),
                       "valid": {"type": "integer", "enum": [0, 1]}})
    return _object({label: verdict for label in cluster_labels})


def labeling_schema(bounds: StringBounds) -> dict[str, Any]:
    """Stage 4, ``labels`` answer: a few words naming one sample's kind; equal labels make a cluster."""
    return _object({"label": {**string(bounds.max_value_chars, bounds), "title": "Topic"}})
