"""``blend.json``: the mix artifact's contract with the training stage (light: pydantic only).

Prefixes are paths to Megatron ``.bin``/``.idx`` pairs without the suffix, relative to the directory the
pipeline runs in (the repository root) unless absolute. ``weights`` are normalised shares of the budget
(= share of Megatron samples, since every sample has ``seq_length`` tokens). ``sources`` repeats, per blend
entry, the numbers of ``sources.parquet`` plus the content hashes of its files (so caches can be keyed by
content, not by path). ``valid``, when present, is the held-out real data to validate on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workflow_scripts.core.artifacts import ArtifactError
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.tokenization.identity import TokenizerInfo

BLEND_FILE = "blend.json"
BLEND_FORMAT = 1


class BlendTokenizer(TokenizerInfo):
    path: str | None = Field(None, description="the tokenizer folder when it is a local directory")


class BlendSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    origin: str
    prefix: str
    documents: int
    unique_tokens: int
    effective_tokens: int
    epochs: float
    share: float
    bin_sha256: str
    idx_sha256: str


class ValidBlend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefixes: list[str] = Field(..., min_length=1)
    weights: list[float] = Field(..., min_length=1)
    content: list[str] = Field(default_factory=list, description="sha256 of each prefix's .bin + .idx")


class BlendFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = BLEND_FORMAT
    experiment: str | None = None
    prefixes: list[str] = Field(..., min_length=1)
    weights: list[float] = Field(..., min_length=1)
    total_tokens: int = Field(..., gt=0)
    num_samples: int = Field(..., gt=0, description="ceil(total_tokens / seq_length): training sequences")
    seq_length: int = Field(..., gt=0)
    tokenizer: BlendTokenizer
    sources: list[BlendSource]
    valid: ValidBlend | None = None

    @model_validator(mode="after")
    def _aligned(self) -> "BlendFile":
        if len(self.prefixes) != len(self.weights) or len(self.sources) != len(self.prefixes):
            raise ValueError("prefixes, weights and sources must have the same length")
        if any(w <= 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0, rel_tol=1e-9):
            raise ValueError("weights must be > 0 and sum to 1")
        if self.valid is not None and len(self.valid.prefixes) != len(self.valid.weights):
            raise ValueError("valid prefixes and weights must have the same length")
        return self

    def content_hash(self) -> str:
        """Identity of what the blend reads: files' content, weights, budget (not where the files are)."""
        return hash_value(
            {
                "sources": [(s.bin_sha256, s.idx_sha256) for s in self.sources],
                "weights": self.weights,
                "total_tokens": self.total_tokens,
                "seq_length": self.seq_length,
                "tokenizer": self.tokenizer.hash,
                "valid": None if self.valid is None else (self.valid.content, self.valid.weights),
            }
        )


def read_blend(path: Path | str) -> BlendFile:
    """Read ``blend.json`` (or a mix artifact directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / BLEND_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: expected the blend.json of a mix artifact")
    try:
        return BlendFile.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not a valid blend: {error}") from None
