"""N-gram diversity: sum over n = 1..max_n of (distinct n-grams / total n-grams) in the corpus.

Higher = more diverse (max_n when every n-gram is unique). N-grams are counted inside documents,
never across the boundary of two documents (Shaib et al.'s package joins all documents into one
stream; the difference is at most (n-1) n-grams per document). The value grows as the corpus
shrinks, so compare corpora of the same size (the bootstrap subset).
"""

from __future__ import annotations

from typing import Sequence

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.hashsets import DistinctHashes
from workflow_scripts.diversity.tokens import TokenBatch


class NgramDiversity:
    name = "ngram_diversity"

    def __init__(self, max_n: int = 4) -> None:
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        self.max_n = max_n
        self.distinct = [DistinctHashes() for _ in range(max_n)]
        self.totals = [0] * max_n

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None:
        for n in range(1, self.max_n + 1):
            grams, _ = batch.ngram_hashes(n)
            self.totals[n - 1] += len(grams)
            self.distinct[n - 1].add(grams)

    def result(self) -> MetricResult:
        ratios = {}
        for n in range(1, self.max_n + 1):
            total = self.totals[n - 1]
            ratios[n] = len(self.distinct[n - 1]) / total if total else 0.0
        return MetricResult(sum(ratios.values()), {
            "max_n": self.max_n,
            "ratio_per_n": {str(n): r for n, r in ratios.items()},
            "distinct_per_n": {str(n): len(self.distinct[n - 1]) for n in ratios},
            "total_per_n": {str(n): self.totals[n - 1] for n in ratios},
            "memory_bytes": sum(d.nbytes for d in self.distinct),
        })
