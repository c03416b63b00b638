"""Two processes under torchrun (gloo, CPU): tensor, data and pipeline parallel train and checkpoint.

Dropout is switched off here so that the runs can be compared with a single process: CPU initialisation is
the same at any tensor-parallel size, and data parallelism only changes where micro-batches run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.core.artifacts import read_manifest
from workflow_scripts.config import model_configs
from workflow_scripts.pretrain.metrics import read_metrics
from workflow_scripts.pretrain.synthetic import make_synthetic_mix
from workflow_scripts.pretrain.train import run_training

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path
import torch
from workflow_scripts.config import model_configs
from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.pretrain.train import run_training

if __name__ == "__main__":
    torch.set_num_threads(1)
    model_configs.MODELS["tiny_nodrop"] = replace(model_configs.MODELS["tiny"], name="tiny_nodrop",
                                                  attention_dropout=0.0)
    run_training(Path(sys.argv[1]), Path(sys.argv[2]), PretrainConfig.model_validate_json(sys.argv[3]))
"""


def _config(**parallel) -> PretrainConfig:
    return PretrainConfig(model="tiny_nodrop", checkpoint_interval=4, micro_batch_size=2,
                          global_batch_size=4, lr=3e-3, lr_warmup_steps=1, **parallel)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(tmp: Path, mix: Path, out: Path, config: PretrainConfig) -> None:
    script = tmp / "train_script.py"
    script.write_text(SCRIPT)
    log_file = tmp / f"{out.name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(script), str(mix), str(out), config.model_dump_json()]
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, log_file.read_text()[-5000:]


@pytest.fixture(scope="module", autouse=True)
def tiny_without_dropout():
    model_configs.MODELS["tiny_nodrop"] = replace(model_configs.MODELS["tiny"], name="tiny_nodrop",
                                                  attention_dropout=0.0)
    yield
    del model_configs.MODELS["tiny_nodrop"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mix = make_synthetic_mix(tmp / "mix", vocab_size=384, tokens=10_000, seq_length=64, budget_tokens=8 * 4 * 64)
    return tmp, mix


@pytest.fixture(scope="module")
def reference(setup):
    """The same training in one process (TP = DP = 1, two micro-batches per step)."""
    tmp, mix = setup
    torch.set_num_threads(1)
    run_training(mix, tmp / "single", _config())
    return read_metrics(tmp / "single" / "metrics.tsv")


# Pipeline stages are seeded apart (Megatron-LM: seed + 100 x stage), so PP=2 starts from another
# initialisation than one process: it must train, checkpoint and reshard, not match step for step.
@pytest.mark.parametrize("name, parallel, matches_single", [
    ("tp2", {"tensor_parallel_size": 2}, True),
    ("dp2", {}, True),
    ("pp2", {"pipeline_parallel_size": 2}, False),
])
def test_two_processes_train_checkpoint_and_match_one(setup, reference, name, parallel, matches_single):
    tmp, mix = setup
    out = tmp / name
    _torchrun(tmp, mix, out, _config(**parallel))
    manifest = read_manifest(out, stage="pretrain")
    assert manifest.info["world_size"] == 2
    assert manifest.info["tensor_parallel_size"] == parallel.get("tensor_parallel_size", 1)
    assert manifest.info["pipeline_parallel_size"] == parallel.get("pipeline_parallel_size", 1)
    assert (out / "checkpoint" / "metadata.json").is_file()
    rows = read_metrics(out / "metrics.tsv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < rows[0]["loss"]
    if matches_single:
        for want, got in zip(reference, rows):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
            assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3)


@pytest.mark.parametrize("name", ["tp2", "pp2"])
def test_parallel_checkpoints_read_back_at_one_rank(setup, reference, name):
    """TP=2 / PP=2 checkpoints are read whole (as conversion does); TP=2's equals the single run's."""
    from workflow_scripts.pretrain.convert import load_checkpoint_tensors

    tmp, _ = setup
    sharded, single = tmp / name, tmp / "single"
    if not (sharded / "checkpoint").is_dir():
        pytest.skip(f"needs the {name} run of the test above")
    a = load_checkpoint_tensors(sharded / "checkpoint")
    b = load_checkpoint_tensors(single / "checkpoint")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape
        if name == "tp2":
            assert torch.allclose(a[key], b[key], atol=1e-4), key


def test_two_nodes_of_one_process_match_one_node_of_two(setup):
    """The multi-node launch (one launcher per node, as srun starts them; c10d rendezvous on the first node)
    as 2 nodes x 1 process on this machine: the same losses, step for step, as 1 node x 2 processes (DP=2)."""
    tmp, mix = setup
    one_node = tmp / "dp2"
    if not (one_node / "metrics.tsv").is_file():
        _torchrun(tmp, mix, one_node, _config())
    script = tmp / "train_script.py"
    script.write_text(SCRIPT)
    out = tmp / "two_nodes"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "SLURM_JOB_NODELIST": "localhost",
           "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "PRETRAIN_RDZV_PORT": str(_free_port())}
    launchers, logs = [], []
    for task in (1, 0):  # the host last: the other node must wait for its rendezvous store
        logs.append(tmp / f"node{task}.log")
        with open(logs[-1], "w") as log:
            launchers.append(subprocess.Popen(
                [sys.executable, "-m", "workflow_scripts.pretrain.launch", "--nproc-per-node", "1", "--",
                 str(script), str(mix), str(out), _config().model_dump_json()],
                env={**env, "SLURM_PROCID": str(task)}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
    try:
        for launcher in launchers:
            launcher.wait(timeout=900)
    finally:
        for launcher in launchers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
    for launcher, log_file in zip(launchers, logs):
        assert launcher.returncode == 0, log_file.read_text()[-5000:]
    assert read_manifest(out, stage="pretrain").info["world_size"] == 2
    want, got = read_metrics(one_node / "metrics.tsv"), read_metrics(out / "metrics.tsv")
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in got] == [
        (r["step"], r["loss"], r["grad_norm"]) for r in want]
