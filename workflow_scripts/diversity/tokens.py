"""Texts -> 64-bit token hashes and n-gram hashes, vectorised with numpy.

The lexical metrics never keep strings: a batch of texts becomes one ``uint64`` array of token
hashes plus document offsets, and n-grams become ``uint64`` hashes of consecutive token hashes
(never spanning two documents). Memory is then bounded by the distinct n-grams a metric keeps.

Whitespace tokenizer ("whitespace", the default): tokens are exactly Python's ``str.split()``
(maximal runs of non-whitespace characters, Unicode whitespace included). It is computed on the
UTF-8 bytes: each token's hash is a polynomial hash of its bytes modulo 2**64, obtained for all
tokens at once from prefix sums (``S[e] - S[s]`` scaled by ``P**-s``), then passed through the
splitmix64 finaliser. Hash collisions are possible in principle (2**-64 per pair for random
strings); they can only merge distinct n-grams, i.e. bias diversity down negligibly.

Hugging Face tokenizer (a local directory or hub id): tokens are the tokenizer's ids (no special
tokens added), hashed with splitmix64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import numpy as np

U64 = np.uint64
_P = U64(0x100000001B3)  # odd, so invertible modulo 2**64
_P_INV = U64(pow(0x100000001B3, -1, 2**64))
_GOLDEN = U64(0x9E3779B97F4A7C15)
_NGRAM_MUL = U64(0xD6E8FEB86659FD93)

# ASCII whitespace in str.split(): \t \n \v \f \r, the four separators \x1c-\x1f, and space.
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
# Non-ASCII whitespace of str.split(); replaced by a space before hashing so byte-level splitting matches.
_UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on a uint64 array (wrapping arithmetic)."""
    x = x.astype(U64, copy=True)
    x ^= x >> U64(30)
    x *= U64(0xBF58476D1CE4E5B9)
    x ^= x >> U64(27)
    x *= U64(0x94D049BB133111EB)
    x ^= x >> U64(31)
    return x


@dataclass
class TokenBatch:
    """Token hashes of a batch of documents: ``hashes[offsets[d]:offsets[d+1]]`` belong to document d."""

    hashes: np.ndarray     # uint64
    offsets: np.ndarray    # int64, length n_docs + 1
    doc_bytes: np.ndarray  # int64, UTF-8 bytes of each text

    @property
    def n_bytes(self) -> int:
        return int(self.doc_bytes.sum())

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc_index(self) -> np.ndarray:
        """For every token, the index of its document within the batch."""
        return np.repeat(np.arange(self.n_docs, dtype=np.int64), self.lengths)

    def select(self, docs: np.ndarray) -> "TokenBatch":
        """The sub-batch of the given documents (batch-local indices, ascending)."""
        docs = np.asarray(docs, dtype=np.int64)
        lengths = self.lengths[docs]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # token positions: each chosen document's start repeated over its length, plus 0..len-1
        starts = np.repeat(self.offsets[:-1][docs], lengths)
        within = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        return TokenBatch(self.hashes[starts + within], offsets, self.doc_bytes[docs])

    def runs(self, max_tokens: int) -> Iterator[tuple["TokenBatch", bool]]:
        """The batch as consecutive sub-batches, in order: runs of documents of at most ``max_tokens`` tokens,
        and each longer document alone (flagged True), for metrics that take a long document in windows."""
        lengths = self.lengths
        long = np.flatnonzero(lengths > max_tokens)
        if not len(long):
            yield self, False
            return
        start = 0
        for doc in long.tolist():
            if doc > start:
                yield self.select(np.arange(start, doc)), False
            yield self.select(np.array([doc])), True
            start = doc + 1
        if start < self.n_docs:
            yield self.select(np.arange(start, self.n_docs)), False

    def ngram_hashes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every n-gram inside a document and the batch-local document index of each."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        doc = self.doc_index()
        if n == 1:
            return self.hashes, doc
        total = len(self.hashes)
        if total < n:
            return np.empty(0, U64), np.empty(0, np.int64)
        # position of each token inside its document; an n-gram starting at i is valid if it ends in the same doc
        position = np.arange(total, dtype=np.int64) - self.offsets[:-1][doc]
        starts = np.flatnonzero(position[: total - n + 1] + n <= self.lengths[doc[: total - n + 1]])
        grams = self.hashes[starts].copy()
        for k in range(1, n):
            grams = splitmix64(grams * _NGRAM_MUL + self.hashes[starts + k])
        return grams, doc[starts]


# A document longer than this many tokens is taken by the n-gram metrics in windows of this size (n - 1
# tokens of overlap), so their working arrays stay a few tens of MB whatever the document's length.
WINDOW_TOKENS = 1 << 19


def windowed_ngram_hashes(hashes: np.ndarray, n: int, window: int | None = None) -> Iterator[np.ndarray]:
    """:func:`stream_ngram_hashes` of one token stream, in consecutive parts of at most ``window`` n-grams
    (default :data:`WINDOW_TOKENS`); together they are exactly the n-grams of the whole stream."""
    window = window or WINDOW_TOKENS
    for start in range(0, max(len(hashes) - n + 1, 0), window):
        yield stream_ngram_hashes(hashes[start:start + window + n - 1], n)


