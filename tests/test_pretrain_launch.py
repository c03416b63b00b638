"""The multi-node launcher's arithmetic: host lists, the rendezvous from SLURM's variables, clear refusals."""

from __future__ import annotations

import sys

import pytest

from workflow_scripts.config import ConfigError, PipelineConfig
from workflow_scripts.pretrain import launch
from tests.helpers import minimal_config

SLURM = {"SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_ID": "123456", "SLURM_NTASKS": "3", "SLURM_PROCID": "2"}


@pytest.fixture(autouse=True)
def without_scontrol(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)


@pytest.mark.parametrize("nodelist, hosts", [
    ("node1", ["node1"]),
    ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
    ("a[8-10]", ["a8", "a9", "a10"]),
    ("x[1],y[0001-0002]", ["x1", "y0001", "y0002"]),
])
def test_slurm_host_lists_expand(nodelist, hosts):
    assert launch.expand_nodelist(nodelist) == hosts


def test_every_node_meets_at_the_first_host_and_only_task_0_hosts_the_store():
    command = launch.torchrun_command(8, ["-m", "workflow_scripts.pretrain", "--config", "c.yaml"], SLURM)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    words = " ".join(command)
    assert "--nnodes 3 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint gpu07:29856 --rdzv-id 123456" in words
    assert "is_host=false" in words and words.endswith("-m workflow_scripts.pretrain --config c.yaml")
    assert "is_host=true" in " ".join(launch.torchrun_command(8, ["x.py"], {**SLURM, "SLURM_PROCID": "0"}))


def test_outside_an_allocation_the_missing_variable_is_named(monkeypatch):
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST is not set"):
        launch.torchrun_command(1, ["x.py"], {})
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    assert launch.main(["--nproc-per-node", "1", "--", "x.py"]) == 2


def test_only_pretraining_spans_nodes():
    raw = minimal_config()
    raw["resources"] = {"stages": {"sft": {"nodes": 2}}}
    with pytest.raises(ValueError, match=r"resources.stages.sft: nodes \(2\) > 1 is only for pretrain"):
        PipelineConfig.model_validate(raw)
