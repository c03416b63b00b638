"""SFT data: Alpaca / FLAN / generated multiple-choice records -> pairs; loss only on response tokens."""

from __future__ import annotations

import json

import polars as pl
import pytest

from workflow_scripts.core.artifacts import JobIdentity, build_artifact

from workflow_scripts.core.artifacts import InputError
from workflow_scripts.config.sft import InstructionSource, SFTConfig
from workflow_scripts.sft.data import (
    IGNORE_INDEX,
    Pair,
    alpaca_pair,
    collate,
    encode_pair,
    flan_pair,
    load_pairs,
    mcq_from_document,
    mcq_pair,
    split_heldout,
)
from workflow_scripts.sft.training import lr_factor

FLAT = {
    "passages": [{"nuance": "basics", "passage": "Plants release oxygen."}],
    "question": "Which gas do plants release?",
    "options": ["Oxygen", "Neon", "Argon", "Xenon"],
    "answer": "A",
    "explanation": "Photosynthesis splits water and frees oxygen.",
}
NESTED = {
    "passages": ["Plants release oxygen."],
    "question": {
        "question": "Which gas do plants release?",
        "options": ["Neon", "Oxygen", "Argon", "Xenon"],
        "answer": "(B)",
        "explanation": "Splitting water frees oxygen.",
    },
}


