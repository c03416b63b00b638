"""Stage: tokenize corpora into Megatron-core indexed datasets (.bin/.idx) with the tokenizer's identity.

Subcommands (all write one artifact directory with ``<dataset>.bin``/``<dataset>.idx`` and ``manifest.json``):

  real       the real_corpus artifact: ``train.parquet`` -> one dataset per ``kind`` (web, code, math)
             and, when present, ``heldout.parquet`` -> ``heldout_web``, ``heldout_code``, ``heldout_math``.
  synthetic  one experiment's generate artifact: its ``generations-*.parquet`` shards -> ``synthetic``.
  corpus     any Parquet file or directory of shards with a text column (ad hoc use, benchmarks).

Texts are streamed in bounded record batches, encoded in parallel worker processes by the fast Hugging Face
tokenizer (no special tokens added), and each document is followed by one end-of-document (EOD) token. The
token dtype is the smallest safe one for the vocabulary (uint16 up to 65,536 ids, else int32). Empty texts are
skipped and counted; a null text or group value is an input error naming the file and row. Output does not
depend on the number of workers.

The manifest's ``info.tokenizer`` records the tokenizer (name, revision, content hash, files hash, vocabulary
size, EOD id, dtype), ``info.datasets`` every dataset's document and token counts (EOD included), and
``files`` the content hash of every .bin/.idx. Consumers open it with
``workflow_scripts.tokenization.read_tokenized(path, expect=...)``, which refuses another tokenizer.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from workflow_scripts.config import PipelineConfig, lookup
from workflow_scripts.config.tokenize import LOCAL_TOKENIZER, TokenizeConfig
from workflow_scripts.core.artifacts import (
    ArtifactError,
    InputError,
    JobIdentity,
    build_artifact,
    read_manifest,
)
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import code_hash, job_identity
from workflow_scripts.core.stages import STAGES
from workflow_scripts.generate.reader import generation_shards
from workflow_scripts.tokenization.encode import OrderedPool, encode_batch, init_encoder
from workflow_scripts.tokenization.indexed import IndexedDatasetWriter
from workflow_scripts.tokenization.reader import TokenizerInfo, backend_json, load_tokenizer, tokenizer_info

log = logging.getLogger(__name__)

# Stage names in the pipeline plan, and the config keys each reads.
STAGE_REAL, STAGE_SYNTHETIC, STAGE_CORPUS = "tokenize_real", "tokenize_synthetic", "tokenize"
PARAM_KEYS = ("tokenize",)
REAL_TRAIN, REAL_HELDOUT, HELDOUT_PREFIX = "train.parquet", "heldout.parquet", "heldout_"
SYNTHETIC_DATASET = "synthetic"
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
READ_ROWS = 256  # rows per Parquet read; with buffered reads memory stays bounded even for huge row groups
READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Part:
    """Files tokenized together: into dataset ``name``, or one per value of ``group_by`` (+ ``prefix``)."""

    files: tuple[Path, ...]
    name: str = "corpus"
    group_by: str | None = None
    prefix: str = ""


@dataclass
class Batch:
    texts: Any  # a pyarrow string array: pickled to a worker as buffers; Python strings are made there
    names: np.ndarray | str  # the dataset of each document, or one name for all
    chars: int


@dataclass
class Totals:
    documents: int = 0
    tokens: int = 0
    chars: int = 0
    skipped_empty: int = 0
    chars_per_dataset: dict[str, int] = field(default_factory=dict)


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def input_files(path: Path, pattern: str = "*.parquet") -> tuple[Path, ...]:
    """``path`` itself, or the files under it matching ``pattern``, sorted (shard order = document order)."""
    if path.is_file():
        return (path,)
    if not path.is_dir():
        raise FileNotFoundError(f"corpus {path} does not exist")
    files = tuple(sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith(".")))
    if not files:
        raise InputError(f"{path}: no files match {pattern!r}")
    return files


def _check_schema(file: Path, schema, columns: list[str]) -> None:
    import pyarrow as pa

    for column in columns:
        if column not in schema.names:
            raise InputError(f"{file}: no column {column!r} (columns: {schema.names})")
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
            raise InputError(f"{file}: column {column!r} holds {kind}, expected text")


def read_batches(parts: list[Part], text_column: str, batch_chars: int, totals: Totals) -> Iterator[Batch]:
    """Stream batches of about ``batch_chars`` characters (never mixing parts); skip empty texts.

    The texts stay Arrow arrays here, so this process only decompresses and checks (vectorised); turning
    them into Python strings is left to the workers, in parallel.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part in parts:
        texts: list[Any] = []
        names: list[np.ndarray] = []
        chars = 0
        for file in part.files:
            parquet = pq.ParquetFile(file, buffer_size=READ_BUFFER, pre_buffer=False)
            columns = [text_column] + ([part.group_by] if part.group_by else [])
            _check_schema(file, parquet.schema_arrow, columns)
            row = 0
            for record_batch in parquet.iter_batches(
                batch_size=READ_ROWS, columns=columns, use_threads=False
            ):
                batch_texts, batch_names, lengths = _checked(
                    file, row, record_batch, part, text_column, totals
                )
                row += record_batch.num_rows
                if batch_texts is None:
                    continue
                texts.append(batch_texts.cast(pa.large_string()))
                names.append(batch_names)
                chars += int(lengths.sum())
                if chars >= batch_chars:
                    yield _batch(texts, names, part, chars)
                    texts, names, chars = [], [], 0
        if texts:
            yield _batch(texts, names, part, chars)


