"""Pre-training on CPU: the artifact, metrics, LR schedule, refusals, and resume after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_scripts.config.pretrain import PARAM_KEYS, PretrainConfig
from workflow_scripts.core.artifacts import ArtifactError, read_manifest, read_run_facts, run_facts_path
from workflow_scripts.pretrain.data import read_mix, sample_indices
from workflow_scripts.pretrain.metrics import COLUMNS, TIMINGS_FILE, read_metrics
from workflow_scripts.pretrain.synthetic import make_synthetic_mix
from workflow_scripts.pretrain.train import plan_run, run_training, work_dir

REPO = Path(__file__).resolve().parents[1]
TINY = dict(micro_batch_size=2, global_batch_size=4, lr=3e-3, min_lr=3e-4)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def make_mix(directory: Path, steps: int) -> Path:
    """A synthetic mix whose planned budget is ``steps`` steps of 4 sequences of 64 tokens."""
    return make_synthetic_mix(directory / f"mix{steps}", vocab_size=384, tokens=20_000, seq_length=64,
                              budget_tokens=steps * 4 * 64, experiment="exp")


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    return make_mix(tmp_path_factory.mktemp("mix"), 30)


def test_trains_and_publishes_checkpoint_metrics_and_manifest(mix, tmp_path):
    out = tmp_path / "pt"
    config = PretrainConfig(lr_warmup_steps=5, checkpoint_interval=10, **TINY)  # steps: the mix's budget
    run_training(mix, out, config, experiment="exp")

    manifest = read_manifest(out, stage="pretrain")
    assert manifest.experiment == "exp"
    assert set(manifest.params) == set(PARAM_KEYS) and manifest.params["pretrain.train_steps"] is None
    assert manifest.counts["steps"] == 30 and manifest.counts["tokens"] == 30 * 4 * 64
    assert (out / "checkpoint" / "metadata.json").is_file()
    info = json.loads((out / "pretrain.json").read_text())
    assert info["vocab_size"] == 384 and info["seq_length"] == 64 and info["model"]["name"] == "tiny"
    assert not work_dir(out).exists()  # in-progress state is cleaned once the artifact is published

    header = (out / "metrics.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == COLUMNS
    rows = read_metrics(out / "metrics.tsv")
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert sum(r["loss"] for r in rows[-5:]) / 5 < rows[0]["loss"] - 0.3  # it learns the Markov chain
    # linear warmup from 0 over 5 steps, then linear decay to min_lr at step 30
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == 0 and lrs[5] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(3e-4 + 2.7e-3 / 25)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    assert all(r["grad_norm"] > 0 for r in rows)
    timings = read_metrics(run_facts_path(out, TIMINGS_FILE))  # the clock: untracked, beside the artifact
    assert [int(r["step"]) for r in timings] == list(range(1, 31)) and all(r["tokens_per_s"] > 0 for r in timings)
    assert read_run_facts(out)["tokens_per_s_median"] > 0


def test_refuses_a_mix_tokenized_for_another_vocabulary(mix, tmp_path):
    with pytest.raises(ArtifactError, match="another tokenizer than the model expects"):
        plan_run(PretrainConfig(model="350m"), read_mix(mix))
    with pytest.raises(ArtifactError, match="another tokenizer"):
        run_training(mix, tmp_path / "pt", PretrainConfig(model="350m"))
    assert not (tmp_path / "pt").exists()


def test_refuses_a_mix_of_another_experiment(mix, tmp_path):
    with pytest.raises(ArtifactError, match="experiment"):
        run_training(mix, tmp_path / "pt", PretrainConfig(**TINY), experiment="other")


def test_refuses_a_budget_other_than_the_mix_plan(mix, tmp_path):
    """Training fewer tokens than the mix planned would make its reported epochs per source wrong."""
    with pytest.raises(ArtifactError, match="planned for 120 samples"):
        run_training(mix, tmp_path / "pt", PretrainConfig(train_steps=10, **TINY))
    assert not (tmp_path / "pt").exists()


def test_steps_follow_the_token_budget(mix):
    plan = plan_run(PretrainConfig(train_tokens=10_000, **TINY), read_mix(mix))
    assert plan.train_steps == 40 and not plan.budget_from_mix  # ceil(10,000 / (4 x 64))
    default = plan_run(PretrainConfig(**TINY), read_mix(mix))
    assert default.train_steps == 30 and default.budget_from_mix
    rounded = plan_run(PretrainConfig(micro_batch_size=7, global_batch_size=7), read_mix(mix))
    assert rounded.train_steps == 18  # ceil(120 samples / 7)


def test_every_split_of_a_global_batch_reads_the_same_samples():
    def read(micro: int, dp: int) -> list[int]:
        return sorted(i for rank in range(dp) for m in range(8 // (micro * dp))
                      for i in sample_indices(3, m, global_batch=8, micro_batch=micro, dp_rank=rank, dp_size=dp))

    assert read(8, 1) == read(2, 2) == read(1, 4) == read(4, 2) == list(range(24, 32))


def test_step_batches_read_ahead_are_the_samples_of_each_step_in_order():
    import threading

    import torch

    from workflow_scripts.pretrain.data import BATCH_KEYS, StepBatches

    readers: set[str] = set()

    class Samples:
        def __getitem__(self, i):
            readers.add(threading.current_thread().name)
            return {key: torch.tensor([i, i + 1]) for key in BATCH_KEYS}

    batches = StepBatches(Samples(), last_step=3, num_microbatches=2, global_batch=8, micro_batch=2, dp_rank=1,
                          dp_size=2, device=torch.device("cpu"))
    try:
        for step in range(3):
            got = [b["tokens"][:, 0].tolist() for b in batches(step)]
            assert got == [list(sample_indices(step, m, global_batch=8, micro_batch=2, dp_rank=1, dp_size=2))
                           for m in range(2)]
    finally:
        batches.close()
    assert any(name.startswith("batch-prefetch") for name in readers)  # steps 1 and 2 were read ahead


KILLER = """
import os, signal, sys
from pathlib import Path
import torch
from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.pretrain.train import run_training

