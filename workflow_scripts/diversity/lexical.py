"""The four lexical metrics, computed together in one streaming pass (one tokenisation per batch)."""

from __future__ import annotations

from typing import Iterable, Sequence

from workflow_scripts.diversity.base import MetricResult, StreamingMetric
from workflow_scripts.diversity.compression import CompressionRatio
from workflow_scripts.diversity.context_length import ContextLength
from workflow_scripts.diversity.ngram_diversity import NgramDiversity
from workflow_scripts.diversity.self_repetition import SelfRepetition
from workflow_scripts.diversity.tokens import TokenBatch, Tokenizer

LEXICAL_METRICS = ("context_length", "self_repetition", "ngram_diversity", "compression_ratio")


def make_metric(name: str, *, ngram_max_n: int = 4, self_repetition_n: int = 4, gzip_level: int = 9,
                ngram_scope: str = "corpus", self_repetition: str = "shaib") -> StreamingMetric:
    if name == "context_length":
        return ContextLength()
    if name == "self_repetition":
        return SelfRepetition(self_repetition_n, variant=self_repetition)
    if name == "ngram_diversity":
        return NgramDiversity(ngram_max_n, scope=ngram_scope)
    if name == "compression_ratio":
        return CompressionRatio(gzip_level)
    raise ValueError(f"{name!r} is not a lexical metric (known: {LEXICAL_METRICS})")


class LexicalScorer:
    """Feed batches of texts; ``results()`` gives every requested lexical metric."""

    def __init__(self, names: Sequence[str], tokenizer: Tokenizer, **options: int | str) -> None:
        self.tokenizer = tokenizer
        self.metrics = [make_metric(name, **options) for name in names]
        self._needs_tokens = any(m.name != "compression_ratio" for m in self.metrics)

    def tokenize(self, texts: Sequence[str]) -> TokenBatch | None:
        return self.tokenizer(texts) if self._needs_tokens else None

    def update(self, texts: Sequence[str], batch: TokenBatch | None = None) -> None:
        if batch is None:
            batch = self.tokenize(texts)
        for metric in self.metrics:
            metric.update(batch, texts)  # type: ignore[arg-type]

    def results(self) -> dict[str, MetricResult]:
        results = {m.name: m.result() for m in self.metrics}
        for result in results.values():
            result.details.setdefault("tokenizer", self.tokenizer.name)
        return results


def score_texts(texts: Iterable[Sequence[str]], names: Sequence[str], tokenizer: Tokenizer,
                **options: int | str) -> dict[str, MetricResult]:
    """Lexical metrics of a stream of text batches."""
    scorer = LexicalScorer(names, tokenizer, **options)
    for batch in texts:
        scorer.update(batch)
    return scorer.results()
