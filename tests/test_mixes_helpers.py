"""Builders shared by the tokenization and mixes tests (no tests here): tiny upstream artifacts, made here."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl
import pytest

from workflow_scripts.core.artifacts import JobIdentity, build_artifact
from workflow_scripts.tokenization.stage import Part, tokenize_parts

KINDS = ("web", "code", "math")
WORDS = {
    "web": ["river", "valley", "town", "railway", "market"],
    "code": ["def", "return", "print", "range", "lambda"],
    "math": ["prime", "integral", "divisor", "matrix", "vector"],
    "synthetic": ["photosynthesis", "chloroplast", "oxygen", "sugar", "light"],
}


def documents(kind: str, count: int, words: int = 12, start: int = 0) -> list[str]:
    """Documents that say which source they come from (``<kind> doc <i>:``) and use that source's words."""
    vocab = WORDS[kind]
    return [
        f"{kind} doc {i}: " + " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))
        for i in range(start, start + count)
    ]


def make_real_corpus(path: Path, train: dict[str, int], heldout: dict[str, int] | None = None) -> Path:
    """A real_corpus-like artifact: train.parquet (+ heldout.parquet) with doc_id, source, kind, text."""
    with build_artifact(path, identity=JobIdentity(stage="real_corpus"), inputs={}) as artifact:
        for split, counts in (("train", train), ("heldout", heldout)):
            if counts is None:
                continue
            rows = [
                (kind, text)
                for kind, n in counts.items()
                for text in documents(kind, n, start=0 if split == "train" else 10_000)
            ]
            pl.DataFrame(
                {
                    "doc_id": [f"{split}-{i}" for i in range(len(rows))],
                    "source": [f"{k}-source" for k, _ in rows],
                    "kind": [k for k, _ in rows],
                    "text": [t for _, t in rows],
                }
            ).write_parquet(artifact.path / f"{split}.parquet", row_group_size=16)
    return path


def make_generations(path: Path, texts: Iterable[str], experiment: str = "exp", shards: int = 2) -> Path:
    """A generate-like artifact: generations-NNNNN.parquet shards (text column) and failures.parquet."""
    texts = list(texts)
    size = -(-len(texts) // shards)
    with build_artifact(path, identity=JobIdentity(stage="generate", experiment=experiment), inputs={}) as artifact:
        for shard in range(shards):
            chunk = texts[shard * size : (shard + 1) * size]
            pl.DataFrame(
                {"generation_id": [f"{shard}-{i}" for i in range(len(chunk))], "text": chunk},
                schema={"generation_id": pl.String, "text": pl.String},
            ).write_parquet(artifact.path / f"generations-{shard:05d}.parquet")
        pl.DataFrame({"reason": ["invalid json"]}).write_parquet(artifact.path / "failures.parquet")
    return path


def identity(stage: str, experiment: str | None = None) -> dict:
    return JobIdentity(stage=stage, experiment=experiment, params={"tokenize": {"tokenizer": "test"}})


def tokenize_real(corpus: Path, out: Path, tokenizer: Path, workers: int = 1) -> Path:
    parts = [Part((corpus / "train.parquet",), group_by="kind")]
    if (corpus / "heldout.parquet").is_file():
        parts.append(Part((corpus / "heldout.parquet",), group_by="kind", prefix="heldout_"))
    tokenize_parts(parts, out, tokenizer=str(tokenizer), identity=identity("tokenize_real"), workers=workers)
    return out


def tokenize_synthetic(generations: Path, out: Path, tokenizer: Path, workers: int = 1) -> Path:
    files = tuple(sorted(generations.glob("generations-*.parquet")))
    tokenize_parts(
        [Part(files, name="synthetic")],
        out,
        tokenizer=str(tokenizer),
        identity=identity("tokenize_synthetic", "exp"),
        workers=workers,
    )
    return out


def save_tokenizer(tmp_path_factory, tokenizer) -> Path:
    """The tokenizer saved as a Hugging Face folder (what the local_models artifact holds)."""
    folder = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """The tiny tokenizer saved as a Hugging Face folder (for modules that import this fixture)."""
    return save_tokenizer(tmp_path_factory, tiny_tokenizer)
