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
        data = (" " if self._documents else "") + " ".join(texts)
        raw = data.encode("utf-8")
        self._original += len(raw)
        self._compressed += len(self._compressor.compress(raw))
        self._documents += len(texts)

    def result(self) -> MetricResult:
        if self._result is None:
            self._compressed += len(self._compressor.flush())
            ratio = self._original / self._compressed if self._original else 0.0
            self._result = MetricResult(ratio, {"original_bytes": self._original,
                                                "compressed_bytes": self._compressed,
                                                "documents": self._documents, "gzip_level": self.level})
        return self._result
