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
when a kind has less text than its share, every budget shrinks so that the ratio still holds.
``heldout_fraction`` of the documents (chosen by a hash of their id) go to ``heldout.parquet``.
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import logging
import platform
import sysconfig
from pathlib import Path
from typing import Iterator

import polars as pl

from workflow_scripts.config import CorpusSource, RealCorpusConfig
from workflow_scripts.core.artifacts import InputError, build_artifact
from workflow_scripts.core.cli import load_checked_config, run_main, stage_parser
from workflow_scripts.core.identity import job_identity

log = logging.getLogger(__name__)

MATH_MODULES = ("statistics", "fractions", "_pydecimal", "random", "numbers", "colorsys", "cmath", "math")
SKIPPED_DIRS = {"test", "tests", "idlelib", "turtledemo", "ensurepip", "site-packages", "dist-packages",
                "__pycache__", "lib2to3", "pydoc_data", "config-3.11-x86_64-linux-gnu"}
SCHEMA = {"doc_id": pl.String, "source": pl.String, "kind": pl.String, "text": pl.String}


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


def read_files(source: CorpusSource) -> Iterator[tuple[str, str]]:
    for file in matched_files(source):
        if source.type == "text":
            yield file.as_posix(), file.read_text(encoding="utf-8", errors="replace")
            continue
        if source.type == "parquet":
            frame = pl.read_parquet(file)
        else:
            try:
                frame = pl.read_ndjson(file)
            except Exception as error:  # polars raises several types for malformed JSON
                raise InputError(f"{file}: not valid JSON lines ({error})") from None
        if source.text_field not in frame.columns:
            raise InputError(f"{file}: no column {source.text_field!r} (columns: {frame.columns})")
        for row, text in enumerate(frame[source.text_field]):
            if text is not None:
                yield f"{file.as_posix()}#{row}", str(text)


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


def documents(config: RealCorpusConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    rows: dict[str, list[str]] = {name: [] for name in SCHEMA}
    dropped = 0
    for source in config.sources:
        for name, text in read_source(source):
            for index, chunk in enumerate(split_document(text, config.max_chars_per_document)):
                if len(chunk) < config.min_chars_per_document:
                    dropped += 1
                    continue
                rows["doc_id"].append(f"{source.name}/{name}#{index}")
                rows["source"].append(source.name)
                rows["kind"].append(source.kind)
                rows["text"].append(chunk)
    return pl.DataFrame(rows, schema=SCHEMA), {"dropped_short_chunks": dropped}


def seeded_rank(ids: pl.Series, seed: int) -> pl.Series:
    return pl.Series([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids])


def mix_by_weight(docs: pl.DataFrame, config: RealCorpusConfig) -> pl.DataFrame:
    """Keep documents per kind, in a seeded order, up to each kind's share of the character budget."""
    weights = {kind: w for kind, w in config.weights.items() if w > 0}
    total_weight = sum(weights.values())
    available = {k: docs.filter(pl.col("kind") == k)["text"].str.len_chars().sum() for k in weights}
    for kind, chars in available.items():
        if not chars:
            raise InputError(f"real_corpus: the sources of kind {kind!r} yielded no usable text")
    shares = {k: config.max_chars * w / total_weight for k, w in weights.items()}
    scale = min([1.0] + [available[k] / shares[k] for k in weights])
    kept = []
    for kind in sorted(weights):
        part = docs.filter(pl.col("kind") == kind)
        part = part.with_columns(seeded_rank(part["doc_id"], config.seed).alias("_rank")).sort("_rank")
        cumulative = part["text"].str.len_chars().cum_sum()
        kept.append(part.filter(cumulative - part["text"].str.len_chars() < shares[kind] * scale).drop("_rank"))
    return pl.concat(kept)


def split_heldout(docs: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    bucket = [int(hashlib.sha256(f"heldout:{seed}:{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
              for i in docs["doc_id"]]
    is_heldout = pl.Series(bucket) < fraction
    return docs.filter(~is_heldout), docs.filter(is_heldout)


def kind_stats(docs: pl.DataFrame) -> dict[str, dict[str, int]]:
    stats = docs.group_by("kind").agg(pl.len().alias("documents"), pl.col("text").str.len_chars().sum().alias("chars"))
    return {row["kind"]: {"documents": row["documents"], "chars": row["chars"]} for row in stats.iter_rows(named=True)}


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    corpus = config.real_corpus
    external = {f"{s.name}_{i}": f for s in corpus.sources if s.type in ("jsonl", "parquet", "text")
                for i, f in enumerate(matched_files(s))}
    with build_artifact(args.out, identity=job_identity(config, "real_corpus", inputs=external),
                        inputs=external) as artifact:
        docs, counts = documents(corpus)
        log.info("read %d documents from %d sources", docs.height, len(corpus.sources))
        mixed = mix_by_weight(docs, corpus)
        train, heldout = split_heldout(mixed, corpus.heldout_fraction, corpus.seed)
        train.write_parquet(artifact.path / "train.parquet")
        heldout.write_parquet(artifact.path / "heldout.parquet")
        stats = {"train": kind_stats(train), "heldout": kind_stats(heldout)}
        (artifact.path / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        artifact.info.update(python_version=platform.python_version(), kinds=stats)
        artifact.counts.update(counts, documents_read=docs.height, train_documents=train.height,
                               heldout_documents=heldout.height,
                               train_chars=int(train["text"].str.len_chars().sum() or 0))
        for kind, values in sorted(stats["train"].items()):
            log.info("train %-4s: %6d documents, %9d characters", kind, values["documents"], values["chars"])


def main(argv: list[str] | None = None) -> int:
    return run_main(run, stage_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
