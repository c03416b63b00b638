"""Context length: the mean number of tokens per text (whitespace tokens or a tokenizer's ids)."""

from __future__ import annotations

from typing import Sequence

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.tokens import TokenBatch


class ContextLength:
    name = "context_length"

    def __init__(self) -> None:
        self.documents = 0
        self.tokens = 0
        self.bytes = 0
        self.longest = 0
        self.shortest: int | None = None

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None:
        lengths = batch.lengths
        if len(lengths) == 0:
            return
        self.documents += len(lengths)
        self.tokens += int(lengths.sum())
        self.bytes += batch.n_bytes
        self.longest = max(self.longest, int(lengths.max()))
        low = int(lengths.min())
        self.shortest = low if self.shortest is None else min(self.shortest, low)

    def result(self) -> MetricResult:
        mean = self.tokens / self.documents if self.documents else 0.0
        return MetricResult(mean, {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes,
                                   "min_tokens": self.shortest or 0, "max_tokens": self.longest})
