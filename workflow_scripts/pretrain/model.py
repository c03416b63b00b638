"""Megatron-core pieces of a run: process groups, the GPT model, the optimizer and the LR schedule.

Ordinary megatron-core code; the only CPU branches call into :mod:`workflow_scripts.pretrain.cpu`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F

from workflow_scripts.config import ConfigError
from workflow_scripts.config.model_configs import ModelArch
from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.pretrain import cpu

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    on_cpu: bool


def init_distributed(tensor_parallel: int, pipeline_parallel: int) -> Runtime:
    """Initialise torch.distributed (torchrun's environment, or a world of one) and Megatron's groups."""
    from megatron.core import parallel_state

    on_cpu = cpu.use_cpu()
    if on_cpu:
        cpu.patch_torch_cuda()
    if not torch.distributed.is_initialized():
        backend = "gloo" if on_cpu else "nccl"
        timeout = dt.timedelta(minutes=30)
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
            if not on_cpu:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group(backend, timeout=timeout)
        else:  # a plain process: a world of one
            if not on_cpu:
                torch.cuda.set_device(0)
            torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                                 world_size=1, timeout=timeout)
    world = torch.distributed.get_world_size()
    if world % (tensor_parallel * pipeline_parallel):
        raise ConfigError(f"world size {world} is not a multiple of tensor x pipeline parallel "
                          f"({tensor_parallel} x {pipeline_parallel})")
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_parallel, pipeline_parallel)
    if on_cpu:
        return Runtime(torch.device("cpu"), True)
    return Runtime(torch.device("cuda", torch.cuda.current_device()), False)


@contextlib.contextmanager
def process_groups(tensor_parallel: int, pipeline_parallel: int) -> Iterator[Runtime]:
    """:func:`init_distributed` for the duration of a block; torn down after if the block created them."""
    from megatron.core import parallel_state

    owns_group = not torch.distributed.is_initialized()
    runtime = init_distributed(tensor_parallel, pipeline_parallel)
    try:
        yield runtime
    finally:
        if owns_group:
            parallel_state.destroy_model_parallel()
            torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def precision(config: PretrainConfig, runtime: Runtime) -> str:
    if config.precision == "auto":
        return "bf16" if not runtime.on_cpu and torch.cuda.is_bf16_supported() else "fp32"
    if config.precision == "bf16" and runtime.on_cpu:
        raise ConfigError("precision bf16 is for GPUs; use fp32 or auto on CPU")
    return config.precision


def seed_everything(seed: int, runtime: Runtime) -> None:
    """Megatron-LM's seeding: one seed per pipeline stage; tensor-parallel streams from the tracker."""
    import random

    import numpy as np
    from megatron.core import parallel_state, tensor_parallel

    seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if runtime.on_cpu:
        cpu.init_rng_tracker()
    else:
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def transformer_config(arch: ModelArch, config: PretrainConfig, runtime: Runtime, dtype_name: str):
    from megatron.core.transformer import TransformerConfig

    bf16 = dtype_name == "bf16"
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.groups,
        normalization="RMSNorm",
        layernorm_epsilon=arch.norm_epsilon,
        gated_linear_unit=True,          # SwiGLU: silu(x W_gate) * (x W_up)
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        attention_dropout=arch.attention_dropout,
        hidden_dropout=arch.hidden_dropout,
        init_method_std=arch.init_method_std,
        tensor_model_parallel_size=config.tensor_parallel_size,
        pipeline_model_parallel_size=config.pipeline_parallel_size,
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_cpu_initialization=runtime.on_cpu,
        # Megatron's fused kernels are not in the pip wheel (and not on CPU): plain PyTorch paths.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
    )


LayerSpecName = Literal["transformer_engine", "local"]


