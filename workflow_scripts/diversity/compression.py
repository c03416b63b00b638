"""Compression ratio: size of the corpus (texts joined by one space, UTF-8) divided by its gzip size.

Higher = more redundant (less diverse). As in Shaib et al., the whole corpus is one gzip stream at
level 9 (``gzip.compress``'s default; configurable), header and trailer included; it is fed batch by
batch to a streaming compressor, so memory is constant.
"""

from __future__ import annotations

import zlib
from typing import Sequence

from workflow_scripts.diversity.base import MetricResult
from workflow_scripts.diversity.tokens import TokenBatch

_GZIP_WBITS = 31  # zlib's gzip container
_JOIN_CHARS = 1 << 20  # a batch of texts up to this size is joined and compressed in one call


class CompressionRatio:
    name = "compression_ratio"

    def __init__(self, level: int = 9) -> None:
        self.level = level
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._original = 0
        self._compressed = 0
        self._documents = 0
        self._result: MetricResult | None = None

    def update(self, batch: TokenBatch | None, texts: Sequence[str]) -> None:
        if not texts:
            return
        if self._result is not None:
            raise RuntimeError("compression ratio already finalised")
        if sum(len(text) for text in texts) <= _JOIN_CHARS:
            self._feed(((" " if self._documents else "") + " ".join(texts)).encode("utf-8"))
        else:  # a long text: the same bytes, encoded and compressed a part at a time
            for index, text in enumerate(texts):
                if index or self._documents:
                    self._feed(b" ")
                for start in range(0, len(text), _JOIN_CHARS):
                    self._feed(text[start:start + _JOIN_CHARS].encode("utf-8"))
        self._documents += len(texts)

    def _feed(self, raw: bytes) -> None:
        self._original += len(raw)
        self._compressed += len(self._compressor.compress(raw))

    def result(self) -> MetricResult:
        if self._result is None:
            self._compressed += len(self._compressor.flush())
            ratio = self._original / self._compressed if self._original else 0.0
            self._result = MetricResult(ratio, {"original_bytes": self._original,
                                                "compressed_bytes": self._compressed,
                                                "documents": self._documents, "gzip_level": self.level})
        return self._result