def test_alpaca_and_flan_records_become_pairs():
    pair = alpaca_pair({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, "x")
    assert pair == Pair("Add the numbers.\n\n2 and 3", "5", "alpaca")
    assert alpaca_pair({"instruction": "Say hi.", "input": "", "output": "Hi"}, "x").prompt == "Say hi."
    assert flan_pair({"inputs": "Translate: chat", "targets": "cat"}, "x") == Pair(
        "Translate: chat", "cat", "flan"
    )
    with pytest.raises(InputError, match="row 7: field 'output' must be a non-empty string"):
        alpaca_pair({"instruction": "x", "output": ""}, "row 7")


def test_a_document_in_another_shape_is_refused_with_its_keys():
    with pytest.raises(InputError, match=r"shard row 0: no question text \(keys \['passages', 'question'\]\)"):
        mcq_from_document(NESTED, "shard row 0")


@pytest.mark.parametrize("document", [FLAT, json.dumps(FLAT)])
def test_generated_documents_become_question_answer_pairs(document):
    mcq = mcq_from_document(document, "shard row 0")
    assert mcq["options"][mcq["answer"]] == "Oxygen"
    pair = mcq_pair(mcq, include_explanation=True)
    assert pair.prompt.startswith("Which gas do plants release?\n\nA. ")
    assert "oxygen" in pair.response.split("\n\n")[0].lower()
    assert pair.response.endswith(f"Answer: {'AB'[mcq['answer']]}. Oxygen")
    assert mcq_pair(mcq, include_explanation=False).response == f"Answer: {'AB'[mcq['answer']]}. Oxygen"


def test_bad_generated_documents_name_the_row():
    with pytest.raises(InputError, match="row 3: 'options' must be a list of 4 strings"):
        mcq_from_document({**FLAT, "options": ["a", "b"]}, "row 3")
    with pytest.raises(InputError, match="row 4: answer 'E'"):
        mcq_from_document({**FLAT, "answer": "E"}, "row 4")
    with pytest.raises(InputError, match="row 5: raw JSON does not parse"):
        mcq_from_document("{not json", "row 5")


def test_sources_load_from_files_and_generations(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(
        json.dumps([{"instruction": f"Task {i}", "input": "", "output": f"Done {i}"} for i in range(5)])
    )
    flan = tmp_path / "flan.jsonl"
    flan.write_text("\n".join(json.dumps({"inputs": f"Q{i}", "targets": f"A{i}"}) for i in range(3)) + "\n")
    generations = tmp_path / "generations"
    with build_artifact(generations, identity=JobIdentity(stage="generate", experiment="e"), inputs={}) as art:
        pl.DataFrame({"raw_json": [json.dumps(FLAT), json.dumps(FLAT)]}).write_parquet(
            art.path / "generations-00000.parquet"
        )
        art.info["shards"] = ["generations-00000.parquet"]
    config = SFTConfig(
        sources=[
            InstructionSource(type="alpaca", path=str(alpaca), max_examples=4),
            InstructionSource(type="flan", path=str(flan)),
            InstructionSource(type="generated_mcq"),
        ]
    )
    pairs, counts = load_pairs(config, generations)
    assert counts == {"alpaca": 4, "flan": 3, "generated_mcq": 2}
    assert [p.source for p in pairs] == ["alpaca"] * 4 + ["flan"] * 3 + ["generated_mcq"] * 2
    with pytest.raises(InputError, match="pass --generations"):
        load_pairs(config, None)


def test_config_rules():
    with pytest.raises(ValueError, match="needs 'path'"):
        InstructionSource(type="alpaca")
    with pytest.raises(ValueError, match="at most one generated_mcq"):
        SFTConfig(sources=[InstructionSource(type="generated_mcq"), InstructionSource(type="generated_mcq")])
    config = SFTConfig(sources=[InstructionSource(type="generated_mcq", experiment="fixed")])
    assert config.generations_experiment("other") == "fixed"
    assert SFTConfig().generations_experiment("own") == "own"
    paper = SFTConfig(epochs=3, learning_rate=2e-5, weight_decay=0.0)
    assert (paper.epochs, paper.learning_rate, paper.weight_decay) == (3, 2e-5, 0.0)


def test_heldout_split_is_stable_and_by_prompt():
    pairs = [Pair(f"prompt {i}", "r", "flan") for i in range(200)]
    train, heldout = split_heldout(pairs, 0.2, seed=0)
    assert 20 < len(heldout) < 60 and len(train) + len(heldout) == 200
    train2, heldout2 = split_heldout(list(reversed(pairs)), 0.2, seed=0)
    assert {p.prompt for p in heldout} == {p.prompt for p in heldout2}
    with pytest.raises(InputError, match="left no training pairs"):
        split_heldout(pairs[:1], 0.9999999, seed=0)


def test_labels_mask_every_prompt_token(tiny_tokenizer):
    pair = Pair("Which gas do plants release?", "Oxygen, because photosynthesis splits water.", "x")
    item = encode_pair(tiny_tokenizer, pair, "Be brief.", max_length=512)
    prompt_text = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": pair.prompt}],
        tokenize=False,
        add_generation_prompt=True,
    )
    n_prompt = len(tiny_tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    labels, ids = item["labels"], item["input_ids"]
    assert len(labels) == len(ids)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert all(label != IGNORE_INDEX for label in labels[n_prompt:])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tiny_tokenizer.decode(ids[n_prompt:]) == pair.response + "<|end|>\n"
    assert tiny_tokenizer.decode(ids) == prompt_text + pair.response + "<|end|>\n"


def test_long_responses_are_cut_and_overlong_prompts_dropped(tiny_tokenizer):
    pair = Pair("Short question?", "word " * 200, "x")
    item = encode_pair(tiny_tokenizer, pair, "S", max_length=40)
    assert len(item["input_ids"]) == 40 and item["labels"][-1] != IGNORE_INDEX
    assert encode_pair(tiny_tokenizer, Pair("long " * 100, "ok", "x"), "S", max_length=40) is None


def test_collate_pads_with_ignored_labels(tiny_tokenizer):
    batch = collate(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=0
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_lr_schedule_warms_up_then_decays():
    factors = [lr_factor(s, total=10, warmup=2, schedule="linear") for s in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2] == 1.0 and factors[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert lr_factor(5, 10, 0, "constant") == 1.0
    assert lr_factor(10, 10, 0, "cosine") == pytest.approx(0.0)


def test_generated_source_must_name_a_synthetic_experiment():
    from tests.helpers import minimal_config
    from workflow_scripts.config import parse_config
    from workflow_scripts.config.sft import check_references

    config = parse_config(minimal_config())  # only real_only
    object.__setattr__(
        config, "sft", SFTConfig(sources=[InstructionSource(type="generated_mcq", experiment="real_only")])
    )
    with pytest.raises(ValueError, match="'real_only' is not an experiment with synthetic data"):
        check_references(config)
