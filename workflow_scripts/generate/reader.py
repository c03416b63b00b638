"""Reading generate artifacts: the one module other stages (tokenization, diversity, sft) import from generate.

A generate artifact holds ``generations-NNNNN.parquet`` shards, listed in document order by its manifest
(``info.shards``), with a ``text`` column (the rendered training text) and a ``raw_json`` column (the
generated document: passages, question, options, answer, explanation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from workflow_scripts.core.artifacts import ArtifactError, InputError, read_manifest

STAGE = "generate"
# Stages whose artifacts have this layout: generated sets, external corpora (Cosmopedia) and mixed sets.
SYNTHETIC_SET_STAGES = (STAGE, "external_synthetic", "mixed_synthetic")
SHARD_GLOB = "generations-*.parquet"
TEXT_COLUMN = "text"
DOCUMENT_COLUMN = "raw_json"


def generation_shards(artifact: Path | str, experiment: str | None = None) -> list[Path]:
    """The artifact's shards in document order; refuses another stage's artifact or another experiment's, and
    one whose files no longer match its manifest (checked once per process)."""
    artifact = Path(artifact)
    manifest = read_manifest(artifact, experiment=experiment, verify=True)
    if manifest.stage not in SYNTHETIC_SET_STAGES:
        raise ArtifactError(f"{artifact} was made by stage {manifest.stage!r}, expected one of "
                            f"{SYNTHETIC_SET_STAGES}")
    listed = manifest.info.get("shards")
    shards = [artifact / name for name in listed] if listed else sorted(artifact.glob(SHARD_GLOB))
    missing = [shard for shard in shards if not shard.is_file()]
    if missing:
        raise InputError(f"{artifact}: shard {missing[0].name} listed in the manifest is missing")
    if not shards:
        raise InputError(f"{artifact}: no generation shards ({SHARD_GLOB})")
    return shards


def iter_documents(artifact: Path | str, experiment: str | None = None) -> Iterator[tuple[str, str]]:
    """(where, raw JSON text) for every generated document of the artifact, in order."""
    import pyarrow.parquet as pq

    for shard in generation_shards(artifact, experiment):
        handle = pq.ParquetFile(shard)
        if DOCUMENT_COLUMN not in handle.schema_arrow.names:
            raise InputError(f"{shard}: no {DOCUMENT_COLUMN!r} column (columns: {handle.schema_arrow.names})")
        row = 0
        for batch in handle.iter_batches(columns=[DOCUMENT_COLUMN]):
            for value in batch.column(0).to_pylist():
                if value is not None:
                    yield f"{shard} row {row}", value
                row += 1
