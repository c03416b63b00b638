"""Hugging Face offline mode is a property of the configuration (`hub.offline`), carried by the stage commands."""

from __future__ import annotations

import subprocess

import yaml

from tests.project import REPO
from workflow_scripts.config import load_config, parse_config
from workflow_scripts.pipeline import plan

FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PREFIX = "env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "


def test_the_default_commands_run_offline():
    jobs = plan(load_config(REPO / "params.yaml"))
    assert jobs and all(job.cmd.startswith(PREFIX + "python -m ") for job in jobs), [j.cmd for j in jobs[:3]]


def test_the_paper_commands_do_not_force_offline_mode():
    config = load_config(REPO / "configs" / "paper.yaml")
    assert not config.hub.offline
    jobs = plan(config, "configs/paper.yaml")
    assert jobs and not [job.name for job in jobs if any(flag in job.cmd for flag in FLAGS)]


def test_offline_is_off_unless_a_config_says_so():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["hub"]
    assert not parse_config(raw).hub.offline


def test_offline_mode_prefixes_every_launch_and_changes_no_fingerprint():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["resources"]["stages"] = {"pretrain": {"cpus": 2, "nproc": 2}}
    offline = plan(parse_config(raw))
    raw["hub"] = {"offline": False}
    online = plan(parse_config(raw))
    assert [job.fingerprint for job in offline] == [job.fingerprint for job in online]
    for with_flags, without in zip(offline, online):  # the multi-process launch (torchrun) included
        assert with_flags.cmd == PREFIX + without.cmd, with_flags.cmd


def test_env_sh_no_longer_forces_offline_mode_on_everyone():
    shown = subprocess.run(["env", "-i", "bash", "-c", "source scripts/env.sh && env"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    assert not [line for line in shown.splitlines() if line.split("=", 1)[0] in FLAGS]
