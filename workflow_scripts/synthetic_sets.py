"""Stage: synthetic sets that are not generated here, written in the generate artifact's layout.

``external`` reads a corpus made elsewhere (Cosmopedia v0.1 / v0.2) from the local Parquet or JSONL files an
experiment's ``external`` section names; ``mixed`` draws documents from other experiments' generated sets in
given shares up to a unique-token target (the paper's "Mixed" generator). Both write ``generations-NNNNN.parquet``
shards with a ``text`` column (and ``raw_json`` where the documents have one), so tokenization, diversity and the
mixes read them like generated data (through ``generate/reader.py``).

Tokens are estimated at ``CHARS_PER_TOKEN`` characters a token here (no tokenizer is loaded); the tokenized
artifact downstream counts them exactly.

    python -m workflow_scripts.synthetic_sets external --config C --experiment E --out DIR
    python -m workflow_scripts.synthetic_sets mixed --config C --experiment E --generations-SOURCE DIR ... --out DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
from pathlib import Path
from typing import Iterator

from workflow_scripts.config import PipelineConfig
from workflow_scripts.config.root import CHARS_PER_TOKEN, ExternalSynthetic
from workflow_scripts.core.artifacts import InputError, build_artifact
from workflow_scripts.core.cli import add_common_arguments, load_checked_config, run_main
from workflow_scripts.core.identity import job_identity
from workflow_scripts.generate.reader import DOCUMENT_COLUMN, TEXT_COLUMN, generation_shards

log = logging.getLogger(__name__)
SHARD_NAME = "generations-{:05d}.parquet"
BATCH_ROWS = 4096


def estimated_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


class ShardWriter:
    """Rows (text, raw_json, source) into numbered Parquet shards of at most ``rows_per_shard`` rows."""

    def __init__(self, out_dir: Path, rows_per_shard: int) -> None:
        self.out_dir, self.rows_per_shard = out_dir, rows_per_shard
        self.rows: list[dict[str, str | None]] = []
        self.shards: list[str] = []
        self.documents = 0
        self.tokens = 0

    def add(self, text: str, raw_json: str | None, source: str) -> None:
        self.rows.append({TEXT_COLUMN: text, DOCUMENT_COLUMN: raw_json, "source": source})
        self.documents += 1
        self.tokens += estimated_tokens(text)
        if len(self.rows) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        name = SHARD_NAME.format(len(self.shards))
        table = pa.Table.from_pylist(self.rows, schema=pa.schema(
            [(TEXT_COLUMN, pa.string()), (DOCUMENT_COLUMN, pa.string()), ("source", pa.string())]))
        pq.write_table(table, self.out_dir / name)
        self.shards.append(name)
        self.rows = []


# --- external corpora -------------------------------------------------------------------------------------


def external_files(spec: ExternalSynthetic, where: str) -> list[Path]:
    files = sorted({Path(f) for pattern in spec.paths for f in glob.glob(pattern, recursive=True)})
    if not files:
        raise InputError(f"{where}.paths: no file matches {spec.paths}")
    return files


def check_external(spec: ExternalSynthetic, where: str) -> list[Path]:
    """The corpus's files, each checked to exist and to have the text column (Parquet) or key (JSONL line 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = external_files(spec, where)
    for file in files:
        if spec.type == "parquet":
            try:
                columns = pq.read_schema(file).names
            except (pa.ArrowException, OSError) as error:
                raise InputError(f"{where}: {file} is not a readable Parquet file ({error})") from None
            if spec.text_field not in columns:
                raise InputError(f"{where}.text_field: {file} has no column {spec.text_field!r} "
                                 f"(columns: {columns})")
        else:
            with file.open(encoding="utf-8") as handle:
                first = next((line for line in handle if line.strip()), None)
            if first is None:
                raise InputError(f"{where}: {file} holds no records")
            try:
                record = json.loads(first)
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: {file} line 1 is not JSON ({error.msg})") from None
            if not isinstance(record, dict) or spec.text_field not in record:
                raise InputError(f"{where}.text_field: {file} line 1 has no key {spec.text_field!r}")
    return files


def iter_external_texts(spec: ExternalSynthetic, files: list[Path]) -> Iterator[tuple[str, str]]:
    """(where, text) of every document, files in sorted order; empty or non-string texts are skipped."""
    import pyarrow.parquet as pq

    for file in files:
        if spec.type == "parquet":
            handle = pq.ParquetFile(file)
            for batch in handle.iter_batches(columns=[spec.text_field], batch_size=BATCH_ROWS):
                for text in batch.column(0).to_pylist():
                    if isinstance(text, str) and text.strip():
                        yield str(file), text
        else:
            with file.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line).get(spec.text_field)
                    except (json.JSONDecodeError, AttributeError):
                        raise InputError(f"{file}:{number}: not a JSON object") from None
                    if isinstance(text, str) and text.strip():
                        yield f"{file}:{number}", text