def layer_spec(config: PretrainConfig, runtime: Runtime):
    """Transformer Engine's layers on GPU when installed (and wanted); megatron-core's local ones otherwise.
    A GPU run that wants Transformer Engine and finds it missing warns: it trains, but slower."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    name = layer_spec_name(config, runtime)
    if name == "transformer_engine":
        log.info("layer spec: Transformer Engine")
        return get_gpt_layer_with_transformer_engine_spec()
    if transformer_engine_missing(config, runtime):
        log.warning(
            "Transformer Engine is not installed: training on the GPU with megatron-core's local layer spec, which "
            "runs layernorm, linear layers and attention as separate unfused PyTorch ops (lower throughput than "
            "Transformer Engine's fused kernels). Install it as envs/gpu-training.post-deploy.sh does (docs/cluster.md "
            "'Environments'), or set pretrain.transformer_engine: false to choose the local spec")
    else:
        log.info("layer spec: megatron-core local")
    return get_gpt_layer_local_spec(normalization="RMSNorm")


def layer_spec_name(config: PretrainConfig, runtime: Runtime) -> LayerSpecName:
    """Which layer spec :func:`layer_spec` builds, as the run records it (``layer_spec`` in pretrain.json)."""
    return "transformer_engine" if use_transformer_engine(config, runtime) else "local"


def use_transformer_engine(config: PretrainConfig, runtime: Runtime) -> bool:
    return not runtime.on_cpu and config.transformer_engine and _has_transformer_engine()


def transformer_engine_missing(config: PretrainConfig, runtime: Runtime) -> bool:
    """A GPU run that asks for Transformer Engine (pretrain.transformer_engine) without it installed."""
    return not runtime.on_cpu and config.transformer_engine and not _has_transformer_engine()


def _has_transformer_engine() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def build_gpt(arch: ModelArch, tf_config, spec, vocab_size: int, seq_length: int, runtime: Runtime):
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    model = GPTModel(
        config=tf_config,
        transformer_layer_spec=spec,
        vocab_size=vocab_size,
        max_sequence_length=seq_length,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=arch.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=arch.rotary_base,
    )
    return model.to(runtime.device)


def wrap_model(model, tf_config, config: PretrainConfig, runtime: Runtime, dp_size: int):
    """bf16 wrapper (GPU) and Megatron's DistributedDataParallel: gradients accumulate in fp32
    ``main_grad`` buffers and are averaged over data-parallel ranks by ``finalize_model_grads``."""
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )
    from megatron.core.transformer.module import Float16Module

    if tf_config.bf16:
        model = Float16Module(tf_config, model)
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=not runtime.on_cpu and dp_size > 1,  # all-reduce buckets during the backward pass
        use_distributed_optimizer=config.distributed_optimizer and not runtime.on_cpu,
    )
    ddp = DistributedDataParallel(config=tf_config, ddp_config=ddp_config, module=model)
    tf_config.no_sync_func = ddp.no_sync
    tf_config.finalize_model_grads_func = finalize_model_grads
    if ddp_config.overlap_grad_reduce:
        tf_config.grad_sync_func = ddp.start_grad_sync
    return ddp


def build_optimizer(ddp, config: PretrainConfig, runtime: Runtime, dtype_name: str):
    """Megatron's optimizer on GPU; torch AdamW (cpu.CpuAdamW) on CPU. Norms are not weight-decayed."""
    if runtime.on_cpu:
        decay, no_decay = [], []
        for _, param in ddp.named_parameters():
            if param.requires_grad:
                (no_decay if param.dim() == 1 else decay).append(param)
        groups: list[dict[str, Any]] = [
            {"params": decay, "wd_mult": 1.0, "weight_decay": config.weight_decay},
            {"params": no_decay, "wd_mult": 0.0, "weight_decay": 0.0},
        ]
        return cpu.CpuAdamW(groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                            eps=config.adam_eps, clip_grad=config.clip_grad)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    optimizer_config = OptimizerConfig(
        optimizer="adam",  # with decoupled weight decay: AdamW
        lr=config.lr,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_eps=config.adam_eps,
        clip_grad=config.clip_grad,
        bf16=dtype_name == "bf16",
        params_dtype=torch.bfloat16 if dtype_name == "bf16" else torch.float32,
        use_distributed_optimizer=config.distributed_optimizer,
    )
    return get_megatron_optimizer(optimizer_config, [ddp])


def build_scheduler(optimizer, config: PretrainConfig, train_steps: int, warmup_steps: int):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=config.lr,
        min_lr=config.min_lr,
        lr_warmup_steps=warmup_steps,
        lr_decay_steps=train_steps,
        lr_decay_style=config.lr_decay_style,
        start_wd=config.weight_decay,
        end_wd=config.weight_decay,
        wd_incr_steps=train_steps,
        wd_incr_style="constant",
    )
