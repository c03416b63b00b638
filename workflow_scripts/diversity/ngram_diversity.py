"""N-gram diversity: sum over n = 1..max_n of (distinct n-grams / total n-grams) in the corpus.

Higher = more diverse (max_n when every n-gram is unique). With ``scope="corpus"`` (default) the corpus
is one stream of tokens, documents concatenated in order, so n-grams may span two documents: this is
Shaib et al.'s code, which the paper cites. ``scope="document"`` counts n-grams inside documents only
(at most n-1 fewer per document). The value grows as the corpus shrinks, so compare corpora of the
same size (the bootstrap subset). The tokens are taken in windows of ``WINDOW_TOKENS`` (a long document
too), so the working memory is the distinct n-gram sets (8 bytes per distinct n-gram) plus a few tens of MB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.hashsets import DistinctHashes
from workflow_scripts.diversity.tokens import (
    U64,
    WINDOW_TOKENS,
    TokenBatch,
    stream_ngram_hashes,
    windowed_ngram_hashes,
)


class NgramDiversity:
    name = "ngram_diversity"

    def __init__(self, max_n: int = 4, scope: str = "corpus") -> None:
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        if scope not in ("corpus", "document"):
            raise ValueError(f"scope must be 'corpus' or 'document', got {scope!r}")
        self.max_n, self.scope = max_n, scope
        self.distinct = [DistinctHashes() for _ in range(max_n)]
        self.totals = [0] * max_n
        self.tail = np.empty(0, U64)  # corpus scope: the last max_n - 1 tokens of the stream so far

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None:
        if self.scope == "corpus":  # one stream: any cut of it into windows counts the same n-grams
            for start in range(0, len(batch.hashes), WINDOW_TOKENS):
                self._update_stream(batch.hashes[start:start + WINDOW_TOKENS])
            return
        for part, long in batch.runs(WINDOW_TOKENS):
            for n in range(1, self.max_n + 1):
                for grams in (windowed_ngram_hashes(part.hashes, n) if long else [part.ngram_hashes(n)[0]]):
                    self.totals[n - 1] += len(grams)
                    self.distinct[n - 1].add(grams)

    def _update_stream(self, hashes: np.ndarray) -> None:
        stream = np.concatenate([self.tail, hashes])
        for n in range(1, self.max_n + 1):
            # only the n-grams that end in this part: the others were counted before
            grams = stream_ngram_hashes(stream, n)[max(0, len(self.tail) - n + 1):]
            self.totals[n - 1] += len(grams)
            self.distinct[n - 1].add(grams)
        self.tail = stream[len(stream) - min(len(stream), self.max_n - 1):]

    def result(self) -> MetricResult:
        ratios = {}
        for n in range(1, self.max_n + 1):
            total = self.totals[n - 1]
            ratios[n] = len(self.distinct[n - 1]) / total if total else 0.0
        return MetricResult(sum(ratios.values()), {
            "max_n": self.max_n,
            "scope": self.scope,
            "ratio_per_n": {str(n): r for n, r in ratios.items()},
            "distinct_per_n": {str(n): len(self.distinct[n - 1]) for n in ratios},
            "total_per_n": {str(n): self.totals[n - 1] for n in ratios},
            "memory_bytes": sum(d.nbytes for d in self.distinct),
        })
