"""SFT end to end on the tiny random Llama: it learns (held-out response loss falls), saves the chat template
and system prompt with the weights, and the stage's CLI writes a complete artifact."""

from __future__ import annotations

import csv
import json

import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workflow_scripts.core.artifacts import ArtifactError, JobIdentity, build_artifact, read_manifest
from workflow_scripts.sft.reader import SFT_INFO
from workflow_scripts.config.sft import SFTConfig
from workflow_scripts.sft.data import Pair
from workflow_scripts.sft.stage import main
from workflow_scripts.sft.training import METRICS_FILE, fine_tune

torch.set_num_threads(1)
GASES = ["oxygen", "nitrogen", "helium", "argon"]


def pairs(n: int = 48) -> list[Pair]:
    return [
        Pair(
            f"Question {i}: which gas is number {i % 4}?",
            f"It is {GASES[i % 4]}. Answer: {'ABCD'[i % 4]}",
            "generated_mcq",
        )
        for i in range(n)
    ]


def generations_dir(path, experiment: str):
    with build_artifact(path, identity=JobIdentity(stage="generate", experiment=experiment), inputs={}) as artifact:
        docs = [
            json.dumps(
                {
                    "passages": [{"nuance": "n", "passage": "Gases."}],
                    "question": p.prompt,
                    "options": GASES,
                    "answer": "ABCD"[i % 4],
                    "explanation": f"It is {GASES[i % 4]}.",
                }
            )
            for i, p in enumerate(pairs(24))
        ]
        pl.DataFrame({"raw_json": docs}).write_parquet(artifact.path / "generations-00000.parquet")
        # the generate stage also writes these; they hold no documents
        pl.DataFrame({"raw_text": ["{broken"], "reason": ["length"]}).write_parquet(
            artifact.path / "failures.parquet"
        )
    return path




def test_fine_tuning_lowers_heldout_loss_and_saves_template_and_prompt(tiny_llama_dir, tmp_path):
    import shutil

    from transformers import GenerationConfig

    base = tmp_path / "base"  # like a converted model: padded vocabulary rows suppressed in generation
    shutil.copytree(tiny_llama_dir, base)
    GenerationConfig(eos_token_id=0, pad_token_id=0, suppress_tokens=[398, 399]).save_pretrained(base)
    config = SFTConfig(
        epochs=3,
        learning_rate=3e-3,
        batch_size=8,
        max_length=128,
        heldout_fraction=0.25,
        system_prompt="Answer in one line.",
    )
    out = tmp_path / "sft"
    out.mkdir()
    facts = fine_tune(str(base), pairs(), config, out)
    assert facts["heldout_pairs"] > 0 and facts["train_pairs"] + facts["heldout_pairs"] == 48
    assert facts["heldout_loss_after"] < facts["heldout_loss_before"] - 0.5
    info = json.loads((out / SFT_INFO).read_text())
    assert info["system_prompt"] == "Answer in one line."
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == info["chat_template"]
    assert "<|assistant|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids("<|end|>") in model.generation_config.eos_token_id
    assert model.generation_config.suppress_tokens == [398, 399]
    with open(out / METRICS_FILE) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "grad_norm", "tokens"]
    assert len(rows) == facts["steps"] and float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_one_step_at_the_papers_learning_rate_changes_a_model_stored_in_bfloat16(tiny_llama_dir, tmp_path):
    """At LR 2e-5 an AdamW step is far below bfloat16's resolution for weights of size ~0.02: on bf16 weights
    it would be rounded away. The float32 master weights keep it, and the saved model carries it."""
    stored = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16).save_pretrained(stored)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(stored)
    config = SFTConfig(epochs=1, learning_rate=2e-5, warmup_ratio=0, schedule="constant", batch_size=8,
                       max_length=128, heldout_fraction=0, dtype="bfloat16")
    out = tmp_path / "sft"
    out.mkdir()
    facts = fine_tune(str(stored), pairs(8), config, out)
    assert facts["steps"] == 1
    before = AutoModelForCausalLM.from_pretrained(stored, dtype=torch.float32).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert after["model.layers.0.mlp.up_proj.weight"].dtype == torch.float32
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        changed = (after[name] != before[name]).float().mean()
        assert changed > 0.9, f"{name}: only {changed:.0%} of the weights moved"
        assert (after[name] - before[name]).abs().max() < 1e-4  # one step of ~lr, not a different model


def test_stage_cli_writes_an_artifact_and_refuses_foreign_generations(tiny_llama_dir, tmp_path):
    from tests.helpers import write_config

    config = write_config(
        tmp_path,
        experiments={"real_only": {}, "syn": {"synthetic": {"topics": 1, "generations_per_topic": 1,
                                                             "template": "topic", "generator": "gen"}}},
        sft={
            "sources": [{"type": "generated_mcq", "experiment": "syn"}],
            "epochs": 1,
            "learning_rate": 1e-3,
            "batch_size": 4,
            "max_length": 128,
        },
    )
    generations = generations_dir(tmp_path / "gen", "syn")
    out = tmp_path / "sft_real_only"
    assert (
        main(
            [
                "--config",
                str(config),
                "--experiment",
                "real_only",
                "--model",
                str(tiny_llama_dir),
                "--generations",
                str(generations),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    manifest = read_manifest(out, stage="sft")
    assert manifest.experiment == "real_only" and list(manifest.params) == ["sft"]
    assert manifest.params["sft"]["sources"][0]["experiment"] == "syn"
    assert manifest.counts["pairs_generated_mcq"] == 24 and manifest.info["generations_experiment"] == "syn"
    assert (out / "model.safetensors").is_file() and (out / SFT_INFO).is_file()

    wrong = generations_dir(tmp_path / "gen_other", "other")
    assert (
        main(
            [
                "--config",
                str(config),
                "--experiment",
                "real_only",
                "--model",
                str(tiny_llama_dir),
                "--generations",
                str(wrong),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ArtifactError):
        read_manifest(tmp_path / "bad")
