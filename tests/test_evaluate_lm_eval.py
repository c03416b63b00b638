"""lm-eval end to end, offline, on the tiny models: the local tasks rank a model that learned the corpus
above a random one, and an SFT model is evaluated through its chat template with its system prompt."""

from __future__ import annotations

import json
import random
import shutil

import polars as pl
import pytest
import torch

from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest
from workflow_scripts.evaluate.__main__ import main

torch.set_num_threads(1)

# Each document draws its words from its own topic: a model that learned the corpus recognises the true
# continuation (same topic as the context); a random model cannot (chance = 1/4).
TOPICS = [
    ["river", "sediment", "mountains", "delta"],
    ["prime", "number", "divisors", "itself"],
    ["plants", "oxygen", "water", "sugar"],
    ["railway", "town", "decade", "population"],
    ["derivative", "squared", "constant", "integrating"],
    ["print", "range", "even", "return"],
]
EVALUATION = {
    "tasks": ["cont", "ppl"],
    "local_tasks": {
        "cont": {
            "type": "continuation",
            "questions": 12,
            "context_chars": 120,
            "continuation_chars": 60,
            "choices": 4,
            "same_kind_distractors": False,
        },
        "ppl": {"type": "perplexity", "documents": 6, "max_chars": 200},
    },
    "scoring": {
        "cont": {"metric": "acc"},
        "ppl": {"metric": "word_perplexity", "in_mean": False, "higher_is_better": False, "percent": False},
    },
    "batch_size": 8,
    "bootstrap_iters": 0,
}


def corpus_texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(TOPICS[i % 6]) for _ in range(40)) for i in range(12)]




@pytest.fixture()
def setup(tmp_path):
    from tests.helpers import write_config

    config = write_config(tmp_path, experiments={"real_only": {}}, evaluation=EVALUATION)
    texts = corpus_texts()
    with build_artifact(tmp_path / "real_corpus", identity=JobIdentity(stage="real_corpus"), inputs={}) as art:
        pl.DataFrame(
            {"doc_id": [f"d{i}" for i in range(12)], "source": "s", "kind": "web", "text": texts}
        ).write_parquet(art.path / "heldout.parquet")
    tasks = tmp_path / "eval_tasks"
    assert (
        main(
            ["tasks", "--config", str(config), "--corpus", str(tmp_path / "real_corpus"), "--out", str(tasks)]
        )
        == 0
    )
    return config, tasks, texts


def trained_copy(model_dir, texts, out):
    """The tiny model after a few steps on the corpus (it memorises the topics)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = [torch.tensor(tokenizer(t)["input_ids"]) for t in texts]
    batch = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=tokenizer.pad_token_id)
    labels = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=-100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(input_ids=batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def evaluate(config, tasks, model, out, *extra) -> dict:
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--experiment",
                "real_only",
                "--model",
                str(model),
                "--tasks",
                str(tasks),
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "scores.json").read_text())


def test_a_model_that_learned_the_corpus_beats_a_random_one(setup, tiny_llama_dir, tmp_path):
    config, tasks, texts = setup
    manifest = read_manifest(tasks, stage="eval_tasks")
    assert manifest.counts == {"cont_items": 12, "ppl_items": 6}
    random_scores = evaluate(config, tasks, tiny_llama_dir, tmp_path / "eval_random")
    trained = trained_copy(tiny_llama_dir, texts, tmp_path / "trained")
    trained_scores = evaluate(config, tasks, trained, tmp_path / "eval_trained")
    acc = lambda s: s["tasks"]["cont"]["acc"]["value"]  # noqa: E731
    ppl = lambda s: s["tasks"]["ppl"]["word_perplexity"]["value"]  # noqa: E731
    assert acc(random_scores) <= 0.5
    assert acc(trained_scores) >= acc(random_scores) + 0.4
    assert ppl(trained_scores) < ppl(random_scores) / 10
    results = json.loads((tmp_path / "eval_trained" / "results.json").read_text())
    assert set(results["results"]) == {"cont", "ppl"}  # lm-eval's raw results are kept
    evaluated = read_manifest(tmp_path / "eval_trained", stage="evaluate_pt")
    assert evaluated.info["model_stage"] == "pt" and evaluated.info["chat_template"] is False
    assert set(evaluated.params) >= {"evaluation.tasks", "evaluation.limit", "evaluation.system_prompt"}


def test_sft_model_is_evaluated_with_its_chat_template_and_system_prompt(setup, tiny_llama_dir, tmp_path):
    config, tasks, _ = setup
    raw = config.read_text().replace("bootstrap_iters: 0", "bootstrap_iters: 0\n  log_samples: true")
    config.write_text(raw)
    sft = tmp_path / "sft_model"
    shutil.copytree(tiny_llama_dir, sft)
    (sft / "sft_info.json").write_text(json.dumps({"system_prompt": "Pick the coherent ending."}))
    scores = evaluate(config, tasks, sft, tmp_path / "eval_sft")
    assert scores["model_stage"] == "sft" and scores["chat_template"] is True
    assert scores["system_prompt"] == "Pick the coherent ending."
    first = json.loads((tmp_path / "eval_sft" / "samples" / "cont.jsonl").read_text().splitlines()[0])
    context = first["arguments"][0][0]  # (context, continuation) of the first choice
    assert context.startswith("<|system|>\nPick the coherent ending.<|end|>\n<|user|>\n")
    assert context.endswith("<|assistant|>\n")
