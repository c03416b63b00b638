"""Stage pretrain: train a Llama-style model from scratch on one mix with megatron-core.

Input ``--mix DIR``: a mix artifact (``blend.json``: Megatron .bin/.idx prefixes, blend weights, token
budget, tokenizer facts). The model is ``pretrain.model`` (pretrain/model_configs.py); a mix whose
tokenizer does not fit the model's vocabulary is refused.

Budget: the mix's plan (``num_samples`` of ``seq_length`` tokens in ``blend.json``), rounded up to whole steps
of ``pretrain.global_batch_size`` sequences; ``pretrain.train_steps`` / ``train_tokens`` override it but must
agree with the plan within 1 % (otherwise the epochs per source the mix reports would be wrong).

Training: megatron-core ``GPTModel`` (local layer spec; Transformer Engine on GPU when installed),
Megatron's DistributedDataParallel and pipeline schedules, AdamW (Megatron's optimizer on GPU, torch's on
CPU), linear warmup then linear decay, gradient clipping, global batch = micro batch x gradient
accumulation x data-parallel size. Multi-process: ``torchrun --nproc_per_node N -m workflow_scripts.pretrain
...`` with ``pretrain.tensor_parallel_size`` / ``pipeline_parallel_size``; the rest is data parallel.

Resuming: checkpoints (megatron.core.dist_checkpointing; model, optimizer, scheduler, RNG, data position)
are written every ``pretrain.checkpoint_interval`` steps to ``<out>.work/``, outside the artifact. Running
the same command again after a kill resumes from the last one (same settings and mix; otherwise the work
directory is started afresh). A checkpoint is also written when ``pretrain.checkpoint_every_minutes`` have
passed since the last one, and on SIGTERM (SLURM's time limit or a preemption; torchrun passes it on): the
step in progress finishes, every rank saves, and the command exits with 143 so that the scheduler reruns it.
The artifact appears only when training has finished. Kill the whole process
group (as torchrun and SLURM do): dist_checkpointing's writer keeps a helper process.

Output artifact: ``checkpoint/`` (the final dist checkpoint), ``pretrain.json`` (architecture, vocabulary,
sequence length, steps), ``metrics.tsv`` (per step: loss, lr, grad_norm, ...; the timings per step,
tokens_per_s, mfu and elapsed_s, go to the untracked ``<artifact>.timings.tsv`` beside it), and
``tokenizer/`` when the mix records a tokenizer folder. ``python -m workflow_scripts.pretrain.convert``
turns it into a Hugging Face Llama folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from workflow_scripts.config import ConfigError
from workflow_scripts.config.model_configs import ModelArch, flops_per_token, get_arch, padded_vocab_size
from workflow_scripts.config.pretrain import PARAM_KEYS, UNTRACKED_KEYS, PretrainConfig
from workflow_scripts.core.artifacts import ArtifactError, JobIdentity, build_artifact, read_manifest
from workflow_scripts.core.cli import StageInterrupted, load_checked_config, run_main, stage_parser
from workflow_scripts.core.hashing import hash_value
from workflow_scripts.core.identity import job_identity
from workflow_scripts.mixes.reader import read_blend
from workflow_scripts.pretrain.data import MIX_STAGE, Mix, read_mix

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
STAGE = "pretrain"
INFO_FILE = "pretrain.json"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class Plan:
    """What a run will do, fixed before any model is built."""

    arch: ModelArch
    vocab_size: int          # embedding rows
    tokenizer_vocab: int
    seq_length: int
    train_steps: int
    warmup_steps: int
    global_batch: int
    micro_batch: int
    budget_from_mix: bool    # False: train_steps / train_tokens override the mix's planned budget

    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_length


def work_dir(out: Path) -> Path:
    """In-progress checkpoints and metrics live beside the artifact, never inside it."""
    return out.parent / f"{out.name}.work"


def plan_run(config: PretrainConfig, mix: Mix) -> Plan:
    """Check the mix against the model config and fix steps, warmup and sequence length."""
    arch = get_arch(config.model)
    tokenizer_vocab = mix.blend.tokenizer.vocab_size
    padded = padded_vocab_size(tokenizer_vocab)
    if arch.vocab_size is not None and padded != arch.vocab_size:
        raise ArtifactError(
            f"{mix.root}: the mix was tokenized with a vocabulary of {tokenizer_vocab} tokens (padded: {padded}), "
            f"but model config {arch.name!r} has {arch.vocab_size} embedding rows: the mix was built with "
            "another tokenizer than the model expects; rebuild the mix with the model's tokenizer or choose "
            "another model config"
        )
    vocab = arch.vocab_size or padded
    if vocab % config.tensor_parallel_size:
        raise ConfigError(f"vocabulary {vocab} is not divisible by pretrain.tensor_parallel_size "
                            f"{config.tensor_parallel_size}")
    seq_length = mix.blend.seq_length
    if seq_length > arch.seq_length:
        raise ArtifactError(f"{mix.root}: the mix asks for sequences of {seq_length} tokens, longer than the "
                            f"{arch.seq_length}-token context of model config {arch.name!r}")
    if config.train_steps is not None:
        steps = config.train_steps
    elif config.train_tokens is not None:
        steps = max(1, math.ceil(config.train_tokens / (config.global_batch_size * seq_length)))
    else:  # the mix's budget, rounded up to whole steps
        steps = math.ceil(mix.blend.num_samples / config.global_batch_size)
    warmup = config.lr_warmup_steps if config.lr_warmup_steps is not None else int(config.lr_warmup_fraction * steps)
    if warmup >= steps:
        raise ConfigError(f"pretrain: lr warmup ({warmup} steps) must be shorter than training ({steps} steps)")
    return Plan(arch=arch, vocab_size=vocab, tokenizer_vocab=tokenizer_vocab, seq_length=seq_length,
                train_steps=steps, warmup_steps=warmup, global_batch=config.global_batch_size,
                micro_batch=config.micro_batch_size,
                budget_from_mix=config.train_steps is None and config.train_tokens is None)


def mix_identity(mix_dir: Path, experiment: str | None) -> str:
    """The mix's identity from its manifest; refuses a mix of another experiment, or one whose files no longer
    match its manifest (the token files it points to are checked when the datasets are built)."""
    manifest = read_manifest(mix_dir, stage=MIX_STAGE, experiment=experiment, verify=True)
    return hash_value({"files": manifest.files, "blend": read_blend(mix_dir).content_hash()})


# --- the step -----------------------------------------------------------------------------------------------


def _loss_func(loss_mask, output_tensor):
    """Megatron's 3-tuple loss protocol: summed loss, token count, and [sum, count] for logging."""
    import torch

    losses = output_tensor.float().view(-1)
    mask = loss_mask.view(-1).float()
    loss_sum = torch.sum(losses * mask)
    count = mask.sum()
    return loss_sum, count.to(torch.int), {"lm loss": torch.stack([loss_sum.detach().clone(), count])}


