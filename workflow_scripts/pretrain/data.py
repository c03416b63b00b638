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
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from workflow_scripts.mixes.reader import BlendFile, read_blend

log = logging.getLogger(__name__)

MIX_STAGE = "mix"
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


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

    # One process per node re-hashes the token files (they may be node-local copies); torchrun stops the
    # others when it refuses them.
    first_on_node = os.environ.get("LOCAL_RANK", "0") == "0"
    train, _, _ = build_gpt_datasets(mix.root, cache_dir=cache_dir, seq_length=seq_length, num_samples=samples,
                                     seed=seed, strict_budget=strict_budget, eod_mask_loss=eod_mask_loss,
                                     verify=first_on_node)
    return train


def sample_indices(step: int, microbatch: int, *, global_batch: int, micro_batch: int, dp_rank: int,
                   dp_size: int) -> range:
    """Blend sample indices of one micro-batch: a step reads samples [step * G, (step + 1) * G), laid out
    so that any split into micro-batches x data-parallel ranks reads the same set."""
    start = step * global_batch + (microbatch * dp_size + dp_rank) * micro_batch
    return range(start, start + micro_batch)


class StepBatches:
    """The micro-batches of each optimizer step for this data-parallel rank, read one step ahead.

    While step ``k`` computes, a background thread reads step ``k + 1``'s samples from the memory-mapped
    dataset and stacks them (into pinned memory on a GPU, so that the copies to the device are asynchronous):
    data loading stays off the critical path. The samples are the same as reading them in line.
    """

    def __init__(self, dataset, *, last_step: int, num_microbatches: int, global_batch: int, micro_batch: int,
                 dp_rank: int, dp_size: int, device: Any) -> None:
        self._dataset, self._last_step, self._device = dataset, last_step, device
        self._layout = dict(global_batch=global_batch, micro_batch=micro_batch, dp_rank=dp_rank, dp_size=dp_size)
        self._num_microbatches = num_microbatches
        self._pin = device.type == "cuda"
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        self._ahead: dict[int, Future] = {}

    def _read(self, step: int) -> list[dict[str, Any]]:
        import torch

        micro_batches = []
        for micro in range(self._num_microbatches):
            items = [self._dataset[i] for i in sample_indices(step, micro, **self._layout)]
            batch = {key: torch.stack([item[key] for item in items]) for key in BATCH_KEYS}
            micro_batches.append({k: v.pin_memory() for k, v in batch.items()} if self._pin else batch)
        return micro_batches

    def __call__(self, step: int) -> Iterator[dict[str, Any]]:
        """Step ``step``'s micro-batches on the device (0-based step), and the next step's read started."""
        pending = self._ahead.pop(step, None)
        micro_batches = pending.result() if pending is not None else self._read(step)
        if step + 1 < self._last_step:
            self._ahead[step + 1] = self._reader.submit(self._read, step + 1)
        return iter([{k: v.to(self._device, non_blocking=True) for k, v in batch.items()}
                     for batch in micro_batches])

    def close(self) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)