from workflow_scripts.core.cli import run_main
import argparse

SIGNAL = getattr(signal, sys.argv[5])

def kill_at(step, row):
    if step == int(sys.argv[4]):
        os.kill(os.getpid(), SIGNAL)

def body(args):
    run_training(Path(sys.argv[1]), Path(sys.argv[2]), PretrainConfig.model_validate_json(sys.argv[3]),
                 on_step=kill_at if int(sys.argv[4]) else None)

if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(run_main(body, argparse.ArgumentParser(), []))  # the stage CLI's error handling
"""


def _run_killable(script: Path, mix: Path, out: Path, config: PretrainConfig, kill_at: int,
                  signal_name: str) -> int:
    """Run in a session of its own, then end that session: dist_checkpointing's writer starts a helper
    process that outlives a SIGKILL of the trainer alone (torchrun and SLURM end the whole group)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log_file = out.parent / f"{out.name}.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen([sys.executable, str(script), str(mix), str(out), config.model_dump_json(),
                                    str(kill_at), signal_name], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    print(log_file.read_text()[-5000:])  # shown when the test fails
    return process.returncode


# SIGKILL: the work since the last interval checkpoint (step 3) is lost. SIGTERM (SLURM's time limit, a
# preemption): the step in progress finishes and is checkpointed, and the command exits with 143.
@pytest.mark.parametrize("signal_name, returncode, last_saved", [("SIGKILL", -9, 3), ("SIGTERM", 143, 5)])
def test_a_killed_run_resumes_to_the_same_losses_step_for_step(tmp_path, signal_name, returncode, last_saved):
    mix = make_mix(tmp_path, 10)
    config = PretrainConfig(lr_warmup_steps=2, checkpoint_interval=3, **TINY)
    reference = tmp_path / "reference"
    run_training(mix, reference, config)

    script = tmp_path / "killable.py"
    script.write_text(KILLER)
    out = tmp_path / "resumed"
    assert _run_killable(script, mix, out, config, kill_at=5, signal_name=signal_name) == returncode
    assert not out.exists()  # a kill never leaves a complete-looking artifact
    checkpoints = work_dir(out) / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"iter_{last_saved:07d}"

    steps_run: list[int] = []
    run_training(mix, out, config, on_step=lambda step, row: steps_run.append(step))  # the same command again
    assert steps_run == list(range(last_saved + 1, 11))  # resumed after the checkpoint, not from scratch
    expected, got = read_metrics(reference / "metrics.tsv"), read_metrics(out / "metrics.tsv")
    assert [int(r["step"]) for r in got] == list(range(1, 11))
    for want, have in zip(expected, got):
        assert (have["loss"], have["lr"], have["grad_norm"]) == (want["loss"], want["lr"], want["grad_norm"])


def test_wall_clock_interval_checkpoints_between_step_intervals(tmp_path):
    mix = make_mix(tmp_path, 6)
    config = PretrainConfig(checkpoint_interval=0, checkpoint_every_minutes=1e-9, keep_checkpoints=10, **TINY)
    saved: list[list[str]] = []
    checkpoints = work_dir(tmp_path / "pt") / "checkpoints"
    run_training(mix, tmp_path / "pt", config,
                 on_step=lambda step, row: saved.append(sorted(p.name for p in checkpoints.glob("iter_*"))))
    # before step k's own save, every earlier step has one (the clock is always due at this interval)
    assert saved[4] == [f"iter_{k:07d}" for k in range(1, 5)]


def test_changed_settings_start_afresh_instead_of_resuming(tmp_path):
    mix = make_mix(tmp_path, 2)
    out = tmp_path / "pt"
    work = work_dir(out)
    (work / "checkpoints" / "iter_0000001").mkdir(parents=True)
    (work / "run.json").write_text(json.dumps({"fingerprint": "made with other settings"}))
    run_training(mix, out, PretrainConfig(**TINY))
    assert len(read_metrics(out / "metrics.tsv")) == 2


def test_stage_cli(mix, tmp_path):
    from workflow_scripts.pretrain.train import main

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import write_config

    config = write_config(tmp_path, experiments={"exp": {}})
    out = tmp_path / "pt"
    assert main(["--config", str(config), "--experiment", "exp", "--mix", str(mix), "--out", str(out)]) == 0
    manifest = read_manifest(out, stage="pretrain")
    assert manifest.params == {k: v for k, v in manifest.params.items() if k in PARAM_KEYS}
    # default: the mix's budget (120 samples) in steps of the default global batch of 8
    assert manifest.counts["steps"] == 15
    assert main(["--config", str(config), "--experiment", "nope", "--mix", str(mix), "--out", str(out)]) == 2