def _forward_step(attention_mask, data_iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], attention_mask, labels=batch["labels"])
    return output, partial(_loss_func, batch["loss_mask"])


def _reduce_loss(losses: list[dict[str, Any]], device) -> float:
    """Token-weighted mean loss of the step over micro-batches, data-parallel ranks and pipeline stages."""
    import torch
    from megatron.core import parallel_state

    total = torch.zeros(2, dtype=torch.float32, device=device)
    for item in losses:
        total += item["lm loss"].to(device)
    torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
    torch.distributed.all_reduce(total, group=parallel_state.get_pipeline_model_parallel_group())
    return float(total[0] / total[1].clamp(min=1))


# --- the stage -----------------------------------------------------------------------------------------------


def run_training(
    mix_dir: Path,
    out: Path,
    config: PretrainConfig,
    *,
    identity: JobIdentity | None = None,
    experiment: str | None = None,
    resume: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train on the mix and publish the artifact at ``out``; collective over torchrun's processes.

    ``on_step(step, row)`` is called on every rank after each optimizer step (monitoring, tests).
    """
    mix_dir, out = Path(mix_dir), Path(out)
    quiet_megatron()
    if identity is None:  # outside the pipeline (library use, tests): the keys the stage reads, no fingerprint
        values = config.model_dump(mode="json")
        params = {key: values[key.removeprefix("pretrain.")] for key in PARAM_KEYS}
        identity = JobIdentity(stage=STAGE, experiment=experiment, params=params)
    mix = read_mix(mix_dir)
    plan = plan_run(config, mix)
    mix_id = mix_identity(mix_dir, experiment)
    from workflow_scripts.pretrain.model import process_groups

    with process_groups(config.tensor_parallel_size, config.pipeline_parallel_size) as runtime:
        _train(mix, out, config, plan, runtime, job=identity, mix_id=mix_id, resume=resume, on_step=on_step)
    return out


def quiet_megatron() -> None:
    """megatron-core logs every parameter and index build at INFO, and warns at import about optional fused
    kernels (Apex, Transformer Engine) and about arguments it will require in later versions."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("megatron.core").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(Apex|Transformer Engine).*not installed")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"megatron\.core")
    warnings.filterwarnings("ignore", message=r"full scope is deprecated", module=r"megatron\.core")


