"""Stage eval_tasks: lm-eval task YAMLs + JSONL data built from the held-out real corpus (no network).

For every entry of ``evaluation.local_tasks`` it writes ``<task>.jsonl`` and ``<task>.yaml`` (from the
templates in ``evaluate/templates``). The YAMLs name their data file as ``${data_dir}/<task>.jsonl``;
the evaluate stage fills in the artifact's absolute path at run time, so the artifact's content (and
hash) does not depend on where it lies.

Input: a ``real_corpus`` artifact (``heldout.parquet`` with columns doc_id, source, kind, text).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import string
from pathlib import Path
from typing import Any

import polars as pl

from workflow_scripts.config.evaluate import (
    ContinuationTask,
    EvaluationConfig,
    PerplexityTask,
)
from workflow_scripts.core.artifacts import InputError, build_artifact, read_manifest
from workflow_scripts.core.cli import load_checked_config
from workflow_scripts.core.identity import job_identity

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
HELDOUT_FILE = "heldout.parquet"
REQUIRED_COLUMNS = ("doc_id", "kind", "text")
DATA_DIR_PLACEHOLDER = "data_dir"


def read_heldout(corpus: Path) -> pl.DataFrame:
    """The held-out documents of a real_corpus artifact (or a Parquet file with the same columns)."""
    if corpus.is_dir():
        read_manifest(corpus, stage="real_corpus")
        corpus = corpus / HELDOUT_FILE
    if not corpus.is_file():
        raise InputError(f"{corpus}: held-out corpus file not found")
    frame = pl.read_parquet(corpus)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{corpus}: missing columns {missing} (has {frame.columns})")
    nulls = frame.filter(pl.col("text").is_null() | pl.col("doc_id").is_null())
    if nulls.height:
        raise InputError(f"{corpus}: row with doc_id {nulls['doc_id'][0]!r} has a null text or doc_id")
    return frame


def _rank(doc_id: str, seed: int, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{seed}:{doc_id}".encode()).hexdigest()


def select_documents(
    frame: pl.DataFrame, kinds: list[str], n: int, seed: int, salt: str, min_chars: int = 1
) -> pl.DataFrame:
    """Up to ``n`` documents in a seeded order that does not depend on the file's row order."""
    if kinds:
        frame = frame.filter(pl.col("kind").is_in(kinds))
    frame = frame.filter(pl.col("text").str.len_chars() >= min_chars)
    ranks = [_rank(d, seed, salt) for d in frame["doc_id"]]
    return frame.with_columns(pl.Series("_rank", ranks, dtype=pl.String)).sort("_rank").drop("_rank").head(n)