def _checked(file: Path, row: int, record_batch, part: Part, text_column: str, totals: Totals):
    """(non-empty texts, their dataset names or None, their lengths in characters) of one record batch."""
    import pyarrow.compute as pc

    texts = record_batch.column(0)
    if texts.null_count:
        first = pc.index(pc.is_null(texts), True).as_py()
        raise InputError(f"{file}: row {row + first}: {text_column!r} is null")
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False)
    keep = lengths > 0
    groups = None
    if part.group_by:
        column = record_batch.column(1)
        bad_row = pc.index(pc.is_null(column), True).as_py() if column.null_count else -1
        unique, first_rows, inverse = np.unique(
            column.to_numpy(zero_copy_only=False).astype(str), return_index=True, return_inverse=True
        )
        if bad_row < 0:
            bad_row = next(
                (int(first) for value, first in zip(unique, first_rows) if not DATASET_NAME.match(value)), -1
            )
        if bad_row >= 0:
            raise InputError(
                f"{file}: row {row + bad_row}: {part.group_by!r} is {column[bad_row].as_py()!r}, "
                "expected a name (letters, digits, '_', '.', '-')"
            )
        datasets = np.array([part.prefix + value for value in unique], dtype=object)
        groups = datasets[inverse]
    if not keep.all():
        totals.skipped_empty += int((~keep).sum())
        if not keep.any():
            return None, None, lengths[:0]
        texts, lengths = texts.filter(keep), lengths[keep]
        groups = groups[keep] if groups is not None else None
    if groups is None:
        totals.chars_per_dataset[part.name] = totals.chars_per_dataset.get(part.name, 0) + int(lengths.sum())
    else:
        for name in np.unique(groups):
            totals.chars_per_dataset[name] = totals.chars_per_dataset.get(name, 0) + int(
                lengths[groups == name].sum()
            )
    return texts, groups, lengths


def _batch(texts: list[Any], names: list[np.ndarray | None], part: Part, chars: int) -> Batch:
    import pyarrow as pa

    joined = texts[0] if len(texts) == 1 else pa.concat_arrays(texts)
    return Batch(joined, part.name if part.group_by is None else np.concatenate(names), chars)