def _train(mix: Mix, out: Path, config: PretrainConfig, plan: Plan, runtime, *, job: JobIdentity, mix_id: str,
           resume: bool, on_step: Callable[[int, dict[str, float]], None] | None) -> None:
    """Set up, then optimizer steps with interval checkpoints, then the final checkpoint and the artifact."""
    import torch
    from tqdm import tqdm

    run = _setup(mix, out, config, plan, runtime, mix_id=mix_id, resume=resume)
    bar = tqdm(total=plan.train_steps, initial=run.progress.step, disable=run.rank != 0, unit="step",
               dynamic_ncols=True, desc=f"pretrain {plan.arch.name}")
    with StopRequest() as stop, contextlib.closing(run.batches):
        while run.progress.step < plan.train_steps:
            row = _step(run)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:,.0f}",
                            **({} if math.isnan(row["mfu"]) else {"mfu": f"{row['mfu']:.1%}"}))
            if on_step is not None:
                on_step(run.progress.step, row)
            _checkpoint(run, stop)
    bar.close()
    final = _checkpoint(run, final=True)

    if run.rank == 0:
        _publish(out, final, run.work, mix, plan, config, job, runtime, run.dtype_name, run.world)
    torch.distributed.barrier()
    if run.rank == 0:
        shutil.rmtree(run.work, ignore_errors=True)


@dataclass
class _Run:
    """What the training loop works with, built by :func:`_setup`; ``progress`` and ``elapsed`` advance."""

    config: PretrainConfig
    plan: Plan
    runtime: Any
    rank: int
    world: int
    dp_rank: int
    dp_size: int
    num_microbatches: int
    dtype_name: str
    work: Path
    ckpt_root: Path
    gpt: Any                  # the bare GPTModel (what checkpoints hold)
    ddp: Any                  # gpt wrapped in Megatron's DistributedDataParallel
    optimizer: Any
    scheduler: Any
    progress: Any             # checkpoint.Progress: steps done, samples consumed
    batches: Any              # data.StepBatches: a step's micro-batches, the next step read ahead
    forward_step: Callable
    forward_backward: Callable
    schedule_context: Callable[[], contextlib.AbstractContextManager]
    metrics: Any              # MetricsLog on rank 0, None elsewhere
    flops: float              # per token
    peak: float | None        # TFLOP/s per GPU (None on CPU)
    elapsed: float = 0.0      # seconds spent in steps by this process
    last_save: float = field(default_factory=time.monotonic)  # monotonic clock at setup or the last checkpoint


