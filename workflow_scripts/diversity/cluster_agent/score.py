"""The Cluster-agent score from raw round records, under any convention (no LLM calls).

D = (1/N) * sum_i C_i / S_i over the N clustering rounds of a seed. Per round, from the raw record:

1. Membership is normalised: members are the round's samples (enums guarantee that); a sample listed
   in several clusters stays in the first one only; clusters left empty disappear.
2. Validity (``invalid_clusters``): a cluster is invalid when the verifier said 0. ``drop`` (default,
   the paper's "invalid clusters are removed") removes the cluster and its samples from the round;
   ``singletons`` replaces it by one singleton per member; ``keep`` ignores the verdicts. Singletons
   and clusters the verifier did not judge are valid.
3. Samples in no cluster (``unassigned_samples``): ``drop`` (default: the judge did not count them)
   or one singleton each.
4. C_i = clusters counted, n_i = samples in them. ``cluster_size`` S_i: ``mean_cluster_size``
   (default) S_i = n_i / C_i, so C_i / S_i = C_i^2 / n_i (the paper's K=10 score ~4 matches ~6.3
   clusters per 10 samples); ``round_size`` S_i = K, so C_i / S_i = C_i / K. A round with no cluster
   left scores 0.
5. Rounds without a usable answer (``failed_rounds``): ``skip`` (default) leaves them out of N;
   ``zero`` counts them as 0.

The bootstrap over seeds reports the mean, the sample standard deviation (ddof = 1; 0 for one seed)
and the per-seed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import polars as pl

from workflow_scripts.config.diversity import Conventions


@dataclass
class RoundScore:
    clusters: int
    samples: int
    invalid: int
    unassigned: int
    value: float


def score_round(sample_ids: Sequence[int], clusters: Iterable[dict[str, Any]],
                conventions: Conventions) -> RoundScore:
    allowed = set(int(i) for i in sample_ids)
    assigned: set[int] = set()
    counted_sizes: list[int] = []
    invalid = 0
    for cluster in clusters:
        members = []
        for member in cluster["members"] or []:
            member = int(member)
            if member in allowed and member not in assigned:
                assigned.add(member)
                members.append(member)
        if not members:
            continue
        if cluster.get("valid") is False:
            invalid += 1
            if conventions.invalid_clusters == "drop":
                continue
            if conventions.invalid_clusters == "singletons":
                counted_sizes.extend([1] * len(members))
                continue
        counted_sizes.append(len(members))
    unassigned = len(allowed - assigned)
    if conventions.unassigned_samples == "singletons":
        counted_sizes.extend([1] * unassigned)
    c, n = len(counted_sizes), sum(counted_sizes)
    if c == 0:
        value = 0.0
    elif conventions.cluster_size == "mean_cluster_size":
        value = c * c / n
    else:
        value = c / len(allowed)
    return RoundScore(c, n, invalid, unassigned, value)


def score_records(records: pl.DataFrame, conventions: Conventions, rounds: int | None = None
                  ) -> dict[int, dict[str, Any]]:
    """Per seed: D and the counts behind it. ``rounds`` keeps only rounds < rounds (an N ablation)."""
    if rounds is not None:
        records = records.filter(pl.col("round") < rounds)
    out: dict[int, dict[str, Any]] = {}
    for (seed,), group in records.sort("seed", "round").group_by("seed", maintain_order=True):
        values, clusters, samples, invalid, unassigned, failed = [], [], [], 0, 0, 0
        for row in group.iter_rows(named=True):
            if row["status"] != "ok":
                failed += 1
                if conventions.failed_rounds == "zero":
                    values.append(0.0)
                continue
            result = score_round(row["sample_ids"], row["clusters"], conventions)
            values.append(result.value)
            clusters.append(result.clusters)
            samples.append(result.samples)
            invalid += result.invalid
            unassigned += result.unassigned
        out[int(seed)] = {
            "value": sum(values) / len(values) if values else float("nan"),
            "rounds": group.height, "rounds_scored": len(values), "rounds_failed": failed,
            "mean_clusters": _mean(clusters), "mean_counted_samples": _mean(samples),
            "invalid_clusters": invalid, "unassigned_samples": unassigned,
        }
    return out


def summarize(per_seed: dict[int, float]) -> dict[str, Any]:
    """Bootstrap summary: mean, sample std (ddof=1) and the per-seed values (NaN seeds ignored)."""
    values = [v for v in per_seed.values() if v is not None and not math.isnan(v)]
    mean = sum(values) / len(values) if values else float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "per_seed": {str(s): v for s, v in per_seed.items()}}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
