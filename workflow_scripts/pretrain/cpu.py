"""Everything megatron-core needs to train on a CPU, and nothing else (gloo, world size 1 or torchrun).

Megatron-core 0.16 targets GPUs. On CPU (FACTS.md, re-checked here) it needs:

1. ``torch.cuda.current_device`` answering ``"cpu"``: RoPE and the attention buffers call it
   unconditionally; ``torch.cuda.synchronize`` a no-op (dist_checkpointing calls it around saves).
2. The RNG tracker initialised for inference (``model_parallel_cuda_manual_seed`` is CUDA-only). Its
   ``fork()`` is then a no-op, so tensor-parallel regions draw dropout masks from the default CPU
   generator; all randomness therefore lives in ``torch``'s CPU RNG state, which checkpoints save.
3. Megatron's pipeline schedules allocate a token counter with ``device="cuda"``:
   :func:`cuda_tensors_on_cpu` redirects tensor factories asked for a CUDA device to the CPU while a
   schedule runs.
4. Megatron's optimizer wrappers and gradient clipping assume CUDA: :class:`CpuAdamW` is torch's AdamW
   behind the small part of the Megatron optimizer interface the training loop uses (``step`` returns
   ``(ok, grad_norm, zeros)``, ``sharded_state_dict`` for dist_checkpointing).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

_PATCHED = False


def use_cpu() -> bool:
    return not torch.cuda.is_available()


def patch_torch_cuda() -> None:
    """Adjustment 1 (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *args, **kwargs: None  # type: ignore[assignment]
    _PATCHED = True
    log.debug("CPU run: torch.cuda.current_device -> 'cpu', torch.cuda.synchronize -> no-op")


def init_rng_tracker() -> None:
    """Adjustment 2."""
    from megatron.core import tensor_parallel

    tensor_parallel.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


class _CudaFactoriesOnCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and str(device).startswith("cuda"):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_tensors_on_cpu() -> Iterator[None]:
    """Adjustment 3: inside, ``torch.zeros(..., device="cuda")`` and the like make CPU tensors."""
    with _CudaFactoriesOnCpu():
        yield


def setup() -> None:
    patch_torch_cuda()
    init_rng_tracker()


class CpuAdamW:
    """Adjustment 4: torch AdamW with Megatron-style gradient handling, clipping and checkpointing.

    Gradients are read from ``param.main_grad`` (Megatron's DistributedDataParallel accumulates and
    all-reduces there). The global gradient norm counts every tensor-parallel shard once and is summed
    over the model-parallel group, as Megatron's ``get_grad_norm_fp32`` does.
    """

    def __init__(self, param_groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float], eps: float,
                 clip_grad: float) -> None:
        self.optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps)
        self.clip_grad = clip_grad

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        for group in self.optimizer.param_groups:
            yield from group["params"]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def grad_norm(self) -> float:
        from megatron.core import parallel_state
        from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

        squares = torch.zeros((), dtype=torch.float64)
        for param in self.parameters():
            if param.grad is not None and param_is_not_tensor_parallel_duplicate(param):
                squares += param.grad.detach().double().pow(2).sum()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(squares, group=parallel_state.get_model_parallel_group())
        return math.sqrt(float(squares))

    @torch.no_grad()
    def step(self) -> tuple[bool, float, None]:
        for param in self.parameters():
            if getattr(param, "main_grad", None) is not None:
                param.grad = param.main_grad.to(param.dtype)
        norm = self.grad_norm()
        if not math.isfinite(norm):
            return False, norm, None
        if self.clip_grad > 0 and norm > self.clip_grad:
            scale = self.clip_grad / (norm + 1e-6)
            for param in self.parameters():
                if param.grad is not None:
                    param.grad.mul_(scale)
        self.optimizer.step()
        return True, norm, None

    # --- checkpointing (the same layout as Megatron's FP32Optimizer.sharded_state_dict) ---

    def _init_state(self) -> None:
        for param in self.parameters():
            state = self.optimizer.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def sharded_state_dict(self, model_sharded_state_dict: dict, is_loading: bool = False) -> dict:
        from megatron.core.dist_checkpointing.optimizer import (
            get_param_id_to_sharded_param_map,
            optim_state_to_sharding_state,
        )

        if is_loading:
            self._init_state()
        state_dict = self.optimizer.state_dict()
        steps = {float(s["step"]) for s in state_dict["state"].values() if "step" in s}
        if len(steps) > 1:
            raise RuntimeError(f"parameters are at different optimizer steps {steps}; cannot checkpoint")
        id_map = get_param_id_to_sharded_param_map(model_sharded_state_dict, self.parameters())
        optim_state_to_sharding_state(state_dict, id_map, exclude_keys=("step",))
        if steps:
            state_dict["state"]["common_step"] = steps.pop()
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        common_step = state_dict["state"].pop("common_step", None)
        if common_step is not None:
            for param_state in state_dict["state"].values():
                param_state["step"] = torch.tensor(common_step, dtype=torch.float32)
        param_ids = [list(range(len(group["params"]))) for group in self.optimizer.param_groups]
        offset = 0
        for group, ids in zip(state_dict["param_groups"], param_ids):
            group["params"] = [offset + i for i in ids]
            offset += len(ids)
        self.optimizer.load_state_dict(state_dict)