def stream_ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every n-gram of one token stream (document boundaries ignored), as for one document."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(hashes) < n:
        return np.empty(0, U64)
    count = len(hashes) - n + 1
    grams = hashes[:count].copy()
    for k in range(1, n):
        grams = splitmix64(grams * _NGRAM_MUL + hashes[k:k + count])
    return grams


class Tokenizer(Protocol):
    name: str

    def __call__(self, texts: Sequence[str]) -> TokenBatch: ...


_POWERS: tuple[np.ndarray, np.ndarray] = (np.empty(0, U64), np.empty(0, U64))


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i modulo 2**64 for i < length (one grow-only table, doubled when too short)."""
    global _POWERS
    if len(_POWERS[0]) < length:
        size = 1 << max(16, (length - 1).bit_length())
        with np.errstate(over="ignore"):
            powers = np.full(size, _P, dtype=U64)
            powers[0] = 1
            inverse = np.full(size, _P_INV, dtype=U64)
            inverse[0] = 1
            _POWERS = (np.cumprod(powers, dtype=U64), np.cumprod(inverse, dtype=U64))
    return _POWERS[0][:length], _POWERS[1][:length]


PIECE_BYTES = 1 << 18  # texts are hashed in groups or pieces of about this many bytes, cut at whitespace


def _pieces(data: bytes, limit: int | None = None) -> Iterator[bytes]:
    """``data`` cut just after a whitespace byte every ``limit`` bytes or so: no token spans two pieces, so
    the pieces' tokens are exactly the whole text's (a single token longer than ``limit`` stays whole)."""
    limit = limit or PIECE_BYTES
    start = 0
    while len(data) - start > limit:
        view = np.frombuffer(data, dtype=np.uint8, count=limit, offset=start)
        spaces = np.flatnonzero(_ASCII_SPACE[view])
        if len(spaces):
            cut = start + int(spaces[-1]) + 1
        else:  # one token longer than the piece: extend to the next whitespace byte
            rest = np.frombuffer(data, dtype=np.uint8, offset=start + limit)
            after = np.flatnonzero(_ASCII_SPACE[rest])
            cut = start + limit + int(after[0]) + 1 if len(after) else len(data)
        yield data[start:cut]
        start = cut
    if start < len(data) or not data:
        yield data[start:] if start else data


def _hash_tokens(encoded: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of byte strings hashed together, and the number of tokens of each."""
    doc_bytes = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    # one separator byte after every text keeps tokens from spanning texts
    buffer = np.frombuffer(b"\n".join(encoded) + b"\n", dtype=np.uint8)
    space = _ASCII_SPACE[buffer]
    edges = np.diff((~space).astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    del space
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    del edges
    powers, inverse = _powers(len(buffer))
    with np.errstate(over="ignore"):
        weighted = (buffer.astype(U64) + U64(1)) * powers
        prefix = np.zeros(len(buffer) + 1, dtype=U64)
        np.cumsum(weighted, dtype=U64, out=prefix[1:])
        del weighted
        raw = (prefix[ends] - prefix[starts]) * inverse[starts]
        hashes = splitmix64(raw ^ (ends - starts).astype(U64) * _GOLDEN)
    doc_start_byte = np.concatenate([[0], np.cumsum(doc_bytes)])
    return hashes, np.diff(np.searchsorted(starts, doc_start_byte))


class WhitespaceTokenizer:
    """``str.split()`` tokens, hashed to uint64 without building Python strings per token.

    Texts are hashed in groups of about :data:`PIECE_BYTES` bytes, a longer text in pieces cut at
    whitespace, so the working memory is bounded whatever the length of a document (the result is the
    same as hashing everything at once: 8 bytes per token)."""

    name = "whitespace"

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        n_bytes = np.zeros(len(texts), dtype=np.int64)
        counts = np.zeros(len(texts), dtype=np.int64)
        parts: list[np.ndarray] = []
        group: list[bytes] = []
        owners: list[int] = []  # the text each member of the group belongs to
        size = 0

        def flush() -> None:
            nonlocal group, owners, size
            if group:
                hashes, per_member = _hash_tokens(group)
                parts.append(hashes)
                np.add.at(counts, np.asarray(owners, dtype=np.int64), per_member)
            group, owners, size = [], [], 0

        for index, text in enumerate(texts):
            data = text.encode("utf-8")
            n_bytes[index] = len(data)
            if not text.isascii() and _UNICODE_SPACE.search(text):
                data = _UNICODE_SPACE.sub(" ", text).encode("utf-8")
            for piece in _pieces(data):
                if size and size + len(piece) > PIECE_BYTES:
                    flush()
                group.append(piece)
                owners.append(index)
                size += len(piece) + 1
        flush()
        hashes = np.concatenate(parts) if parts else np.empty(0, U64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return TokenBatch(hashes, offsets, n_bytes)


class HFTokenizer:
    """Token ids of a Hugging Face tokenizer (local directory or hub id), hashed with splitmix64."""

    def __init__(self, source: str) -> None:
        from transformers import AutoTokenizer

        self.name = source
        self._tokenizer = AutoTokenizer.from_pretrained(source)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        ids = self._tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
        return TokenBatch(splitmix64(flat.astype(U64) + U64(1)), offsets, n_bytes)


def load_tokenizer(spec: str) -> Tokenizer:
    """``"whitespace"`` or a Hugging Face tokenizer directory / hub id."""
    if spec == "whitespace":
        return WhitespaceTokenizer()
    return HFTokenizer(spec)
