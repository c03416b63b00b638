"""A synthetic mix artifact: learnable random token documents in Megatron .bin/.idx, plus ``blend.json``.

For benchmarks, the GPU check and tests: it has the layout of a real mix (see data.py), so training reads
it through the same code. Documents are drawn from a random sparse Markov chain (each token has a few
likely successors), so the loss falls well below log(vocab) within a few dozen steps.

``python -m workflow_scripts.pretrain.synthetic --out DIR --vocab-size 50304 --tokens 2000000 --seq-length 2048``
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np

from workflow_scripts.core.artifacts import JobIdentity, build_artifact
from workflow_scripts.mixes.reader import BLEND_FILE
from workflow_scripts.pretrain.data import MIX_STAGE

log = logging.getLogger(__name__)


def write_documents(prefix: Path, documents: list[np.ndarray], vocab_size: int) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from workflow_scripts.tokenization.reader import token_dtype

    dtype = np.uint16 if token_dtype(vocab_size) == "uint16" else np.int32
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for document in documents:
        builder.add_item(torch.from_numpy(document.astype(np.int64)))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")


def markov_documents(rng: np.random.Generator, *, vocab_size: int, tokens: int, eod: int,
                     successors: int = 4, min_len: int = 16, max_len: int = 400) -> list[np.ndarray]:
    """Documents of a sparse random Markov chain over ids [0, vocab_size), each ended by ``eod``."""
    table = rng.integers(0, vocab_size, size=(vocab_size, successors))
    lengths = rng.integers(min_len, max_len, size=max(1, 2 * tokens // (min_len + max_len) + 1))
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), tokens)) + 1]
    grid = np.empty((len(lengths), int(lengths.max())), dtype=np.int64)
    grid[:, 0] = rng.integers(0, vocab_size, size=len(lengths))
    for column in range(1, grid.shape[1]):  # all documents advance one token at a time
        grid[:, column] = table[grid[:, column - 1], rng.integers(0, successors, size=len(lengths))]
    documents = []
    for row, length in zip(grid, lengths):
        document = row[:length].copy()
        document[-1] = eod
        documents.append(document)
    return documents


def make_synthetic_mix(out: Path, *, vocab_size: int, tokens: int, seq_length: int, sources: int = 2,
                       budget_tokens: int | None = None, eod: int = 0, tokenizer_dir: Path | None = None,
                       seed: int = 0, experiment: str | None = None) -> Path:
    """Write a mix artifact (stage ``mix``): ``sources`` synthetic sources of ~``tokens`` tokens each,
    equally weighted, with a training budget of ``budget_tokens`` (default: every token once).

    With ``tokenizer_dir``, the blend records that tokenizer (its identity and path); ``vocab_size`` and
    ``eod`` must then be its size and end-of-document id.
    """
    from workflow_scripts.core.hashing import hash_file
    from workflow_scripts.mixes.reader import BlendFile, BlendSource, BlendTokenizer
    from workflow_scripts.tokenization.reader import describe_tokenizer, token_dtype

    rng = np.random.default_rng(seed)
    if tokenizer_dir is not None:
        info = describe_tokenizer(str(tokenizer_dir))
        if (info.vocab_size, info.eod_id) != (vocab_size, eod):
            raise ValueError(f"{tokenizer_dir}: vocabulary {info.vocab_size} / eod {info.eod_id}, "
                             f"not {vocab_size} / {eod}")
        tokenizer = BlendTokenizer(**info.model_dump(), path=str(Path(tokenizer_dir).resolve()))
    else:
        tokenizer = BlendTokenizer(name="synthetic", hash=f"synthetic-{vocab_size}-{eod}", vocab_size=vocab_size,
                                   eod_id=eod, eod_token="<eod>", dtype=token_dtype(vocab_size))
    params = {"vocab_size": vocab_size, "tokens": tokens, "sources": sources, "seq_length": seq_length,
              "budget_tokens": budget_tokens, "eod": eod, "seed": seed}
    inputs = {"tokenizer": tokenizer_dir} if tokenizer_dir is not None else {}
    identity = JobIdentity(stage=MIX_STAGE, experiment=experiment, params=params)  # not a pipeline job
    with build_artifact(out, identity=identity, inputs=inputs) as artifact:
        (artifact.path / "tokens").mkdir()
        made = []
        for index in range(sources):
            prefix = artifact.path / "tokens" / f"source{index}"
            documents = markov_documents(rng, vocab_size=vocab_size, tokens=tokens, eod=eod)
            write_documents(prefix, documents, vocab_size)
            made.append((f"source{index}", prefix, len(documents), sum(len(d) for d in documents)))
        unique = sum(m[3] for m in made)
        final = Path(out).resolve() / "tokens"  # where the prefixes are once the artifact is published
        budget = budget_tokens or unique
        blend = BlendFile(
            experiment=experiment,
            prefixes=[str(final / name) for name, *_ in made],
            weights=[1 / sources] * sources,
            total_tokens=budget,
            num_samples=math.ceil(budget / seq_length),
            seq_length=seq_length,
            tokenizer=tokenizer,
            sources=[BlendSource(name=name, origin="synthetic", prefix=str(final / name),
                                 documents=documents, unique_tokens=count, effective_tokens=round(budget / sources),
                                 epochs=budget / sources / count, share=1 / sources,
                                 bin_sha256=hash_file(Path(f"{prefix}.bin")),
                                 idx_sha256=hash_file(Path(f"{prefix}.idx")))
                     for name, prefix, documents, count in made],
        )
        (artifact.path / BLEND_FILE).write_text(blend.model_dump_json(indent=2) + "\n")
        artifact.counts.update(tokens=unique, sources=sources, budget_tokens=budget)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=50_304)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="tokens per source")
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--budget-tokens", type=int, default=None, help="training budget (default: every token)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    make_synthetic_mix(args.out, vocab_size=args.vocab_size, tokens=args.tokens, sources=args.sources,
                       seq_length=args.seq_length, budget_tokens=args.budget_tokens, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
