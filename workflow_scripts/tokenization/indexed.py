"""Streaming writer of Megatron-core indexed datasets (``prefix.bin`` + ``prefix.idx``).

Megatron's own ``IndexedDatasetBuilder`` keeps every sequence length in a Python list until ``finalize``;
at paper scale (tens of millions of documents) that alone is gigabytes. This writer appends tokens to the
``.bin`` file and lengths to a side file as it goes, then streams the ``.idx`` out in fixed-size chunks, so
its memory does not grow with the corpus. The file layout is the one
``megatron.core.datasets.indexed_dataset`` reads (version 1, one sequence per document, no modes); tests read
the output back with Megatron itself.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# Megatron's DType codes.
DTYPE_CODES = {
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float64": 6,
    "float32": 7,
    "uint16": 8,
}
CHUNK = 1 << 20  # sequences per chunk when streaming the index


def bin_path(prefix: Path | str) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: Path | str) -> Path:
    return Path(f"{prefix}.idx")


class IndexedDatasetWriter:
    """Append documents (already terminated by EOD) and write the index on :meth:`finalize`."""

    def __init__(self, prefix: Path | str, dtype: str) -> None:
        if dtype not in ("uint16", "int32"):
            raise ValueError(f"unsupported token dtype {dtype!r}")
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        self._lengths_path = Path(f"{prefix}.lengths.tmp")
        self._bin = open(bin_path(prefix), "wb")
        self._lengths = open(self._lengths_path, "wb")
        self.documents = 0
        self.tokens = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append ``len(lengths)`` documents whose tokens are concatenated in ``tokens``."""
        if tokens.dtype != self.dtype:
            raise TypeError(f"tokens are {tokens.dtype}, the dataset stores {self.dtype}")
        if int(lengths.sum()) != tokens.size:
            raise ValueError("document lengths do not add up to the number of tokens")
        self._bin.write(tokens.tobytes(order="C"))
        self._lengths.write(np.ascontiguousarray(lengths, dtype=np.int32).tobytes())
        self.documents += int(lengths.size)
        self.tokens += int(tokens.size)

    def finalize(self) -> None:
        self._bin.close()
        self._lengths.close()
        count = self.documents
        with open(idx_path(self.prefix), "wb") as out, open(self._lengths_path, "rb") as lengths:
            out.write(INDEX_HEADER)
            out.write(struct.pack("<Q", INDEX_VERSION))
            out.write(struct.pack("<B", DTYPE_CODES[self.dtype.name]))
            out.write(struct.pack("<Q", count))
            out.write(struct.pack("<Q", count + 1))  # document indices: 0 plus the end of each document
            while chunk := lengths.read(CHUNK * 4):
                out.write(chunk)
            lengths.seek(0)
            offset = 0
            while chunk := lengths.read(CHUNK * 4):
                sizes = np.frombuffer(chunk, dtype=np.int32).astype(np.int64) * self.dtype.itemsize
                pointers = np.cumsum(sizes) - sizes + offset
                offset = int(pointers[-1] + sizes[-1])
                out.write(pointers.tobytes())
            for start in range(0, count + 1, CHUNK):
                out.write(np.arange(start, min(start + CHUNK, count + 1), dtype=np.int64).tobytes())
        os.remove(self._lengths_path)

    def abort(self) -> None:
        for handle in (self._bin, self._lengths):
            handle.close()
        self._lengths_path.unlink(missing_ok=True)


def read_index_header(prefix: Path | str) -> dict[str, int | str]:
    """dtype, sequence and document counts from an ``.idx`` header (cheap; no Megatron import)."""
    with open(idx_path(prefix), "rb") as handle:
        if handle.read(len(INDEX_HEADER)) != INDEX_HEADER:
            raise ValueError(f"{idx_path(prefix)} is not a Megatron index file")
        (version,) = struct.unpack("<Q", handle.read(8))
        (code,) = struct.unpack("<B", handle.read(1))
        (sequences,) = struct.unpack("<Q", handle.read(8))
        (documents,) = struct.unpack("<Q", handle.read(8))
    names = {v: k for k, v in DTYPE_CODES.items()}
    return {
        "version": version,
        "dtype": names.get(code, str(code)),
        "sequences": sequences,
        "documents": documents - 1,
    }
