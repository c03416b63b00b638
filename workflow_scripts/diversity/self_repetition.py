"""Self-repetition: mean over texts of log(1 + number of the text's distinct n-grams (n = 4) that
also occur in at least one other text). Higher = more repetitive (less diverse).

This is the definition of the paper (PAPER.md section 4). Shaib et al.'s package instead sums, over a
text's distinct n-grams, the number of other texts containing each; both agree on texts that share
nothing and rank corpora alike, but only ours can be computed in one pass with memory bounded by the
distinct n-grams: we keep, per distinct n-gram hash, its first document and whether a second
document contains it. Texts shorter than n tokens count with log(1 + 0) = 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.hashsets import DocumentFrequencies, group_starts
from workflow_scripts.diversity.tokens import TokenBatch

_DOC_BITS = 20  # documents per batch are packed into the low bits of a sort key


class SelfRepetition:
    name = "self_repetition"

    def __init__(self, n: int = 4) -> None:
        self.n = n
        self.frequencies = DocumentFrequencies()
        self.distinct_per_doc: list[np.ndarray] = []
        self.documents = 0

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None:
        if batch.n_docs > 1 << _DOC_BITS:  # the in-batch document index must fit its bits
            half = batch.n_docs // 2
            for part in (np.arange(half), np.arange(half, batch.n_docs)):
                self.update(batch.select(part), [])
            return
        grams, doc = batch.ngram_hashes(self.n)
        bits = np.uint64(_DOC_BITS)
        # one sort of (hash with its low bits replaced by the in-batch document) gives distinct
        # (n-gram, document) pairs grouped by n-gram, documents ascending inside each group
        # (n-grams are identified by the top 44 bits of their hash: ~D**2 / 2**45 false matches among D
        # distinct n-grams, e.g. ~3 for 10M, negligible next to the counts)
        keys = np.sort((grams >> bits << bits) | doc.astype(np.uint64))
        if len(keys):
            keep = np.empty(len(keys), dtype=bool)
            keep[0] = True
            np.not_equal(keys[1:], keys[:-1], out=keep[1:])
            keys = keys[keep]
        pair_doc = (keys & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
        gram = keys >> bits
        self.distinct_per_doc.append(np.bincount(pair_doc, minlength=batch.n_docs).astype(np.int32))
        starts = group_starts(gram)
        sizes = np.diff(np.append(starts, len(gram)))
        self.frequencies.add(gram[starts], pair_doc[starts] + self.documents, sizes > 1)
        self.documents += batch.n_docs

    def result(self) -> MetricResult:
        if not self.documents:
            return MetricResult(0.0, {"documents": 0, "n": self.n})
        distinct = np.concatenate(self.distinct_per_doc).astype(np.int64)
        shared = distinct - self.frequencies.single_document_counts(self.documents)
        scores = np.log1p(shared)
        return MetricResult(float(scores.mean()), {
            "n": self.n,
            "documents": self.documents,
            "distinct_ngrams": len(self.frequencies),
            "documents_sharing_any": int((shared > 0).sum()),
            "mean_shared_ngrams": float(shared.mean()),
            "memory_bytes": self.frequencies.nbytes,
        })
