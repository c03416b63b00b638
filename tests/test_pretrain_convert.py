"""Conversion of a Megatron checkpoint to Hugging Face Llama: same logits, working generation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workflow_scripts.config.pretrain import PretrainConfig
from workflow_scripts.core.artifacts import read_manifest
from workflow_scripts.config import model_configs
from workflow_scripts.pretrain.convert import convert, load_megatron_model, main
from workflow_scripts.pretrain.synthetic import make_synthetic_mix
from workflow_scripts.pretrain.train import run_training

TEXT = "The river carries sediment from the mountains to the delta. def add(a, b): return a + b"


@pytest.fixture(autouse=True)
def _isolated_process_group():
    torch.set_num_threads(1)
    yield
    from megatron.core import parallel_state

    if torch.distributed.is_initialized():
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()


def _pretrain(tmp: Path, tokenizer, model: str = "tiny", steps: int = 4) -> Path:
    tokenizer_dir = tmp / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    mix = make_synthetic_mix(tmp / "mix", vocab_size=len(tokenizer), tokens=10_000, seq_length=64,
                             budget_tokens=steps * 4 * 64, eod=tokenizer.eos_token_id, tokenizer_dir=tokenizer_dir)
    config = PretrainConfig(model=model, micro_batch_size=2, global_batch_size=4, lr=3e-3)
    return run_training(mix, tmp / "pt", config)


def _megatron_logits(artifact: Path, ids: torch.Tensor) -> torch.Tensor:
    model = load_megatron_model(artifact)
    length = ids.shape[1]
    positions = torch.arange(length)[None].expand(ids.shape[0], -1)
    mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)[None, None]
    with torch.no_grad():
        return model(ids, positions, mask)


def _assert_parity(artifact: Path, hf_dir: Path, tokenizer) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert AutoTokenizer.from_pretrained(hf_dir)(TEXT).input_ids == tokenizer(TEXT).input_ids
    ids = torch.tensor([tokenizer(TEXT).input_ids[:48]] * 2)
    ids[1] = ids[1].flip(0)
    expected = _megatron_logits(artifact, ids)
    with torch.no_grad():
        got = hf(ids).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4
    assert expected.std() > 0.1  # a real comparison, not two near-zero tensors


def test_converted_model_matches_megatron_logits_and_generates(tmp_path, tiny_tokenizer):
    from transformers import AutoTokenizer, LlamaForCausalLM

    artifact = _pretrain(tmp_path, tiny_tokenizer)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    convert(artifact, hf_dir)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= \
        {p.name for p in hf_dir.iterdir()}
    _assert_parity(artifact, hf_dir, tiny_tokenizer)

    model = LlamaForCausalLM.from_pretrained(hf_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    prompt = tokenizer("The river", return_tensors="pt").input_ids
    out = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == prompt.shape[1] + 6
    assert int(out[0, prompt.shape[1]:].max()) < len(tokenizer)  # padding rows of the vocabulary are suppressed
    assert isinstance(tokenizer.decode(out[0]), str)
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 512


def test_grouped_query_attention_layout(tmp_path, tiny_tokenizer, monkeypatch):
    gqa = replace(model_configs.MODELS["tiny"], name="tiny_gqa", num_attention_heads=4, num_query_groups=2,
                  hidden_size=64)
    monkeypatch.setitem(model_configs.MODELS, "tiny_gqa", gqa)
    artifact = _pretrain(tmp_path, tiny_tokenizer, model="tiny_gqa", steps=2)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    convert(artifact, hf_dir)
    assert json.loads((hf_dir / "config.json").read_text())["num_key_value_heads"] == 2
    _assert_parity(artifact, hf_dir, tiny_tokenizer)


def test_convert_stage_cli(tmp_path, tiny_tokenizer):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import write_config

    artifact = _pretrain(tmp_path, tiny_tokenizer, steps=2)
    config = write_config(tmp_path, experiments={"exp": {}})
    out = tmp_path / "hf"
    assert main(["--config", str(config), "--experiment", "exp", "--checkpoint", str(artifact),
                 "--out", str(out)]) == 0
    manifest = read_manifest(out, stage="convert")
    assert manifest.params == {"pretrain.export_dtype": "float32"}
    assert manifest.counts["parameters"] == model_configs.param_count(model_configs.get_arch("tiny"), 512)
    assert main(["--config", str(config), "--experiment", "exp", "--checkpoint", str(tmp_path / "mix"),
                 "--out", str(tmp_path / "bad")]) == 2  # not a pretrain artifact


def test_convert_refuses_a_checkpoint_with_flipped_bits_in_one_line(tmp_path, tiny_tokenizer, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import write_config

    artifact = _pretrain(tmp_path, tiny_tokenizer, steps=2)
    config = write_config(tmp_path, experiments={"exp": {}})
    shard = max((p for p in (artifact / "checkpoint").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0b0001_0100  # two flipped bits: same size, other weights
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["--config", str(config), "--experiment", "exp", "--checkpoint", str(artifact),
                 "--out", str(tmp_path / "hf")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(shard) in errors[0] and "does not match the hash in its manifest" in errors[0]
    assert not (tmp_path / "hf").exists()
