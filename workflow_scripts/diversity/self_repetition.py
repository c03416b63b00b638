"""Self-repetition (Shaib et al.'s code, which the paper cites; PAPER.md section 4): per text,
log(1 + the sum, over the text's distinct n-grams (n = 4), of the number of OTHER texts that contain
that n-gram), averaged over texts. Higher = more repetitive (less diverse). Texts shorter than n tokens
count with log(1 + 0) = 0.

``variant="shaib"`` (default) keeps every distinct (n-gram, text) pair until the end (about 12 bytes a
pair: a 1M-text subset of 500-token texts needs ~6 GB). ``variant="shared_ngrams"`` is the earlier
definition of this project: log(1 + the number of the text's distinct n-grams found in any other text);
it ranks corpora alike and needs memory only per distinct n-gram (its first text and whether a second
one has it). A document longer than ``WINDOW_TOKENS`` tokens is read in windows, so the working memory is
the kept pairs and n-grams, not a multiple of the document's tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.hashsets import DistinctHashes, DocumentFrequencies, group_starts
from workflow_scripts.diversity.tokens import WINDOW_TOKENS, TokenBatch, windowed_ngram_hashes

_DOC_BITS = 20  # documents per batch are packed into the low bits of a sort key
_PAIRS_PER_PART = 1 << 20


class SelfRepetition:
    name = "self_repetition"

    def __init__(self, n: int = 4, variant: str = "shaib") -> None:
        if variant not in ("shaib", "shared_ngrams"):
            raise ValueError(f"variant must be 'shaib' or 'shared_ngrams', got {variant!r}")
        self.n, self.variant = n, variant
        self.frequencies = DocumentFrequencies()
        self.distinct_per_doc: list[np.ndarray] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []  # shaib: (n-gram, text) of each distinct pair
        self.documents = 0

    def update(self, batch: TokenBatch, texts: Sequence[str]) -> None:
        for part, long in batch.runs(WINDOW_TOKENS):
            if long:
                self._update_long_document(part)
            else:
                self._update_documents(part)

    def _update_long_document(self, batch: TokenBatch) -> None:
        """One document of more than WINDOW_TOKENS tokens: its distinct n-grams gathered window by window
        (the same set as :meth:`_update_documents` finds, with working memory bounded by the set)."""
        bits = np.uint64(_DOC_BITS)
        distinct = DistinctHashes()
        for grams in windowed_ngram_hashes(batch.hashes, self.n):
            distinct.add(grams >> bits)
        gram, document = distinct.values(), self.documents
        # every n-gram is distinct and in this one document: the constant columns are zero-copy views
        self.distinct_per_doc.append(np.array([len(gram)], dtype=np.int32))
        if self.variant == "shaib":
            self.pairs.append((gram, np.broadcast_to(np.int32(document), gram.shape)))
        self.frequencies.add(gram, np.broadcast_to(np.int64(document), gram.shape),
                             np.broadcast_to(np.int32(1), gram.shape))
        self.documents += 1

    def _update_documents(self, batch: TokenBatch) -> None:
        if batch.n_docs > 1 << _DOC_BITS:  # the in-batch document index must fit its bits
            half = batch.n_docs // 2
            for part in (np.arange(half), np.arange(half, batch.n_docs)):
                self._update_documents(batch.select(part))
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
        self._record(keys >> bits, pair_doc, batch.n_docs)

    def _record(self, gram: np.ndarray, pair_doc: np.ndarray, n_docs: int) -> None:
        """Keep the distinct (n-gram, document) pairs of ``n_docs`` documents, grouped by n-gram (sorted),
        documents ascending inside each group; ``pair_doc`` is the document index within these."""
        self.distinct_per_doc.append(np.bincount(pair_doc, minlength=n_docs).astype(np.int32))
        if self.variant == "shaib":
            self.pairs.append((gram, (pair_doc + self.documents).astype(np.int32)))
        starts = group_starts(gram)
        sizes = np.diff(np.append(starts, len(gram)))
        self.frequencies.add(gram[starts], pair_doc[starts] + self.documents, sizes)
        self.documents += n_docs

    def _other_texts_per_text(self) -> np.ndarray:
        """Per text: the sum over its distinct n-grams of (texts containing the n-gram - 1), a part of the
        kept pairs at a time (working memory: one part, not a sort of every pair)."""
        others = np.zeros(self.documents, dtype=np.float64)
        for grams, docs in self.pairs:
            for start in range(0, len(grams), _PAIRS_PER_PART):
                part = slice(start, start + _PAIRS_PER_PART)
                shared_with = self.frequencies.document_counts(grams[part]) - 1
                others += np.bincount(docs[part], weights=shared_with, minlength=self.documents)
        return others

    def result(self) -> MetricResult:
        if not self.documents:
            return MetricResult(0.0, {"documents": 0, "n": self.n})
        distinct = np.concatenate(self.distinct_per_doc).astype(np.int64)
        shared = distinct - self.frequencies.single_document_counts(self.documents)
        scores = np.log1p(self._other_texts_per_text() if self.variant == "shaib" else shared)
        return MetricResult(float(scores.mean()), {
            "n": self.n,
            "variant": self.variant,
            "documents": self.documents,
            "distinct_ngrams": len(self.frequencies),
            "documents_sharing_any": int((shared > 0).sum()),
            "mean_shared_ngrams": float(shared.mean()),
            "memory_bytes": self.frequencies.nbytes,
        })
