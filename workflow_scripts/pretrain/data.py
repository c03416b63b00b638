"""Training data: a mix artifact's ``blend.json`` -> megatron-core GPT datasets -> micro-batches.

The mix stage (workflow_scripts/mixes) owns the ``blend.json`` contract and builds the datasets
(``BlendedMegatronDatasetBuilder``, one ``GPTDataset`` per prefix, blended by weight; relative prefixes and
the tokenizer path are relative to the directory the pipeline runs in). This module adds what training
needs on top: the tokenizer folder the mix recorded, and which blend samples each micro-batch of each
data-parallel rank reads. Sample ``i`` of the blend is fixed by the seed, so a run resumed at step ``k``
reads exactly the samples the uninterrupted run would have read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from workflow_scripts.mixes.reader import BlendFile, read_blend

log = logging.getLogger(__name__)

MIX_STAGE = "mix"


@dataclass(frozen=True)
class Mix:
    """A mix artifact: its blend and, when the mix recorded a local one, the tokenizer folder."""

    root: Path
    blend: BlendFile
    tokenizer_dir: Path | None


def read_mix(mix_dir: Path) -> Mix:
    blend = read_blend(mix_dir)
    tokenizer_dir = None
    if blend.tokenizer.path is not None:
        path = Path(blend.tokenizer.path)
        tokenizer_dir = path if path.is_dir() else None
        if tokenizer_dir is None:
            log.warning("%s: tokenizer folder %s (relative to the working directory) does not exist; conversion "
                        "will need --tokenizer", mix_dir, path)
    return Mix(root=Path(mix_dir), blend=blend, tokenizer_dir=tokenizer_dir)


def build_train_dataset(mix: Mix, *, samples: int, seq_length: int, seed: int, cache_dir: Path,
                        strict_budget: bool, eod_mask_loss: bool = False):
    """The blended training dataset of ``samples`` sequences (``seq_length`` + 1 tokens each).

    ``strict_budget``: refuse a sample count more than 1 % away from the mix's plan (the mix's reported
    epochs per source would be wrong); otherwise warn.
    """
    from workflow_scripts.mixes.reader import build_gpt_datasets

    train, _, _ = build_gpt_datasets(mix.root, cache_dir=cache_dir, seq_length=seq_length, num_samples=samples,
                                     seed=seed, strict_budget=strict_budget, eod_mask_loss=eod_mask_loss)
    return train


def sample_indices(step: int, microbatch: int, *, global_batch: int, micro_batch: int, dp_rank: int,
                   dp_size: int) -> range:
    """Blend sample indices of one micro-batch: a step reads samples [step * G, (step + 1) * G), laid out
    so that any split into micro-batches x data-parallel ranks reads the same set."""
    start = step * global_batch + (microbatch * dp_size + dp_rank) * micro_batch
    return range(start, start + micro_batch)


def batches(dataset, step: int, *, num_microbatches: int, global_batch: int, micro_batch: int, dp_rank: int,
            dp_size: int, device: Any) -> Iterator[dict[str, Any]]:
    """The micro-batches of one optimizer step for this data-parallel rank, as tensors on ``device``."""
    import torch

    for micro in range(num_microbatches):
        items = [dataset[i] for i in sample_indices(step, micro, global_batch=global_batch,
                                                    micro_batch=micro_batch, dp_rank=dp_rank, dp_size=dp_size)]
        yield {key: torch.stack([item[key] for item in items]).to(device, non_blocking=True)
               for key in ("tokens", "labels", "loss_mask", "position_ids")}