def run_external(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    where = f"experiments.{args.experiment}.external"
    spec = config.experiments[args.experiment].external
    if spec is None:
        raise InputError(f"{where}: experiment {args.experiment!r} has no external synthetic corpus")
    files = check_external(spec, where)
    identity = job_identity(config, "external_synthetic", args.experiment)
    with build_artifact(args.out, identity=identity, inputs={}) as artifact:
        writer = ShardWriter(artifact.path, config.generate.rows_per_shard)
        for _, text in iter_external_texts(spec, files):
            if spec.unique_tokens is not None and writer.tokens >= spec.unique_tokens:
                break
            writer.add(text, None, spec.name)
        writer.flush()
        if not writer.documents:
            raise InputError(f"{where}: the files hold no non-empty {spec.text_field!r} texts")
        artifact.info.update(shards=writer.shards, corpus=spec.name, files=[f.name for f in files],
                             chars_per_token=CHARS_PER_TOKEN)
        artifact.counts.update(documents=writer.documents, estimated_tokens=writer.tokens)
    log.info("%s: %d documents (~%d tokens) from %d files", spec.name, writer.documents, writer.tokens, len(files))


# --- mixed sets -------------------------------------------------------------------------------------------


def shares(config: PipelineConfig, experiment: str) -> dict[str, float]:
    sources = config.experiments[experiment].mixed.sources
    total = sum(sources.values())
    return {name: weight / total for name, weight in sources.items()}


def draw_order(lengths: list[int], seed: int) -> list[int]:
    """Document indices in a seeded random order."""
    import numpy as np

    return np.random.default_rng(seed).permutation(len(lengths)).tolist()


def select_documents(lengths: list[int], target: int, seed: int) -> tuple[set[int], int]:
    """Documents drawn in a seeded random order until their estimated tokens reach ``target`` (all of them when
    the source holds fewer); returns the chosen indices and their tokens."""
    chosen: set[int] = set()
    tokens = 0
    for index in draw_order(lengths, seed):
        if tokens >= target:
            break
        chosen.add(index)
        tokens += lengths[index]
    return chosen, tokens


def _source_rows(shards: list[Path], columns: list[str]) -> Iterator[dict[str, str | None]]:
    import pyarrow.parquet as pq

    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(columns=columns, batch_size=BATCH_ROWS):
            yield from batch.to_pylist()


def source_arguments(config: PipelineConfig, experiment: str, extra: list[str]) -> dict[str, Path]:
    """``--generations-SOURCE DIR`` pairs (the planner writes one per source, '_' as '-') -> {source: DIR}."""
    wanted = {name.replace("_", "-"): name for name in config.experiments[experiment].mixed.sources}
    found: dict[str, Path] = {}
    words = iter(extra)
    for word in words:
        key = word.removeprefix("--generations-")
        if not word.startswith("--generations-") or key not in wanted:
            raise InputError(f"unexpected argument {word!r} (expected --generations-SOURCE for the sources "
                             f"{sorted(wanted.values())})")
        value = next(words, None)
        if value is None:
            raise InputError(f"{word} needs a directory")
        found[wanted[key]] = Path(value)
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise InputError(f"experiments.{experiment}.mixed.sources: no --generations-SOURCE for {missing}")
    return found


def run_mixed(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    spec = config.experiments[args.experiment].mixed
    if spec is None:
        raise InputError(f"experiments.{args.experiment}.mixed: experiment {args.experiment!r} has no mixed set")
    sources = source_arguments(config, args.experiment, args.sources)
    inputs = {f"generations_{name}": path for name, path in sources.items()}
    identity = job_identity(config, "mixed_synthetic", args.experiment, inputs)
    per_source: dict[str, dict[str, int]] = {}
    with build_artifact(args.out, identity=identity, inputs=inputs) as artifact:
        writer = ShardWriter(artifact.path, config.generate.rows_per_shard)
        for position, (name, share) in enumerate(shares(config, args.experiment).items()):
            shards = generation_shards(sources[name], name)
            lengths = [estimated_tokens(row[TEXT_COLUMN] or "") for row in _source_rows(shards, [TEXT_COLUMN])]
            target = round(spec.unique_tokens * share)
            chosen, tokens = select_documents(lengths, target, spec.seed + position)
            if tokens < target:
                log.warning("%s holds ~%d tokens, fewer than its share (%d) of the mixed set: all taken", name,
                            tokens, target)
            for index, row in enumerate(_source_rows(shards, [TEXT_COLUMN, DOCUMENT_COLUMN])):
                if index in chosen:
                    writer.add(row[TEXT_COLUMN], row[DOCUMENT_COLUMN], name)
            per_source[name] = {"documents": len(chosen), "estimated_tokens": tokens, "target_tokens": target}
        writer.flush()
        artifact.info.update(shards=writer.shards, sources=per_source, chars_per_token=CHARS_PER_TOKEN)
        artifact.counts.update(documents=writer.documents, estimated_tokens=writer.tokens)
    log.info("%s: %d documents (~%d tokens) from %d sets", args.experiment, writer.documents, writer.tokens,
             len(sources))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.synthetic_sets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    external = commands.add_parser("external", help="an external synthetic corpus (local Parquet/JSONL files)")
    add_common_arguments(external, experiment=True)
    external.set_defaults(body=run_external)
    mixed = commands.add_parser("mixed", help="a set drawn from other experiments' generated sets",
                                epilog="also: --generations-SOURCE DIR for every source experiment "
                                "('_' in its name written '-')")
    add_common_arguments(mixed, experiment=True)
    mixed.set_defaults(body=run_mixed)

    def body(args: argparse.Namespace) -> None:
        args.body(args)

    known, extra = parser.parse_known_args(argv)
    if extra and known.command != "mixed":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    known.sources = extra
    return run_main(body, _Parsed(known), [])


class _Parsed(argparse.ArgumentParser):
    """Hands run_main the namespace already parsed (the mixed command's source flags are dynamic)."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__(add_help=False)
        self._namespace = namespace

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return self._namespace


if __name__ == "__main__":
    raise SystemExit(main())
