"""Reading tokenize artifacts: what every consumer (mixes, pre-training) calls before touching tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from workflow_scripts.core.artifacts import ArtifactError, read_manifest, verify_files
from workflow_scripts.tokenization.identity import TokenizerInfo, check_tokenizer
from workflow_scripts.tokenization.indexed import bin_path, idx_path, read_index_header

# Stages whose artifacts hold token files: the real corpus, a synthetic corpus, an ad hoc corpus.
STAGES = ("tokenize_real", "tokenize_synthetic", "tokenize")


@dataclass(frozen=True)
class TokenizedDataset:
    name: str
    prefix: Path  # without .bin/.idx
    documents: int
    tokens: int  # EOD tokens included: exactly what Megatron reads
    bin_hash: str
    idx_hash: str


@dataclass(frozen=True)
class TokenizedArtifact:
    path: Path
    experiment: str | None
    tokenizer: TokenizerInfo
    datasets: dict[str, TokenizedDataset]

    def dataset(self, name: str) -> TokenizedDataset:
        if name not in self.datasets:
            raise ArtifactError(f"{self.path} has no dataset {name!r} (it has {sorted(self.datasets)})")
        return self.datasets[name]


def read_tokenized(
    artifact: Path | str,
    expect: TokenizerInfo | Mapping[str, Any] | None = None,
    *,
    verify_hashes: bool = False,
) -> TokenizedArtifact:
    """Open a tokenize artifact and refuse it when its tokenizer differs from ``expect``.

    ``expect`` may be a full :class:`TokenizerInfo` or a partial mapping such as
    ``{"vocab_size": 50295, "dtype": "uint16"}``; every key it holds among hash / vocab_size / eod_id /
    dtype must match. The .idx headers are checked against the manifest (dtype, document count);
    ``verify_hashes`` also re-hashes every file (slow on big corpora).
    """
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if manifest.stage not in STAGES:
        raise ArtifactError(f"{artifact} was made by stage {manifest.stage!r}, not by tokenization {STAGES}")
    try:
        info = TokenizerInfo.model_validate(manifest.info["tokenizer"])
        entries = manifest.info["datasets"]
    except (KeyError, ValueError) as error:
        raise ArtifactError(
            f"{artifact}: manifest lacks tokenizer/dataset facts ({error}); rebuild it"
        ) from None
    if expect is not None:
        check_tokenizer(info, expect, where=str(artifact))
    if verify_hashes:
        verify_files(artifact)
    datasets = {}
    for name, entry in entries.items():
        prefix = artifact / entry["prefix"]
        for file in (bin_path(prefix), idx_path(prefix)):
            if not file.is_file():
                raise ArtifactError(f"{artifact}: {file.name} listed in the manifest is missing")
        header = read_index_header(prefix)
        if header["dtype"] != info.dtype or header["documents"] != entry["documents"]:
            raise ArtifactError(
                f"{idx_path(prefix)} holds {header['documents']} documents of {header['dtype']} but the "
                "manifest "
                f"says {entry['documents']} of {info.dtype}: the artifact was modified; rebuild it"
            )
        datasets[name] = TokenizedDataset(
            name=name,
            prefix=prefix,
            documents=int(entry["documents"]),
            tokens=int(entry["tokens"]),
            bin_hash=manifest.files.get(bin_path(entry["prefix"]).as_posix(), ""),
            idx_hash=manifest.files.get(idx_path(entry["prefix"]).as_posix(), ""),
        )
    return TokenizedArtifact(path=artifact, experiment=manifest.experiment, tokenizer=info, datasets=datasets)
