"""Benchmark: pre-training throughput (tokens/s) and, on GPUs, model FLOPs utilisation (MFU).

The script builds a synthetic mix (``workflow_scripts.pretrain.synthetic``: random sparse-Markov documents in
Megatron .bin/.idx with a valid ``blend.json``) and runs the real stage code (``run_training``: megatron-core
GPTModel, Megatron DDP and schedules, checkpoints, metrics) for ``--steps`` steps, then reads the per-step
metrics. Reported: median tokens/s over the steps after ``--skip`` warm-up steps (checkpoint steps excluded),
the same as model FLOP/s, and MFU on GPUs.

MFU = tokens/s x FLOPs per token / (GPUs x peak dense bf16 FLOP/s), with FLOPs per token
= 6 x N_matmul + 12 x L x s x h (``model_configs.flops_per_token``: forward + backward = 3 x forward; 2 FLOPs per
weight of every matrix multiply incl. the LM head; attention scores and weighted values over the full s x s;
no activation recomputation counted). Peak: H100 SXM / H200 989 TFLOP/s, A100 312 (``metrics.PEAK_BF16_TFLOPS``;
``--peak-tflops`` to override).

Usage:
  CPU (default): python benchmarks/bench_pretrain.py [--steps 40] [--micro-batch 4] [--global-batch 8]
  one GPU, paper 350M: python benchmarks/bench_pretrain.py --gpu --model 350m [--steps 300] [--micro-batch 8]
                       [--global-batch 64]
  several GPUs: torchrun --nproc_per_node 8 benchmarks/bench_pretrain.py --gpu --model 1.4b --global-batch 128
Results go to benchmarks/results/pretrain.json (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="named config (tiny, 350m, 1.4b)")
    parser.add_argument("--gpu", action="store_true", help="require a GPU (bf16, MFU); otherwise CPU")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 40 CPU, 300 GPU)")
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 4 CPU, 8 GPU")
    parser.add_argument("--global-batch", type=int, default=None, help="default: 8 CPU, 64 GPU")
    parser.add_argument("--seq-length", type=int, default=None, help="default: the model's context")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: the model's (tiny: 4096)")
    parser.add_argument("--tensor-parallel", type=int, default=1)
    parser.add_argument("--pipeline-parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="per-GPU peak for MFU")
    parser.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "results" / "pretrain")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "pretrain.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from workflow_scripts.config.model_configs import flops_per_token, get_arch, padded_vocab_size
    from workflow_scripts.config.pretrain import PretrainConfig
    from workflow_scripts.core.artifacts import run_facts_path
    from workflow_scripts.pretrain.metrics import TIMINGS_FILE, read_metrics
    from workflow_scripts.pretrain.synthetic import make_synthetic_mix
    from workflow_scripts.pretrain.train import run_training

    if args.gpu and not torch.cuda.is_available():
        print("--gpu given but no CUDA device is visible", file=sys.stderr)
        return 2
    if not args.gpu and torch.cuda.is_available():
        print("a GPU is visible: pass --gpu (the CPU benchmark needs CUDA_VISIBLE_DEVICES='')", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    arch = get_arch(args.model)
    steps = args.steps or (300 if args.gpu else 40)
    micro = args.micro_batch or (8 if args.gpu else 4)
    global_batch = args.global_batch or (64 if args.gpu else 8)
    seq = args.seq_length or arch.seq_length
    vocab = args.vocab_size or arch.vocab_size or 4096
    if padded_vocab_size(vocab) != (arch.vocab_size or padded_vocab_size(vocab)):
        print(f"--vocab-size {vocab} does not fit model {arch.name}", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))

    work = args.work_dir / f"{arch.name}-{'gpu' if args.gpu else 'cpu'}"
    mix = work / "mix"
    budget = steps * global_batch * seq
    if rank == 0:
        shutil.rmtree(work, ignore_errors=True)
        make_synthetic_mix(mix, vocab_size=vocab, tokens=max(200_000, min(budget, 5_000_000)), seq_length=seq,
                           budget_tokens=budget, eod=0)
    else:
        while not (mix / "manifest.json").is_file():
            time.sleep(1)
    config = PretrainConfig(model=arch.name, micro_batch_size=micro, global_batch_size=global_batch,
                            checkpoint_interval=0, lr_warmup_steps=min(10, steps // 10),
                            tensor_parallel_size=args.tensor_parallel,
                            pipeline_parallel_size=args.pipeline_parallel, peak_tflops=args.peak_tflops)
    started = time.perf_counter()
    run_training(mix, work / "out", config)
    wall = time.perf_counter() - started
    if rank != 0:
        return 0

    rows = read_metrics(run_facts_path(work / "out", TIMINGS_FILE))  # the per-step clock, beside the artifact
    timed = rows[args.skip:-1] or rows  # the last step is followed by the final checkpoint
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
    flops = flops_per_token(arch, seq, padded_vocab_size(vocab))
    mfus = [r["mfu"] for r in timed if r["mfu"] == r["mfu"]]
    result = {
        "model": arch.name, "device": torch.cuda.get_device_name() if args.gpu else platform.processor() or "cpu",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "threads": args.threads,
        "steps": steps, "micro_batch": micro, "global_batch": global_batch, "seq_length": seq, "vocab": vocab,
        "tensor_parallel": args.tensor_parallel, "pipeline_parallel": args.pipeline_parallel,
        "tokens_per_s_median": round(tokens_per_s, 1),
        "model_tflops_per_s": round(tokens_per_s * flops / 1e12, 4),
        "mfu_median": round(statistics.median(mfus), 4) if mfus else None,
        "flops_per_token": flops,
        "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
        "wall_s": round(wall, 1),
        "checkpoint_bytes": sum(p.stat().st_size for p in (work / "out" / "checkpoint").rglob("*") if p.is_file()),
    }
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
