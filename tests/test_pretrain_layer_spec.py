"""Which Megatron layer spec pre-training builds, and that a GPU run without Transformer Engine says so."""

from __future__ import annotations

import logging

import pytest
import torch

from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.pretrain import model as mm

GPU = mm.Runtime(torch.device("cuda", 0), on_cpu=False)  # a description only: nothing runs on it here
CPU = mm.Runtime(torch.device("cpu"), on_cpu=True)


@pytest.fixture
def without_transformer_engine(monkeypatch):
    monkeypatch.setattr(mm, "_has_transformer_engine", lambda: False)


def test_a_gpu_run_without_transformer_engine_warns_and_records_the_local_spec(without_transformer_engine, caplog):
    config = PretrainConfig()
    assert config.transformer_engine
    with caplog.at_level(logging.INFO, logger=mm.__name__):
        spec = mm.layer_spec(config, GPU)
    assert spec is not None and mm.layer_spec_name(config, GPU) == "local"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "Transformer Engine is not installed" in warnings[0] and "lower throughput" in warnings[0]
    assert "unfused" in warnings[0]


@pytest.mark.parametrize(("config", "runtime"), [(PretrainConfig(), CPU),
                                                 (PretrainConfig(transformer_engine=False), GPU)],
                         ids=["cpu", "gpu-local-chosen"])
def test_the_local_spec_by_choice_or_on_cpu_does_not_warn(without_transformer_engine, caplog, config, runtime):
    with caplog.at_level(logging.INFO, logger=mm.__name__):
        mm.layer_spec(config, runtime)
    assert mm.layer_spec_name(config, runtime) == "local"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_transformer_engine_on_a_gpu_is_recorded_as_such(monkeypatch):
    monkeypatch.setattr(mm, "_has_transformer_engine", lambda: True)
    assert mm.layer_spec_name(PretrainConfig(), GPU) == "transformer_engine"
    assert mm.layer_spec_name(PretrainConfig(), CPU) == "local"
    assert not mm.transformer_engine_missing(PretrainConfig(), GPU)
