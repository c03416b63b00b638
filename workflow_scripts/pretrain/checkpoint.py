"""Resumable checkpoints with ``megatron.core.dist_checkpointing``.

A checkpoint holds everything that decides the rest of the run: model and optimizer state (sharded
tensors, so it can be loaded at another tensor/pipeline-parallel layout), the LR scheduler, the step
and the number of samples consumed (the data position), and every rank's RNG states.

In-progress checkpoints live in ``<work>/checkpoints/iter_NNNNNNN``. A save is written to a hidden
temporary directory and renamed into place, then ``latest`` is replaced atomically, so a kill during a
save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

LATEST = "latest"
TMP_PREFIX = ".tmp-"


@dataclass
class Progress:
    step: int = 0               # optimizer steps done
    consumed_samples: int = 0   # sequences read from the blend (all data-parallel ranks)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def rng_state(on_cpu: bool) -> dict[str, Any]:
    from megatron.core import tensor_parallel

    state = {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if not on_cpu:
        state["cuda"] = torch.cuda.get_rng_state()
        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_object(on_cpu: bool):
    """Every rank's RNG state, addressed by its (pipeline, tensor, data) parallel ranks."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    shape = (parallel_state.get_pipeline_model_parallel_world_size(),
             parallel_state.get_tensor_model_parallel_world_size(),
             parallel_state.get_data_parallel_world_size())
    offset = (parallel_state.get_pipeline_model_parallel_rank(),
              parallel_state.get_tensor_model_parallel_rank(),
              parallel_state.get_data_parallel_rank())
    return ShardedObject("rng_state", rng_state(on_cpu), shape, offset, replica_id=0)


def sharded_state_dict(model, optimizer, scheduler, progress: Progress, *, on_cpu: bool,
                       is_loading: bool = False) -> dict[str, Any]:
    model_state = model.sharded_state_dict()
    return {
        "model": model_state,
        "optimizer": optimizer.sharded_state_dict(model_state, is_loading=is_loading),
        "scheduler": scheduler.state_dict(),
        "progress": {"step": progress.step, "consumed_samples": progress.consumed_samples},
        "rng_state": _rng_object(on_cpu),
    }


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def save(root: Path, model, optimizer, scheduler, progress: Progress, *, on_cpu: bool, keep: int) -> Path:
    """Save a checkpoint of ``progress.step`` under ``root``; collective over all ranks."""
    from megatron.core import dist_checkpointing

    name = checkpoint_name(progress.step)
    final, tmp = root / name, root / f"{TMP_PREFIX}{name}"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    state = sharded_state_dict(model, optimizer, scheduler, progress, on_cpu=on_cpu)
    dist_checkpointing.save(state, str(tmp))
    _barrier()
    if _rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_latest(root, name)
        _prune(root, keep)
    _barrier()
    log.info("saved checkpoint %s", final)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f"{TMP_PREFIX}{LATEST}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    checkpoints = sorted(p for p in root.glob("iter_*") if p.is_dir())
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest(root: Path) -> Path | None:
    """The last complete checkpoint under ``root`` (None when there is none)."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "metadata.json").is_file() else None


def clean_temporaries(root: Path) -> None:
    for stale in root.glob(f"{TMP_PREFIX}*"):
        log.warning("removing %s left by an interrupted save", stale)
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()


DCP_METADATA = ".metadata"
FIXED_SAVE_ID = "00000000-0000-0000-0000-000000000000"


def make_reproducible(path: Path) -> None:
    """Give a saved checkpoint the same bytes for the same weights: torch.distributed.checkpoint stamps a
    random ``save_id`` (a uuid) into ``.metadata``, which only identifies the save; it is set to a constant."""
    import pickle

    file = path / DCP_METADATA
    if not file.is_file():
        return
    with open(file, "rb") as handle:
        metadata = pickle.load(handle)
    storage = getattr(metadata, "storage_meta", None)
    if storage is None or getattr(storage, "save_id", None) in (None, FIXED_SAVE_ID):
        return
    storage.save_id = FIXED_SAVE_ID
    with open(file, "wb") as handle:
        pickle.dump(metadata, handle)  # as torch's FileSystemWriter writes it


def load(path: Path, model, optimizer, scheduler, *, on_cpu: bool) -> Progress:
    """Restore model, optimizer, scheduler and this rank's RNG states from ``path``; collective."""
    from megatron.core import dist_checkpointing

    template = sharded_state_dict(model, optimizer, scheduler, Progress(), on_cpu=on_cpu, is_loading=True)
    state = dist_checkpointing.load(template, str(path))
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng_state"])
    progress = Progress(**state["progress"])
    log.info("resumed from %s at step %d (%d samples consumed)", path, progress.step, progress.consumed_samples)
    return progress


def load_model_only(path: Path, model) -> None:
    """Load only the model weights (at any parallel layout); used by the conversion."""
    from megatron.core import dist_checkpointing

    state = dist_checkpointing.load({"model": model.sharded_state_dict()}, str(path))
    model.load_state_dict(state["model"], strict=True)
