"""Pre-training reads a mix made by the real tokenize -> mix stages, and the model converts with its tokenizer.

The mix is built by the mix stage's own code from tiny corpora (helpers of tests/test_mixes_helpers.py), so this
also checks the ``blend.json`` contract from the consumer's side: prefixes and the tokenizer path relative to
the directory the pipeline runs in, the held-out validation blend, and the planned budget.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_mixes_helpers import (  # noqa: F401 (fixture)
    documents,
    make_generations,
    make_real_corpus,
    tokenize_real,
    tokenize_synthetic,
    tokenizer_dir,
)
from workflow_scripts.config.mixes import MixConfig, MixSpec
from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.core.artifacts import JobIdentity, read_manifest
from workflow_scripts.mixes.reader import read_blend
from workflow_scripts.mixes.stage import build_mix
from workflow_scripts.pretrain.convert import convert
from workflow_scripts.pretrain.metrics import read_metrics
from workflow_scripts.pretrain.train import run_training

SEQ = 32
IDENTITY = JobIdentity(stage="mix", experiment="exp")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tokenizer_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("mixstage")
    corpus = make_real_corpus(root / "real_corpus", {"web": 40, "code": 15, "math": 15},
                              {"web": 4, "code": 2, "math": 2})
    make_generations(root / "gen", documents("synthetic", 10))
    real = tokenize_real(corpus, root / "tokens_real", tokenizer_dir)
    synthetic = tokenize_synthetic(root / "gen", root / "tokens_syn", tokenizer_dir)
    build_mix(root / "mix", real, synthetic, MixConfig(total_tokens=8 * 8 * SEQ * 6, seq_length=SEQ),
              MixSpec(synthetic_epochs=2.0), IDENTITY, "exp")
    return root


def test_pretrain_on_a_mix_stage_artifact_then_convert(workdir, tiny_tokenizer, monkeypatch):
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    monkeypatch.chdir(workdir)  # the mix's prefixes are relative to the directory it was built in
    blend = read_blend(workdir / "mix")
    out = workdir / "pt"
    run_training(workdir / "mix", out, PretrainConfig(micro_batch_size=4, global_batch_size=8, lr=3e-3),
                 experiment="exp")

    manifest = read_manifest(out, stage="pretrain")
    assert manifest.counts["steps"] == -(-blend.num_samples // 8) == 48
    assert "tokenizer" in manifest.inputs  # the tokenizer folder the mix recorded is part of the identity
    info = json.loads((out / "pretrain.json").read_text())
    assert info["seq_length"] == SEQ and info["tokenizer"]["hash"] == blend.tokenizer.hash
    rows = read_metrics(out / "metrics.tsv")
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5

    hf_dir = workdir / "hf"
    hf_dir.mkdir()
    convert(out, hf_dir)  # the tokenizer comes from the pretrain artifact (copied from the mix's path)
    model = LlamaForCausalLM.from_pretrained(hf_dir).eval()
    ids = tiny_tokenizer("web doc 1:", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5