def _setup(mix: Mix, out: Path, config: PretrainConfig, plan: Plan, runtime, *, mix_id: str,
           resume: bool) -> _Run:
    """In the existing process groups: the work directory, model, optimizer, scheduler, the state of the last
    checkpoint when resuming, the dataset and the forward-backward schedule."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from workflow_scripts.pretrain import checkpoint, cpu
    from workflow_scripts.pretrain import model as mm
    from workflow_scripts.pretrain.data import StepBatches, build_train_dataset
    from workflow_scripts.pretrain.metrics import MetricsLog, peak_tflops

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    dp_rank, dp_size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    if plan.global_batch % (plan.micro_batch * dp_size):
        raise ConfigError(f"pretrain.global_batch_size {plan.global_batch} is not a multiple of micro_batch_size "
                          f"{plan.micro_batch} x data-parallel size {dp_size}")
    num_microbatches = plan.global_batch // (plan.micro_batch * dp_size)
    dtype_name = mm.precision(config, runtime)
    log.info("plan: model %s (vocab %d), %d steps of %d sequences x %d tokens, warmup %d; world %d = TP %d x PP "
             "%d x DP %d, %d micro-batches of %d, %s on %s", plan.arch.name, plan.vocab_size, plan.train_steps,
             plan.global_batch, plan.seq_length, plan.warmup_steps, world, config.tensor_parallel_size,
             config.pipeline_parallel_size, dp_size, num_microbatches, plan.micro_batch, dtype_name,
             "CPU" if runtime.on_cpu else torch.cuda.get_device_name())

    work = work_dir(out)
    ckpt_root = work / "checkpoints"
    if rank == 0:
        settings = config.model_dump(mode="json", exclude={k.removeprefix("pretrain.") for k in UNTRACKED_KEYS})
        _prepare_work_dir(work, hash_value({"config": settings, "mix": mix_id, "world": world}), resume)
        checkpoint.clean_temporaries(ckpt_root)
    torch.distributed.barrier()

    # model, optimizer, schedule
    mm.seed_everything(config.seed, runtime)
    tf_config = mm.transformer_config(plan.arch, config, runtime, dtype_name)
    gpt = mm.build_gpt(plan.arch, tf_config, mm.layer_spec(config, runtime), plan.vocab_size, plan.seq_length,
                       runtime)
    ddp = mm.wrap_model(gpt, tf_config, config, runtime, dp_size)
    optimizer = mm.build_optimizer(ddp, config, runtime, dtype_name)
    scheduler = mm.build_scheduler(optimizer, config, plan.train_steps, plan.warmup_steps)
    last = checkpoint.latest(ckpt_root)
    progress = (checkpoint.load(last, gpt, optimizer, scheduler, on_cpu=runtime.on_cpu) if last
                else checkpoint.Progress())

    # data: an explicit budget more than 1 % away from the mix's plan is refused (the epochs per source the
    # mix reports would be wrong); the mix's own budget only differs by the rounding to whole steps.
    dataset = build_train_dataset(mix, samples=plan.train_steps * plan.global_batch, seq_length=plan.seq_length,
                                  seed=config.seed, cache_dir=work / "dataset_cache",
                                  strict_budget=not plan.budget_from_mix, eod_mask_loss=config.eod_mask_loss)
    # Transformer Engine applies the causal mask itself; the local attention is given one shared mask.
    attention_mask = None if mm.use_transformer_engine(config, runtime) else torch.triu(
        torch.ones(plan.seq_length, plan.seq_length, dtype=torch.bool, device=runtime.device), diagonal=1
    )[None, None]

    return _Run(
        config=config, plan=plan, runtime=runtime, rank=rank, world=world, dp_rank=dp_rank, dp_size=dp_size,
        num_microbatches=num_microbatches, dtype_name=dtype_name, work=work, ckpt_root=ckpt_root, gpt=gpt,
        ddp=ddp, optimizer=optimizer, scheduler=scheduler, progress=progress,
        batches=StepBatches(dataset, last_step=plan.train_steps, num_microbatches=num_microbatches,
                            global_batch=plan.global_batch, micro_batch=plan.micro_batch, dp_rank=dp_rank,
                            dp_size=dp_size, device=runtime.device),
        forward_step=partial(_forward_step, attention_mask), forward_backward=get_forward_backward_func(),
        schedule_context=cpu.cuda_tensors_on_cpu if runtime.on_cpu else contextlib.nullcontext,
        metrics=MetricsLog(work / "metrics.tsv", progress.step) if rank == 0 else None,
        flops=flops_per_token(plan.arch, plan.seq_length, plan.vocab_size),
        peak=None if runtime.on_cpu else (config.peak_tflops or peak_tflops(torch.cuda.get_device_name())),
    )


def _step(run: _Run) -> dict[str, float]:
    """One optimizer step over a global batch: forward/backward of every micro-batch (Megatron's schedule),
    the update, the LR schedule; returns the step's metrics row (also appended to metrics.tsv on rank 0)."""
    from workflow_scripts.pretrain.metrics import mfu

    plan, progress = run.plan, run.progress
    started = time.perf_counter()
    run.ddp.zero_grad_buffer()
    run.optimizer.zero_grad()
    data = run.batches(progress.step)
    with run.schedule_context():
        losses = run.forward_backward(forward_step_func=run.forward_step, data_iterator=data, model=[run.ddp],
                                      num_microbatches=run.num_microbatches, seq_length=plan.seq_length,
                                      micro_batch_size=plan.micro_batch, forward_only=False)
    ok, grad_norm, _ = run.optimizer.step()
    lr = run.optimizer.param_groups[0]["lr"]
    if ok:
        run.scheduler.step(1)
    else:  # as Megatron-LM: the update is skipped and the schedule does not advance
        log.warning("step %d skipped: non-finite gradients", progress.step + 1)
    loss = _reduce_loss(losses, run.runtime.device)  # synchronises with the device before the clock is read
    progress.step += 1
    progress.consumed_samples += plan.global_batch
    seconds = time.perf_counter() - started
    run.elapsed += seconds
    tokens_per_s = plan.tokens_per_step() / seconds
    row = {"step": progress.step, "consumed_samples": progress.consumed_samples,
           "tokens": progress.consumed_samples * plan.seq_length, "loss": loss, "lr": lr,
           "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
           "tokens_per_s": tokens_per_s, "mfu": mfu(tokens_per_s, run.flops, run.peak, run.world),
           "elapsed_s": run.elapsed}
    if run.metrics is not None:
        run.metrics.append(row)
    return row


class StopRequest:
    """While active, SIGTERM asks the training loop to checkpoint and stop after the step in progress (instead
    of dying mid-step and losing the work since the last checkpoint). Only the main thread can take signals."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: Any = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._take)
        return self

    def _take(self, signum: int, frame: Any) -> None:
        self.signal = signum
        log.warning("received %s: the checkpoint after this step will be the last one", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class TrainingInterrupted(StageInterrupted):
    """Stopped by a signal after saving a checkpoint; the same command resumes from it."""


def _agreed(run: _Run, flags: list[bool]) -> list[bool]:
    """The flags OR-ed over every rank, so that all ranks take part in the same collective checkpoint (a
    signal or a clock can reach one rank a step before another)."""
    import torch

    values = torch.tensor([float(f) for f in flags], device=run.runtime.device)
    torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def _checkpoint(run: _Run, stop: StopRequest | None = None, *, final: bool = False) -> Path | None:
    """After a step: a checkpoint every ``pretrain.checkpoint_interval`` steps or ``checkpoint_every_minutes``,
    except at the last step (the final save covers it); on a stop request, a checkpoint and then
    :class:`TrainingInterrupted`. Returns None. With ``final``: the checkpoint of the last step, saved unless
    it already exists (a resumed run that had saved it), and returned."""
    from workflow_scripts.pretrain import checkpoint

    config, plan, progress = run.config, run.plan, run.progress
    save = partial(checkpoint.save, run.ckpt_root, run.gpt, run.optimizer, run.scheduler, progress,
                   on_cpu=run.runtime.on_cpu, keep=config.keep_checkpoints)
    if not final:
        if progress.step >= plan.train_steps:
            return None
        interval, minutes = config.checkpoint_interval, config.checkpoint_every_minutes
        by_steps = bool(interval) and progress.step % interval == 0
        by_clock = minutes is not None and time.monotonic() - run.last_save >= 60 * minutes
        stopping, by_clock = _agreed(run, [stop is not None and stop.signal is not None, by_clock])
        if by_steps or by_clock or stopping:
            path = save()
            run.last_save = time.monotonic()
            if by_clock and not by_steps:
                log.info("checkpoint %s after %.0f minutes", path.name, minutes)
        if stopping:
            raise TrainingInterrupted(
                f"stopped by SIGTERM after step {progress.step} of {plan.train_steps}: checkpoint saved in "
                f"{run.ckpt_root}; run the same command again to resume from it")
        return None
    last = checkpoint.latest(run.ckpt_root)
    if last is None or last.name != checkpoint.checkpoint_name(plan.train_steps):
        last = save()
    return last


def _prepare_work_dir(work: Path, fingerprint: str, resume: bool) -> None:
    run_file = work / RUN_FILE
    if work.exists():
        previous = json.loads(run_file.read_text()).get("fingerprint") if run_file.is_file() else None
        if resume and previous == fingerprint:
            log.info("resuming in %s", work)
            return
        log.warning("starting afresh: %s holds a run with %s", work,
                    "other settings or another mix" if resume else "--no-resume given")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    run_file.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def _publish(out: Path, final: Path, work: Path, mix: Mix, plan: Plan, config: PretrainConfig,
             job: JobIdentity, runtime, dtype_name: str, world: int) -> None:
    from workflow_scripts.pretrain import checkpoint
    from workflow_scripts.pretrain.metrics import TIMINGS_FILE, read_metrics
    from workflow_scripts.pretrain.model import layer_spec_name

    rows = read_metrics(work / "metrics.tsv")
    timings = read_metrics(work / TIMINGS_FILE) if (work / TIMINGS_FILE).is_file() else []
    info = {
        "model": plan.arch.to_dict(),
        "vocab_size": plan.vocab_size,
        "tokenizer": mix.blend.tokenizer.model_dump(mode="json"),
        "mix_samples": mix.blend.num_samples,
        "seq_length": plan.seq_length,
        "train_steps": plan.train_steps,
        "warmup_steps": plan.warmup_steps,
        "global_batch_size": plan.global_batch,
        "tokens": plan.train_steps * plan.tokens_per_step(),
        "precision": dtype_name,
        "layer_spec": layer_spec_name(config, runtime),
        "device": "cpu" if runtime.on_cpu else "cuda",
        "world_size": world,
        "tensor_parallel_size": config.tensor_parallel_size,
        "pipeline_parallel_size": config.pipeline_parallel_size,
        "checkpoint_format": "megatron.core.dist_checkpointing",
    }
    inputs = {"mix": mix.root, **({"tokenizer": mix.tokenizer_dir} if mix.tokenizer_dir is not None else {})}
    speeds = sorted(r["tokens_per_s"] for r in timings)
    log.info("trained %d steps (%d tokens): final loss %.4f, median %.0f tokens/s", plan.train_steps,
             info["tokens"], rows[-1]["loss"] if rows else math.nan, speeds[len(speeds) // 2] if speeds else 0)
    with build_artifact(out, identity=job, inputs=inputs) as artifact:
        shutil.copytree(final, artifact.path / "checkpoint")
        checkpoint.make_reproducible(artifact.path / "checkpoint")
        shutil.copy2(work / "metrics.tsv", artifact.path / "metrics.tsv")
        if timings:  # the clock's columns: beside the artifact, untracked
            shutil.copy2(work / TIMINGS_FILE, artifact.run_file(TIMINGS_FILE))
            mfus = sorted(r["mfu"] for r in timings if not math.isnan(r["mfu"]))
            artifact.run.update(tokens_per_s_median=round(speeds[len(speeds) // 2], 1),
                                mfu_median=round(mfus[len(mfus) // 2], 4) if mfus else None,
                                train_seconds=round(timings[-1]["elapsed_s"], 3))
        if mix.tokenizer_dir is not None:
            shutil.copytree(mix.tokenizer_dir, artifact.path / "tokenizer")
        (artifact.path / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        artifact.info.update(info)
        artifact.counts.update(steps=plan.train_steps, tokens=info["tokens"],
                               final_loss=rows[-1]["loss"] if rows else math.nan)


def run(args: argparse.Namespace) -> None:
    config = load_checked_config(args.config, args.experiment)
    identity = job_identity(config, STAGE, args.experiment, {"mix": args.mix})
    run_training(args.mix, args.out, config.pretrain_for(args.experiment), identity=identity,
                 experiment=args.experiment,
                 resume=not args.no_resume)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, experiment=True)
    parser.prog = "python -m workflow_scripts.pretrain"
    parser.add_argument("--mix", type=Path, required=True, help="mix artifact directory (with blend.json)")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore checkpoints left in <out>.work by an interrupted run")
    return run_main(run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
