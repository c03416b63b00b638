"""Read a corpus as batches of texts: JSONL, Parquet (a file or a directory of shards) or plain text.

Documents are numbered 0..n-1 in file order (shards sorted by path). Plain text: one document per
line, blank lines skipped. Malformed input raises ``InputError`` naming the file and row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from workflow_scripts.core.artifacts import InputError

Format = Literal["auto", "jsonl", "parquet", "text"]
PARQUET_ROWS = 2048


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "parquet"
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "text"


class Corpus:
    def __init__(self, path: Path | str, text_field: str = "text", fmt: Format = "auto") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"corpus {self.path} does not exist")
        self.format = detect_format(self.path) if fmt == "auto" else fmt
        self.text_field = text_field
        if self.path.is_dir():
            self.files = sorted(self.path.rglob("*.parquet"))
            if not self.files:
                raise InputError(f"{self.path}: no *.parquet shards in this directory")
        else:
            self.files = [self.path]
        self._length: int | None = None

    @classmethod
    def from_files(cls, files: list[Path], text_field: str = "text") -> "Corpus":
        """A corpus of the given Parquet shards, in that order."""
        if not files:
            raise InputError("no Parquet shards given")
        corpus = cls(files[0], text_field, "parquet")
        corpus.path = Path(files[0]).parent
        corpus.files = [Path(f) for f in files]
        return corpus

    # --- counting -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        if self._length is None:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                self._length = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
            else:
                self._length = sum(1 for _ in self._iter_texts(parse=False))
        return self._length

    # --- reading ------------------------------------------------------------------------------------------

    def _iter_texts(self, parse: bool = True) -> Iterator[str]:
        if self.format == "parquet":
            yield from self._iter_parquet()
        elif self.format == "jsonl":
            yield from self._iter_jsonl(parse)
        else:
            yield from self._iter_lines()

    def _iter_parquet(self) -> Iterator[str]:
        import pyarrow.parquet as pq

        for file in self.files:
            handle = pq.ParquetFile(file)
            if self.text_field not in handle.schema_arrow.names:
                raise InputError(f"{file}: no column {self.text_field!r} (columns: {handle.schema_arrow.names})")
            row = 0
            for batch in handle.iter_batches(batch_size=PARQUET_ROWS, columns=[self.text_field]):
                column = batch.column(0)
                if column.null_count:
                    bad = row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                    raise InputError(f"{file}: row {bad} has a null {self.text_field!r}")
                texts = column.to_pylist()
                if texts and not isinstance(texts[0], str):
                    raise InputError(f"{file}: column {self.text_field!r} is not a string column")
                yield from texts
                row += len(texts)

    def _iter_jsonl(self, parse: bool) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if not parse:
                    yield ""
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{self.path}:{number}: not valid JSON ({error.msg})") from None
                text = record.get(self.text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise InputError(f"{self.path}:{number}: no string field {self.text_field!r}")
                yield text

    def _iter_lines(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8", errors="strict") as handle:
            try:
                for line in handle:
                    line = line.rstrip("\r\n")
                    if line.strip():
                        yield line
            except UnicodeDecodeError as error:
                raise InputError(f"{self.path}: not UTF-8 text ({error.reason})") from None

    def batches(self, batch_bytes: int = 1 << 20) -> Iterator[tuple[int, list[str]]]:
        """(index of the first document, texts) in file order, about ``batch_bytes`` characters each."""
        start, texts, size = 0, [], 0
        for text in self._iter_texts():
            texts.append(text)
            size += len(text) + 1
            if size >= batch_bytes:
                yield start, texts
                start, texts, size = start + len(texts), [], 0
        if texts:
            yield start, texts

    def take(self, indices: np.ndarray, batch_bytes: int = 1 << 20) -> Iterator[list[str]]:
        """The texts at sorted, distinct ``indices``, in that order, in batches."""
        indices = np.asarray(indices, dtype=np.int64)
        for start, texts in self.batches(batch_bytes):
            lo, hi = np.searchsorted(indices, [start, start + len(texts)])
            if hi > lo:
                yield [texts[i - start] for i in indices[lo:hi]]

    def texts_at(self, indices: np.ndarray, max_chars: int | None = None) -> dict[int, str]:
        """A dict index -> text (optionally cut) for the given indices."""
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        found: dict[int, str] = {}
        position = 0
        for texts in self.take(wanted):
            for text in texts:
                found[int(wanted[position])] = text if max_chars is None else text[:max_chars]
                position += 1
        return found
