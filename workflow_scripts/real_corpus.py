"""Stage: the real (human-written) corpus, mixed by kind (web : code : math) with a held-out split.

Sources are configurable: local JSONL / Parquet / text globs, each tagged ``web``, ``code`` or ``math``.
The default needs no download: it reads what every Python installation carries, and is deterministic
for a given Python version:

* ``python_stdlib_docs`` (web-like prose): the language reference and library topics shipped in
  ``pydoc_data`` plus the docstrings of standard-library modules (read with ``ast``, never imported);
* ``python_stdlib_code`` (code): the standard library's source files;
* ``python_stdlib_math`` (math): docstrings and source of the numeric modules (statistics, fractions,
  decimal, random, numbers, ...), kept out of the other two sources.

Documents longer than ``max_chars_per_document`` are split at blank lines; shorter than
``min_chars_per_document`` are dropped. Each kind gets ``weight / sum(weights)`` of ``max_chars``;
when a kind has less text than its share, every budget shrinks so that the ratio still holds. Within a
kind, documents are taken in a seeded order (the SHA-256 of ``"{seed}:{doc_id}"``) while the characters
taken before them are below the kind's budget. ``heldout_fraction`` of the kept documents (chosen by a
hash of their id) go to ``heldout.parquet``, the others to ``train.parquet``; rows are ordered by kind
(code, math, web), then by the seeded order.

The stage streams, so that memory does not grow with the size of the text:

1. pass 1 reads every source (Parquet in record batches, JSONL line by line, text files one at a time)
   and keeps ~40 bytes per document: its kind, a 128-bit prefix of its seeded rank and its length;
   from these the kept documents and their output rows follow;
2. pass 2 reads the sources again and spills the kept documents, in source order, into Arrow IPC files
   (in the artifact's temporary directory), one per split and range of output rows of about
   ``BUCKET_CHARS`` characters (a bucket; past ``MAX_BUCKETS`` buckets, they grow instead);
3. the buckets are sorted one at a time in memory and streamed into the Parquet files, in row groups of
   a size set by the average document (so a small corpus is one row group, as ``write_parquet`` makes,
   and is written byte for byte as by the in-memory implementation before).
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import logging
import math
import platform
import re
import resource
import sysconfig
import tempfile
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source
from tqdm import tqdm

from workflow_scripts.config import CorpusSource, RealCorpusConfig
from workflow_scripts.core.artifacts import InputError, build_artifact
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.identity import job_identity

log = logging.getLogger(__name__)

MATH_MODULES = ("statistics", "fractions", "_pydecimal", "random", "numbers", "colorsys", "cmath", "math")
SKIPPED_DIRS = {"test", "tests", "idlelib", "turtledemo", "ensurepip", "site-packages", "dist-packages",
                "__pycache__", "lib2to3", "pydoc_data", "config-3.11-x86_64-linux-gnu"}
SCHEMA = {"doc_id": pl.String, "source": pl.String, "kind": pl.String, "text": pl.String}
KINDS = ("code", "math", "web")  # sorted: the order of the kinds in the output
SPLITS = ("train", "heldout")

# Memory bounds. None changes the output: tests shrink them to cross every batch boundary.
PARQUET_READ_ROWS = 1024  # rows per record batch read from a Parquet source
SPILL_BUFFER_CHARS = 1 << 22  # kept text buffered in pass 2 before it is appended to the buckets
BUCKET_CHARS = 1 << 23  # text per bucket, sorted in memory one bucket at a time
MAX_BUCKETS = 256  # each split's bucket holds an open file; past this, buckets grow instead
ROW_GROUP_CHARS = 1 << 23  # text per Parquet row group, on average
ROW_GROUP_ROWS = (1024, 1 << 20)  # bounds on the rows per row group
SINK_SLICE_ROWS = 1024  # rows per frame handed to the Parquet writer
LOG_EVERY_DOCUMENTS = 1_000_000

SPILL_SCHEMA = pa.schema([("position", pa.int64()), ("doc_id", pa.string()), ("source", pa.string()),
                          ("kind", pa.string()), ("text", pa.large_string())])
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Chunk(NamedTuple):
    doc_id: str
    source: str
    kind: str
    text: str


# --- reading sources --------------------------------------------------------------------------------------


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    root = stdlib_dir()
    return sorted(p for p in root.rglob("*.py")
                  if not SKIPPED_DIRS.intersection(p.relative_to(root).parts[:-1]))


def is_math_module(path: Path) -> bool:
    return path.stem in MATH_MODULES and path.parent == stdlib_dir()


def docstrings(source: str) -> Iterator[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text:
                yield text


def read_stdlib_docs() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc/{name}", topics[name]
    root = stdlib_dir()
    for path in stdlib_files():
        if not is_math_module(path):
            text = "\n\n".join(docstrings(path.read_text(encoding="utf-8", errors="replace")))
            yield f"docstrings/{path.relative_to(root).as_posix()}", text


def read_stdlib_code() -> Iterator[tuple[str, str]]:
    root = stdlib_dir()
    for path in stdlib_files():
        if not is_math_module(path):
            yield path.relative_to(root).as_posix(), path.read_text(encoding="utf-8", errors="replace")


def read_stdlib_math() -> Iterator[tuple[str, str]]:
    root = stdlib_dir()
    for path in stdlib_files():
        if is_math_module(path):
            source = path.read_text(encoding="utf-8", errors="replace")
            yield f"docstrings/{path.name}", "\n\n".join(docstrings(source))
            yield path.relative_to(root).as_posix(), source


def matched_files(source: CorpusSource) -> list[Path]:
    files = sorted({Path(f) for pattern in source.paths for f in glob.glob(pattern, recursive=True)})
    if not files:
        raise InputError(f"real_corpus source {source.name!r}: no file matches {source.paths}")
    return files


def read_parquet_texts(file: Path, text_field: str) -> Iterator[tuple[int, str]]:
    """(row, text) of every non-null value of ``text_field``, read in record batches."""
    try:
        with pq.ParquetFile(file) as parquet:
            columns = parquet.schema_arrow.names
            if text_field not in columns:
                raise InputError(f"{file}: no column {text_field!r} (columns: {columns})")
            row = 0
            for batch in parquet.iter_batches(batch_size=PARQUET_READ_ROWS, columns=[text_field]):
                for text in batch.column(0).to_pylist():
                    if text is not None:
                        yield row, str(text)
                    row += 1
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{file}: not a readable Parquet file ({error})") from None


def read_jsonl_texts(file: Path, text_field: str) -> Iterator[tuple[int, str]]:
    """(row, text) of every JSON object with a non-null ``text_field``; rows count the non-blank lines."""
    row, found = 0, False
    columns: dict[str, None] = {}  # the keys seen until ``text_field`` is, for the error message
    with file.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
                raise InputError(f"{file}: line {number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise InputError(f"{file}: line {number}: not a JSON object")
            if not found:
                columns.update(dict.fromkeys(record))
                found = text_field in record
            text = record.get(text_field)
            if text is not None:
                text = str(text)
                if b"\\ud" in line or b"\\uD" in line:  # an escaped lone surrogate cannot be stored as UTF-8
                    text = LONE_SURROGATE.sub("\ufffd", text)
                yield row, text
            row += 1
    if not found:
        raise InputError(f"{file}: no column {text_field!r} (columns: {list(columns)})")


def read_files(source: CorpusSource) -> Iterator[tuple[str, str]]:
    for file in matched_files(source):
        if source.type == "text":
            yield file.as_posix(), file.read_text(encoding="utf-8", errors="replace")
            continue
        reader = read_parquet_texts if source.type == "parquet" else read_jsonl_texts
        for row, text in reader(file, source.text_field):
            yield f"{file.as_posix()}#{row}", text


READERS = {
    "python_stdlib_docs": lambda s: read_stdlib_docs(),
    "python_stdlib_code": lambda s: read_stdlib_code(),
    "python_stdlib_math": lambda s: read_stdlib_math(),
}


def read_source(source: CorpusSource) -> Iterator[tuple[str, str]]:
    reader = READERS.get(source.type, read_files)
    yield from reader(source)


# --- shaping ----------------------------------------------------------------------------------------------


def split_document(text: str, max_chars: int) -> list[str]:
    """Split at blank lines into chunks of at most ``max_chars`` (a longer paragraph is cut hard)."""
    chunks, current = [], ""
    for paragraph in text.split("\n\n"):
        while len(paragraph) > max_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(paragraph[:max_chars])
            paragraph = paragraph[max_chars:]
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) > max_chars:
            chunks.append(current)
            current = paragraph
        else:
            current = candidate
    if current:
        chunks.append(current)
    return [c.strip() for c in chunks if c.strip()]


@dataclass
class DropCount:
    short_chunks: int = 0


def chunks(config: RealCorpusConfig, dropped: DropCount | None = None) -> Iterator[Chunk]:
    """Every document of every source, split and filtered, in source order."""
    dropped = dropped if dropped is not None else DropCount()
    for source in config.sources:
        for name, text in read_source(source):
            for index, chunk in enumerate(split_document(text, config.max_chars_per_document)):
                if len(chunk) < config.min_chars_per_document:
                    dropped.short_chunks += 1
                    continue
                yield Chunk(f"{source.name}/{name}#{index}", source.name, source.kind, chunk)


def with_progress(documents: Iterator[Chunk], what: str, total: int | None = None) -> Iterator[Chunk]:
    """A progress bar on a terminal, and a log line every LOG_EVERY_DOCUMENTS documents."""
    bar = tqdm(documents, desc=what, unit=" docs", total=total, disable=None)
    for count, document in enumerate(bar, start=1):
        if count % LOG_EVERY_DOCUMENTS == 0:
            log.info("%s: %d%s documents", what, count, f" of {total}" if total else "")
        yield document


def seeded_rank(doc_id: str, seed: int) -> tuple[int, int]:
    """The first 128 bits of the seeded SHA-256 as two integers: they order as its hex digest does."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")


