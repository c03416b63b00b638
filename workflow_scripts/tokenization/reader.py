"""Reading tokenize artifacts: the one module other stages import from tokenization.

Reading tokenize artifacts: what every consumer (mixes, pre-training) calls before touching tokens.

Tokenizer identity: what a token file was made with, and the check every consumer runs.

A tokenizer is identified by a hash of its content (the canonical JSON of the fast tokenizer: vocabulary,
merges, normalizer, pre-tokenizer, added tokens), not by the path it was loaded from, so the same tokenizer
loaded from a local folder or from the hub cache has the same identity, and a retrained tokenizer in the same
folder does not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict

from workflow_scripts.core.artifacts import ArtifactError, read_manifest, verify_files
from workflow_scripts.core.hashing import hash_file, hash_value
from workflow_scripts.tokenization.indexed import bin_path, idx_path, read_index_header

log = logging.getLogger(__name__)

TokenDType = Literal["uint16", "int32"]
# Files a Hugging Face tokenizer folder may hold; other files there (weights, configs) are not the tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
)
# Runtime settings stored in tokenizer.json that do not change which ids a text gets.
_RUNTIME_KEYS = ("truncation", "padding")
CHECKED_KEYS = ("hash", "vocab_size", "eod_id", "dtype")


class TokenizerInfo(BaseModel):
    """Everything a consumer of token files needs to know about the tokenizer that made them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    revision: str | None = None
    hash: str
    files_hash: str | None = None
    vocab_size: int
    eod_id: int
    eod_token: str
    dtype: TokenDType


def token_dtype(vocab_size: int) -> TokenDType:
    """The smallest dtype holding every id, as Megatron's GPTDatasetConfig (uint16 up to 65,536 ids)."""
    if vocab_size <= 0:
        raise ValueError(f"vocabulary size must be positive, got {vocab_size}")
    return "uint16" if vocab_size <= 2**16 else "int32"


def load_tokenizer(name: str, revision: str | None = None):
    """Load a fast Hugging Face tokenizer from a local directory or a hub id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {name!r} has no fast (Rust) implementation; only fast tokenizers are supported"
        )
    return tokenizer


def backend_json(tokenizer) -> str:
    """The fast tokenizer's own serialisation, without runtime truncation/padding settings."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    for key in _RUNTIME_KEYS:
        data[key] = None
    return json.dumps(data, ensure_ascii=False)


def tokenizer_hash(tokenizer) -> str:
    return hash_value(json.loads(backend_json(tokenizer)))


def tokenizer_files_hash(name: str) -> str | None:
    """Hash of the tokenizer files in a local folder (None for a hub id)."""
    folder = Path(name)
    if not folder.is_dir():
        return None
    files = [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]
    return hash_value({f.name: hash_file(f) for f in files})


def tokenizer_info(
    tokenizer, name: str, revision: str | None = None, eod_token: str | None = None
) -> TokenizerInfo:
    """Describe a loaded tokenizer; ``eod_token`` defaults to its eos token."""
    eod = eod_token if eod_token is not None else tokenizer.eos_token
    if eod is None:
        raise ValueError(f"tokenizer {name!r} has no eos token: set tokenize.eod_token")
    eod_id = tokenizer.get_vocab().get(eod)
    if eod_id is None:
        raise ValueError(f"end-of-document token {eod!r} is not in the vocabulary of tokenizer {name!r}")
    vocab_size = len(tokenizer)
    return TokenizerInfo(
        name=name,
        revision=revision,
        hash=tokenizer_hash(tokenizer),
        files_hash=tokenizer_files_hash(name),
        vocab_size=vocab_size,
        eod_id=int(eod_id),
        eod_token=eod,
        dtype=token_dtype(vocab_size),
    )


def describe_tokenizer(name: str, revision: str | None = None, eod_token: str | None = None) -> TokenizerInfo:
    """Load a tokenizer and describe it: what a consumer calls to learn what it should expect."""
    return tokenizer_info(load_tokenizer(name, revision), name, revision, eod_token)


def _as_dict(info: TokenizerInfo | Mapping[str, Any]) -> dict[str, Any]:
    return info.model_dump() if isinstance(info, BaseModel) else dict(info)


def check_tokenizer(
    found: TokenizerInfo | Mapping[str, Any],
    expected: TokenizerInfo | Mapping[str, Any],
    where: str,
    keys: tuple[str, ...] = CHECKED_KEYS,
) -> None:
    """Refuse token files made with another tokenizer, vocabulary size, EOD id or dtype than expected.

    ``expected`` may be partial (e.g. only ``vocab_size`` and ``dtype``): only the keys it holds are checked.
    """
    found_d, expected_d = _as_dict(found), _as_dict(expected)
    problems = [
        f"{key}: found {found_d.get(key)!r}, expected {expected_d[key]!r}"
        for key in keys
        if key in expected_d and expected_d[key] is not None and found_d.get(key) != expected_d[key]
    ]
    if problems:
        raise ArtifactError(
            f"{where} was tokenized with a different tokenizer than expected "
            f"(found {found_d.get('name')!r}, expected {expected_d.get('name', '?')!r}): "
            + "; ".join(problems)
            + ". Re-tokenize with the expected tokenizer (tokenize.tokenizer) or point the consumer at "
            "matching data."
        )


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
    verify_hashes: bool = True,
) -> TokenizedArtifact:
    """Open a tokenize artifact and refuse it when its tokenizer differs from ``expect``.

    ``expect`` may be a full :class:`TokenizerInfo` or a partial mapping such as
    ``{"vocab_size": 50295, "dtype": "uint16"}``; every key it holds among hash / vocab_size / eod_id /
    dtype must match. The .idx headers are checked against the manifest (dtype, document count);
    ``verify_hashes`` (default) also checks every file against the manifest (a streaming hash, once per
    process; False for a quick look at the facts only).
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