def cut_at_space(text: str, limit: int) -> int:
    """Index <= limit just before a whitespace character (so what follows starts with it); ``limit`` if
    the first half of the window has no whitespace."""
    if len(text) <= limit:
        return len(text)
    for index in range(limit, limit // 2, -1):
        if text[index].isspace():
            return index
    return limit


def continuation_split(text: str, context_chars: int, continuation_chars: int) -> tuple[str, str]:
    cut = cut_at_space(text, context_chars)
    rest = text[cut:]
    return text[:cut], rest[: cut_at_space(rest, continuation_chars)]


def build_perplexity(frame: pl.DataFrame, spec: PerplexityTask, seed: int, name: str) -> list[dict[str, Any]]:
    docs = select_documents(frame, spec.kinds, spec.documents, seed, name)
    rows = []
    for doc_id, kind, text in docs.select("doc_id", "kind", "text").iter_rows():
        piece = text[: cut_at_space(text, spec.max_chars)].strip()
        if piece:
            rows.append({"doc_id": doc_id, "kind": kind, "text": piece})
    return rows


def continuation_windows(text: str, spec: ContinuationTask) -> list[tuple[str, str]]:
    """Up to ``windows_per_document`` (context, continuation) pairs from consecutive stretches of ``text``."""
    windows = []
    rest = text
    while len(windows) < spec.windows_per_document:
        context, continuation = continuation_split(rest, spec.context_chars, spec.continuation_chars)
        if len(context) + len(continuation) < spec.context_chars + spec.continuation_chars // 2:
            break  # too little text left for a full window
        if context.strip() and continuation.strip():
            windows.append((context.lstrip(), continuation))
        rest = rest[len(context) + len(continuation) :]
    return windows


def build_continuation(
    frame: pl.DataFrame, spec: ContinuationTask, seed: int, name: str
) -> list[dict[str, Any]]:
    """Questions whose gold choice is the document's own continuation; distractors continue others."""
    # A document needs room for a full context and a continuation; only those give questions or distractors.
    min_chars = spec.context_chars + spec.continuation_chars // 2
    pool = select_documents(frame, spec.kinds, frame.height, seed, name, min_chars=min_chars)
    pieces: list[tuple[str, str, str, str]] = []
    for doc_id, kind, text in pool.select("doc_id", "kind", "text").iter_rows():
        pieces += [
            (doc_id, kind, context, continuation)
            for context, continuation in continuation_windows(text, spec)
        ]
    if len({piece[0] for piece in pieces}) < spec.choices:
        raise InputError(
            f"task {name!r}: only {len({p[0] for p in pieces})} held-out documents have at least {min_chars} "
            f"characters, fewer than the {spec.choices} choices per question; lower context_chars/choices or "
            "use more held-out data"
        )
    rng = random.Random(f"{name}:{seed}")
    by_kind: dict[str, list[int]] = {}
    for index, piece in enumerate(pieces):
        by_kind.setdefault(piece[1], []).append(index)
    rows = []
    for index, (doc_id, kind, context, continuation) in enumerate(pieces[: spec.questions]):
        distractors = _distractors(pieces, by_kind, index, spec, rng)
        if distractors is None:
            continue
        label = rng.randrange(spec.choices)
        choices = distractors[:label] + [continuation] + distractors[label:]
        rows.append({"doc_id": doc_id, "kind": kind, "context": context, "choices": choices, "label": label})
    return rows


def _distractors(
    pieces: list[tuple[str, str, str, str]],
    by_kind: dict[str, list[int]],
    index: int,
    spec: ContinuationTask,
    rng: random.Random,
) -> list[str] | None:
    """Continuations of *other* documents (same kind first when configured), all distinct."""
    doc_id, kind, _, own = pieces[index]
    needed = spec.choices - 1
    same = [i for i in by_kind[kind] if pieces[i][0] != doc_id] if spec.same_kind_distractors else []
    excluded = set(same)
    others = [i for i in range(len(pieces)) if pieces[i][0] != doc_id and i not in excluded]
    rng.shuffle(same)
    rng.shuffle(others)
    chosen: list[str] = []
    for candidate in same + others:
        text = pieces[candidate][3]
        if text != own and text not in chosen:
            chosen.append(text)
        if len(chosen) == needed:
            return chosen
    log.warning("document %s: not enough distinct distractors, question skipped", doc_id)
    return None


def render_task_yaml(task_type: str, name: str) -> str:
    template = string.Template((TEMPLATES / f"{task_type}.yaml").read_text())
    return template.substitute(task=name)


def build_tasks(frame: pl.DataFrame, config: EvaluationConfig, out: Path) -> dict[str, int]:
    """Write ``<task>.jsonl`` + ``<task>.yaml`` for each local task; return the items (rows) per task."""
    counts: dict[str, int] = {}
    for name, spec in config.local_tasks.items():
        if isinstance(spec, PerplexityTask):
            rows = build_perplexity(frame, spec, config.seed, name)
        else:
            rows = build_continuation(frame, spec, config.seed, name)
        if not rows:
            raise InputError(f"task {name!r}: no held-out documents match (kinds {spec.kinds or 'all'})")
        with open(out / f"{name}.jsonl", "w") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (out / f"{name}.yaml").write_text(render_task_yaml(spec.type, name))
        counts[name] = len(rows)
        log.info("task %s (%s): %d documents", name, spec.type, len(rows))
    return counts


def materialise(tasks_dir: Path, dest: Path, cache_dir: Path) -> list[str]:
    """Copy the task YAMLs of an eval_tasks artifact into ``dest`` with the data path filled in.

    ``cache_dir`` is where ``datasets`` caches the JSON it reads: a fresh folder per run, because its cache
    of local files is keyed by path, and a stale one could outlive a rebuilt artifact.
    """
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    values = {DATA_DIR_PLACEHOLDER: str(tasks_dir.resolve()), "cache_dir": str(cache_dir.resolve())}
    for file in sorted(tasks_dir.glob("*.yaml")):
        text = string.Template(file.read_text()).safe_substitute(values)
        (dest / file.name).write_text(text)
        names.append(file.stem)
    return names


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config)
    section = config.evaluation
    frame = read_heldout(args.corpus)
    inputs = {"corpus": args.corpus}
    with build_artifact(args.out, identity=job_identity(config, "eval_tasks", inputs=inputs), inputs=inputs) as artifact:
        counts = build_tasks(frame, section, artifact.path)
        artifact.counts.update({f"{name}_items": n for name, n in counts.items()})
        artifact.info["tasks"] = {name: spec.type for name, spec in section.local_tasks.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", type=Path, required=True, help="real_corpus artifact directory (uses its heldout.parquet)"
    )
