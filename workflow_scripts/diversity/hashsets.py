"""Bounded-memory sets of 64-bit n-gram hashes, kept as sorted numpy arrays.

Additions are buffered and merged (one sort of the concatenation) only when the buffer outgrows the
set, so the amortised cost is O(log) per element and memory stays ~8 bytes per distinct hash (plus
the buffer, at most the size of the set). ``np.unique`` is avoided on purpose: it is an order of
magnitude slower than ``np.sort`` + a neighbour comparison for uint64 in numpy 2.x.
"""

from __future__ import annotations

import numpy as np

MIN_MERGE = 1 << 20


def sorted_unique(values: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """The distinct values, sorted (``in_place``: sort ``values`` itself, saving a copy)."""
    if len(values) == 0:
        return values
    if in_place:
        values.sort()
        ordered = values
    else:
        ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Indices where a new run of equal keys begins in a sorted array."""
    if len(sorted_keys) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.empty(len(sorted_keys), dtype=bool)
    change[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def _strictly_increasing(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] > values[:-1]))


class DistinctHashes:
    """The set of distinct uint64 values seen so far."""

    def __init__(self, min_merge: int = MIN_MERGE) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._min_merge = min_merge

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        self._pending.append(sorted_unique(values))
        self._pending_size += len(self._pending[-1])
        if self._pending_size > max(len(self._keys), self._min_merge):
            self._merge()

    def _merge(self) -> None:
        if len(self._pending) == 1 and not len(self._keys):  # already sorted and distinct
            self._keys = self._pending[0]
        elif self._pending:
            self._keys = sorted_unique(np.concatenate([self._keys, *self._pending]), in_place=True)
        self._pending, self._pending_size = [], 0

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    def values(self) -> np.ndarray:
        """The distinct values, sorted."""
        self._merge()
        return self._keys

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + sum(p.nbytes for p in self._pending)


class DocumentFrequencies:
    """For every distinct hash: the first document containing it and how many documents contain it.

    Documents must arrive in increasing order of their (global) index, each whole within one ``add``.
    That is all self-repetition needs: a document's n-grams shared with other documents are its
    distinct n-grams minus those seen in it alone (count 1 and ``first_doc`` that document), and Shaib et
    al.'s score sums, over a document's distinct n-grams, their count minus one.
    """

    def __init__(self, min_merge: int = MIN_MERGE) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._first = np.empty(0, dtype=np.int64)
        self._count = np.empty(0, dtype=np.int32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_size = 0
        self._min_merge = min_merge

    def add(self, keys: np.ndarray, first_doc: np.ndarray, documents: np.ndarray) -> None:
        """Add one batch's distinct keys with their first (global) document and the number of the batch's
        documents containing each."""
        if len(keys) == 0:
            return
        self._pending.append((keys, first_doc, documents if documents.dtype == np.int32
                              else documents.astype(np.int32)))
        self._pending_size += len(keys)
        if self._pending_size > max(len(self._keys), self._min_merge):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        if len(self._pending) == 1 and not len(self._keys) and _strictly_increasing(self._pending[0][0]):
            self._keys, self._first, self._count = self._pending[0]  # one batch (a long document): as is
            self._pending, self._pending_size = [], 0
            return
        keys = np.concatenate([self._keys, *(p[0] for p in self._pending)])
        order = np.argsort(keys)
        keys = keys[order]
        starts = group_starts(keys)
        self._keys = keys[starts]
        del keys
        first = np.concatenate([self._first, *(p[1] for p in self._pending)])[order]
        self._first = np.minimum.reduceat(first, starts)
        del first
        count = np.concatenate([self._count, *(p[2] for p in self._pending)])[order]
        self._count = np.add.reduceat(count, starts).astype(np.int32)
        self._pending, self._pending_size = [], 0

    def single_document_counts(self, n_docs: int) -> np.ndarray:
        """Per document: how many of its distinct hashes occur in no other document."""
        self._merge()
        return np.bincount(self._first[self._count == 1], minlength=n_docs)

    def document_counts(self, keys: np.ndarray) -> np.ndarray:
        """How many documents contain each of ``keys`` (keys that were added)."""
        self._merge()
        return self._count[np.searchsorted(self._keys, keys)]

    def __len__(self) -> int:
        self._merge()
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        own = self._keys.nbytes + self._first.nbytes + self._count.nbytes
        return own + sum(k.nbytes + f.nbytes + c.nbytes for k, f, c in self._pending)