def is_heldout(doc_id: str, fraction: float, seed: int) -> bool:
    bucket = int(hashlib.sha256(f"heldout:{seed}:{doc_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


# --- pass 1: facts and selection --------------------------------------------------------------------------


@dataclass
class DocumentFacts:
    """A few bytes per document read, in source order."""

    kinds: np.ndarray  # uint8: index into KINDS
    rank_high: np.ndarray  # uint64
    rank_low: np.ndarray  # uint64
    chars: np.ndarray  # int64
    dropped_short_chunks: int

    def __len__(self) -> int:
        return len(self.chars)


def scan(config: RealCorpusConfig) -> DocumentFacts:
    kinds, high, low, chars = array("B"), array("Q"), array("Q"), array("q")
    dropped = DropCount()
    for chunk in with_progress(chunks(config, dropped), "pass 1/2 (facts)"):
        rank = seeded_rank(chunk.doc_id, config.seed)
        kinds.append(KINDS.index(chunk.kind))
        high.append(rank[0])
        low.append(rank[1])
        chars.append(len(chunk.text))
    return DocumentFacts(np.frombuffer(kinds, np.uint8), np.frombuffer(high, np.uint64),
                         np.frombuffer(low, np.uint64), np.frombuffer(chars, np.int64), dropped.short_chunks)


def output_positions(facts: DocumentFacts, config: RealCorpusConfig) -> np.ndarray:
    """Each document's row in the mixed corpus (kinds in order, then seeded rank), or -1 when not kept."""
    weights = {kind: w for kind, w in config.weights.items() if w > 0}
    total_weight = sum(weights.values())
    available = {k: int(facts.chars[facts.kinds == KINDS.index(k)].sum()) for k in weights}
    for kind, chars in available.items():
        if not chars:
            raise InputError(f"real_corpus: the sources of kind {kind!r} yielded no usable text")
    shares = {k: config.max_chars * w / total_weight for k, w in weights.items()}
    scale = min([1.0] + [available[k] / shares[k] for k in weights])
    positions = np.full(len(facts), -1, dtype=np.int64)
    taken = 0
    for kind in sorted(weights):
        members = np.flatnonzero(facts.kinds == KINDS.index(kind))
        ranked = members[np.lexsort((facts.rank_low[members], facts.rank_high[members]))]
        chars = facts.chars[ranked]
        kept = ranked[np.cumsum(chars) - chars < shares[kind] * scale]
        positions[kept] = np.arange(taken, taken + len(kept))
        taken += len(kept)
        log.info("%-4s: %d of %d documents, %d of %d characters (budget %.0f)", kind, len(kept),
                 len(members), int(facts.chars[kept].sum()), available[kind], shares[kind] * scale)
    return positions


def max_buckets() -> int:
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return MAX_BUCKETS
    return max(1, min(MAX_BUCKETS, (soft_limit - 64) // len(SPLITS)))


def bucket_of_positions(positions: np.ndarray, chars: np.ndarray) -> np.ndarray:
    """The bucket of every output row: consecutive rows with about BUCKET_CHARS characters in all."""
    kept = positions >= 0
    row_chars = np.zeros(int(kept.sum()), dtype=np.int64)
    row_chars[positions[kept]] = chars[kept]
    before = np.cumsum(row_chars) - row_chars
    bucket_chars = max(BUCKET_CHARS, math.ceil(int(row_chars.sum()) / max_buckets()))
    return (before // bucket_chars).astype(np.int32)


def rows_per_group(positions: np.ndarray, chars: np.ndarray) -> int:
    kept = chars[positions >= 0]
    mean = max(1, int(kept.mean())) if len(kept) else 1
    low, high = ROW_GROUP_ROWS
    return min(high, max(low, ROW_GROUP_CHARS // mean))


# --- pass 2: spill the kept documents by bucket -----------------------------------------------------------


@dataclass
class SplitStats:
    documents: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    chars: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, chars: int) -> None:
        self.documents[kind] += 1
        self.chars[kind] += chars

    def by_kind(self) -> dict[str, dict[str, int]]:
        return {kind: {"documents": documents, "chars": self.chars[kind]}
                for kind, documents in self.documents.items()}


class BucketSpill:
    """Kept documents, appended in source order to one Arrow IPC stream per (split, bucket)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writers: dict[tuple[str, int], pa.ipc.RecordBatchStreamWriter] = {}
        self.buffers: dict[tuple[str, int], list[tuple[int, Chunk]]] = defaultdict(list)
        self.buffered_chars = 0

    def path(self, split: str, bucket: int) -> Path:
        return self.directory / f"{split}-{bucket:05d}.arrow"

    def add(self, split: str, bucket: int, position: int, chunk: Chunk) -> None:
        self.buffers[split, bucket].append((position, chunk))
        self.buffered_chars += len(chunk.text)
        if self.buffered_chars >= SPILL_BUFFER_CHARS:
            self.flush()

    def flush(self) -> None:
        for key, rows in self.buffers.items():
            if key not in self.writers:
                self.writers[key] = pa.ipc.new_stream(self.path(*key), SPILL_SCHEMA)
            positions = [position for position, _ in rows]
            doc_ids, sources, kinds, texts = map(list, zip(*(chunk for _, chunk in rows)))
            batch = pa.record_batch([positions, doc_ids, sources, kinds, texts], schema=SPILL_SCHEMA)
            self.writers[key].write_batch(batch)
        self.buffers.clear()
        self.buffered_chars = 0

    def close(self) -> None:
        self.flush()
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def sorted_rows(self, split: str, bucket: int) -> pl.DataFrame | None:
        """The bucket's rows in output order, or None when it holds none of ``split``."""
        path = self.path(split, bucket)
        if not path.is_file():
            return None
        with pa.ipc.open_stream(path) as reader:
            frame = pl.DataFrame(reader.read_all())
        return frame.sort("position").drop("position")


def spill_kept(config: RealCorpusConfig, facts: DocumentFacts, positions: np.ndarray, buckets: np.ndarray,
               spill: BucketSpill) -> dict[str, SplitStats]:
    stats = {split: SplitStats() for split in SPLITS}
    index = -1
    for index, chunk in enumerate(with_progress(chunks(config), "pass 2/2 (spill)", total=len(facts))):
        if index >= len(facts) or len(chunk.text) != facts.chars[index]:
            raise InputError(f"real_corpus: the sources changed while the stage read them ({chunk.doc_id})")
        position = int(positions[index])
        if position < 0:
            continue
        split = "heldout" if is_heldout(chunk.doc_id, config.heldout_fraction, config.seed) else "train"
        spill.add(split, int(buckets[position]), position, chunk)
        stats[split].add(chunk.kind, len(chunk.text))
    if index + 1 != len(facts):
        raise InputError("real_corpus: the sources changed while the stage read them (fewer documents)")
    spill.close()
    return stats


# --- writing ----------------------------------------------------------------------------------------------


def write_split(spill: BucketSpill, split: str, bucket_count: int, path: Path, group_rows: int) -> None:
    """Stream the split's buckets, each sorted, into one Parquet file (polars' writer, as before)."""

    def sorted_buckets(*_: object) -> Iterator[pl.DataFrame]:  # the sink asks for every column and row
        for bucket in range(bucket_count):
            rows = spill.sorted_rows(split, bucket)
            if rows is not None:
                log.debug("%s: bucket %d of %d, %d rows", split, bucket + 1, bucket_count, rows.height)
                yield from rows.iter_slices(SINK_SLICE_ROWS)

    register_io_source(sorted_buckets, schema=pl.Schema(SCHEMA)).sink_parquet(path, row_group_size=group_rows)


@dataclass
class CorpusSummary:
    documents_read: int
    dropped_short_chunks: int
    stats: dict[str, dict[str, dict[str, int]]]  # split -> kind -> documents, chars


def build_corpus(config: RealCorpusConfig, out: Path) -> CorpusSummary:
    """Write ``train.parquet`` and ``heldout.parquet`` under ``out``; memory does not grow with the text."""
    facts = scan(config)
    log.info("read %d documents from %d sources", len(facts), len(config.sources))
    positions = output_positions(facts, config)
    buckets = bucket_of_positions(positions, facts.chars)
    bucket_count = int(buckets[-1]) + 1 if len(buckets) else 0
    log.info("kept %d documents; sorting them in %d buckets", len(buckets), bucket_count)
    with tempfile.TemporaryDirectory(prefix=".spill-", dir=out) as directory:
        spill = BucketSpill(Path(directory))
        stats = spill_kept(config, facts, positions, buckets, spill)
        group_rows = rows_per_group(positions, facts.chars)
        for split in SPLITS:
            log.info("writing %s.parquet (%d rows per row group)", split, group_rows)
            write_split(spill, split, bucket_count, out / f"{split}.parquet", group_rows)
    return CorpusSummary(len(facts), facts.dropped_short_chunks, {s: stats[s].by_kind() for s in SPLITS})


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    corpus = config.real_corpus
    external = {f"{s.name}_{i}": f for s in corpus.sources if s.type in ("jsonl", "parquet", "text")
                for i, f in enumerate(matched_files(s))}
    with build_artifact(args.out, identity=job_identity(config, "real_corpus", inputs=external),
                        inputs=external) as artifact:
        summary = build_corpus(corpus, artifact.path)
        stats = summary.stats
        (artifact.path / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        artifact.info.update(python_version=platform.python_version(), kinds=stats)
        artifact.counts.update(
            dropped_short_chunks=summary.dropped_short_chunks, documents_read=summary.documents_read,
            train_documents=sum(v["documents"] for v in stats["train"].values()),
            heldout_documents=sum(v["documents"] for v in stats["heldout"].values()),
            train_chars=sum(v["chars"] for v in stats["train"].values()))
        for kind, values in sorted(stats["train"].items()):
            log.info("train %-4s: %6d documents, %9d characters", kind, values["documents"], values["chars"])


def main(argv: list[str] | None = None) -> int:
    return run_main(run, stage_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