def _split(
    names: np.ndarray | str, lengths: np.ndarray, tokens: np.ndarray
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Route a batch's documents to their datasets, keeping their order."""
    if isinstance(names, str):
        yield names, lengths, tokens
        return
    unique, codes = np.unique(names, return_inverse=True)
    if len(unique) == 1:
        yield str(unique[0]), lengths, tokens
        return
    token_codes = np.repeat(codes, lengths)
    for code, name in enumerate(unique):
        yield str(name), lengths[codes == code], tokens[token_codes == code]


def tokenize_parts(
    parts: list[Part],
    out: Path,
    *,
    tokenizer: str,
    identity: JobIdentity,
    revision: str | None = None,
    eod_token: str | None = None,
    text_column: str = "text",
    inputs: dict[str, Path] | None = None,
    workers: int | None = None,
    batch_chars: int = 1 << 20,
    source: dict[str, Any] | None = None,
) -> TokenizerInfo:
    """Tokenize ``parts`` into artifact ``out`` (``identity``: what its manifest records)."""
    hf_tokenizer = load_tokenizer(tokenizer, revision)
    info = tokenizer_info(hf_tokenizer, tokenizer, revision, eod_token)
    workers = max(1, workers or available_cores())
    inputs = dict(inputs or {})
    if Path(tokenizer).is_dir() and "local_models" not in inputs:
        inputs.setdefault("tokenizer", Path(tokenizer))
    totals = Totals()
    log.info(
        "tokenizing %d file(s) with %s (vocab %d, EOD %d, %s) on %d worker(s)",
        sum(len(p.files) for p in parts),
        tokenizer,
        info.vocab_size,
        info.eod_id,
        info.dtype,
        workers,
    )
    with build_artifact(out, identity=identity, inputs=inputs) as artifact:
        writers: dict[str, IndexedDatasetWriter] = {}
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        try:
            _encode_into(
                parts,
                artifact.path,
                writers,
                info,
                backend_json(hf_tokenizer),
                text_column,
                workers,
                batch_chars,
                totals,
            )
            for writer in writers.values():
                writer.finalize()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        seconds = max(time.perf_counter() - started, 1e-9)
        cpu = _cpu_seconds() - cpu_started  # this process + its finished workers
        if not writers:
            raise InputError(f"{', '.join(str(f) for p in parts for f in p.files)}: no non-empty documents")
        artifact.info.update(
            tokenizer=info.model_dump(),
            datasets={
                name: {
                    "prefix": name,
                    "documents": w.documents,
                    "tokens": w.tokens,
                    "dtype": info.dtype,
                    "chars": totals.chars_per_dataset.get(name, 0),
                }
                for name, w in sorted(writers.items())
            },
            source={
                **(source or {}),
                "text_column": text_column,
                "files": [f.name for p in parts for f in p.files],
            },
        )
        artifact.counts.update(
            documents=totals.documents,
            tokens=totals.tokens,
            chars=totals.chars,
            skipped_empty=totals.skipped_empty,
            datasets=len(writers),
        )
        artifact.run.update(  # of this run only (the output does not depend on them): not hashed
            workers=workers,
            encode_seconds=round(seconds, 3),
            encode_cpu_seconds=round(cpu, 3),
            mb_per_s=round(totals.chars / 1e6 / seconds, 3),
            tokens_per_s=round(totals.tokens / seconds, 1),
        )
        log.info(
            "%d documents, %d tokens in %.1f s (%.2f MB/s of text, %.0f tokens/s)",
            totals.documents,
            totals.tokens,
            seconds,
            totals.chars / 1e6 / seconds,
            totals.tokens / seconds,
        )
    return info


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _encode_into(
    parts: list[Part],
    folder: Path,
    writers: dict[str, IndexedDatasetWriter],
    info: TokenizerInfo,
    tokenizer_json: str,
    text_column: str,
    workers: int,
    batch_chars: int,
    totals: Totals,
) -> None:
    from tqdm import tqdm

    in_flight: deque[Batch] = deque()  # batches submitted, in order; only names/chars are read back

    def texts() -> Iterator[Any]:
        for batch in read_batches(parts, text_column, batch_chars, totals):
            in_flight.append(batch)
            yield batch.texts

    progress = tqdm(unit="B", unit_scale=True, desc="tokenize", disable=None, mininterval=2)
    with OrderedPool(
        workers, init_encoder, (tokenizer_json, info.eod_id, info.vocab_size, info.dtype)
    ) as pool:
        for lengths, tokens in pool.map(encode_batch, texts()):
            batch = in_flight.popleft()
            for name, part_lengths, part_tokens in _split(batch.names, lengths, tokens):
                if name not in writers:
                    writers[name] = IndexedDatasetWriter(folder / name, info.dtype)
                writers[name].add(part_tokens, part_lengths)
            batch.texts = None  # the worker had its copy; do not keep the window's texts twice
            totals.documents += int(lengths.size)
            totals.tokens += int(tokens.size)
            totals.chars += batch.chars
            progress.update(batch.chars)
    progress.close()


# --- command line -----------------------------------------------------------------------------------------


def stage_identity(config: PipelineConfig, stage: str, experiment: str | None,
                   inputs: dict[str, Path]) -> JobIdentity:
    """The pipeline job's identity; an ad hoc ``corpus`` run (no job of the plan) records its params only."""
    if stage in STAGES:
        return job_identity(config, stage, experiment, inputs)
    log.info("stage %r is not a job of the pipeline: the manifest gets no fingerprint", stage)
    return JobIdentity(stage=stage, experiment=experiment, params={"tokenize": lookup(config, "tokenize")},
                       code_hash=code_hash(STAGES["tokenize_real"].code))


def resolve_tokenizer(spec: TokenizeConfig, local_models: Path | None) -> str:
    """Path or hub id to load: the local_models artifact's tokenizer for 'local', else the configured one."""
    if spec.tokenizer != LOCAL_TOKENIZER:
        return spec.tokenizer
    if local_models is None:
        raise ArtifactError("tokenize.tokenizer is 'local': pass --local-models (the local_models artifact)")
    if (local_models / "tokenizer.json").is_file():  # a tokenizer folder given directly
        return str(local_models)
    read_manifest(local_models, stage="local_models")
    if not (local_models / "tokenizer").is_dir():
        raise ArtifactError(f"{local_models} has no tokenizer/ folder")
    return str(local_models / "tokenizer")


def _run(
    args: argparse.Namespace, stage: str, parts: list[Part], inputs: dict[str, Path], source: dict[str, Any]
) -> None:
    config = load_checked_config(args.config, getattr(args, "experiment", None))
    spec = config.tokenize
    tokenizer = getattr(args, "tokenizer", None) or resolve_tokenizer(spec, args.local_models)
    if args.local_models is not None and not getattr(args, "tokenizer", None):
        inputs = {**inputs, "local_models": args.local_models}  # the artifact, as the pipeline plan names it
    identity = stage_identity(config, stage, getattr(args, "experiment", None), inputs)
    if getattr(args, "tokenizer", None):  # ad hoc override: record the value actually used
        params = {**identity.params, "tokenize": {**spec.model_dump(mode="json"), "tokenizer": args.tokenizer}}
        identity = replace(identity, params=params)
    tokenize_parts(
        parts,
        args.out,
        tokenizer=tokenizer,
        identity=identity,
        revision=spec.revision,
        eod_token=spec.eod_token,
        text_column=args.text_column,
        inputs=inputs,
        workers=args.workers,
        batch_chars=args.batch_chars,
        source=source,
    )


def run_real(args: argparse.Namespace) -> None:
    manifest = read_manifest(args.corpus, stage="real_corpus")
    parts = [Part(input_files(args.corpus / REAL_TRAIN), group_by="kind")]
    if (args.corpus / REAL_HELDOUT).is_file():
        parts.append(Part(input_files(args.corpus / REAL_HELDOUT), group_by="kind", prefix=HELDOUT_PREFIX))
    _run(
        args,
        STAGE_REAL,
        parts,
        {"corpus": args.corpus},
        {"artifact": args.corpus.as_posix(), "stage": manifest.stage},
    )


def run_synthetic(args: argparse.Namespace) -> None:
    parts = [Part(tuple(generation_shards(args.generations, args.experiment)), name=SYNTHETIC_DATASET)]
    _run(
        args,
        STAGE_SYNTHETIC,
        parts,
        {"generations": args.generations},
        {"artifact": args.generations.as_posix(), "stage": read_manifest(args.generations).stage},
    )


def run_corpus(args: argparse.Namespace) -> None:
    if args.group_by is None and not DATASET_NAME.match(args.name):
        raise InputError(f"--name {args.name!r} is not a valid dataset name")
    parts = [Part(input_files(args.input, args.glob), name=args.name, group_by=args.group_by)]
    _run(args, STAGE_CORPUS, parts, {"corpus": args.input}, {"path": args.input.as_posix()})


def _performance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local-models",
        type=Path,
        default=None,
        help="local_models artifact (its tokenizer/ folder); required when tokenize.tokenizer is 'local'",
    )
    parser.add_argument("--text-column", default="text", help="column holding the documents (default: text)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="encoding processes (default: the cores this process may use); never changes the output",
    )
    parser.add_argument(
        "--batch-chars",
        type=int,
        default=1 << 20,
        help="characters per encoding task (default 1 MiB); with 2 tasks in flight per worker "
        "this bounds memory",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.tokenization",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    real = commands.add_parser("real", help="real_corpus artifact -> web/code/math (+ heldout_*) datasets")
    add_common_arguments(real)
    real.add_argument("--corpus", type=Path, required=True, help="real_corpus artifact directory")
    _performance_arguments(real)
    real.set_defaults(body=run_real)
    synthetic = commands.add_parser("synthetic", help="one experiment's generations -> dataset 'synthetic'")
    add_common_arguments(synthetic, experiment=True)
    synthetic.add_argument("--generations", type=Path, required=True, help="generate artifact directory")
    _performance_arguments(synthetic)
    synthetic.set_defaults(body=run_synthetic)
    corpus = commands.add_parser("corpus", help="any Parquet file / directory of shards (ad hoc)")
    add_common_arguments(corpus)
    corpus.add_argument("--input", type=Path, required=True, help="a Parquet file or a directory of shards")
    corpus.add_argument("--glob", default="*.parquet", help="shard pattern inside an --input directory")
    corpus.add_argument("--group-by", default=None, help="column whose values name one dataset each")
    corpus.add_argument("--name", default="corpus", help="dataset name when not grouping (default: corpus)")
    corpus.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer path or hub id, overriding tokenize.tokenizer (recorded in the manifest)",
    )
    _performance_arguments(corpus)
    corpus.set_defaults(body=run_corpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda args: args.body(args), build_parser(), argv)
