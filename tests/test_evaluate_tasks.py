"""Local lm-eval tasks built from the held-out corpus: the gold choice is the document's own continuation."""

from __future__ import annotations

import json
import string

import polars as pl
import pytest
import yaml

from workflow_scripts.config.evaluate import ContinuationTask, EvaluationConfig, PerplexityTask
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.evaluate.tasks import (
    build_continuation,
    build_perplexity,
    build_tasks,
    continuation_split,
    cut_at_space,
    materialise,
)

WORDS = (
    "river",
    "stone",
    "prime",
    "graph",
    "light",
    "seed",
    "cloud",
    "metal",
    "sugar",
    "engine",
    "forest",
    "tide",
)


def heldout(n: int = 12, kinds: tuple[str, ...] = ("web", "code")) -> pl.DataFrame:
    texts = [" ".join(f"{WORDS[i % len(WORDS)]}{j}" for j in range(60)) for i in range(n)]
    return pl.DataFrame(
        {
            "doc_id": [f"doc{i}" for i in range(n)],
            "source": "s",
            "kind": [kinds[i % len(kinds)] for i in range(n)],
            "text": texts,
        }
    )


def test_cut_at_space_keeps_the_space_with_what_follows():
    text = "alpha beta gamma delta"
    cut = cut_at_space(text, 12)
    assert text[:cut] == "alpha beta" and text[cut:].startswith(" gamma")
    assert cut_at_space("short", 100) == 5
    assert cut_at_space("x" * 50, 20) == 20  # no space in reach: hard cut
    context, continuation = continuation_split(text, 8, 8)
    assert context == "alpha" and continuation == " beta"


def test_continuation_questions_have_the_true_continuation_at_the_label():
    frame = heldout()
    spec = ContinuationTask(
        type="continuation", questions=10, context_chars=80, continuation_chars=40, choices=4
    )
    rows = build_continuation(frame, spec, seed=0, name="cont")
    assert len(rows) == 10
    texts = dict(zip(frame["doc_id"], frame["text"]))
    for row in rows:
        full = texts[row["doc_id"]]
        assert full.startswith(row["context"])
        assert full[len(row["context"]) :].startswith(row["choices"][row["label"]])
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        assert all(choice.startswith(" ") for choice in row["choices"])
        # distractors come from other documents of the same kind when there are enough of them
        prefix = row["choices"][row["label"]].split()[0].rstrip("0123456789")
        assert all(
            c.split()[0].rstrip("0123456789") != prefix
            for i, c in enumerate(row["choices"])
            if i != row["label"]
        )
    assert len({row["label"] for row in rows}) > 1, "the gold position must vary"
    assert rows == build_continuation(frame, spec, seed=0, name="cont")  # deterministic
    assert rows != build_continuation(frame, spec, seed=1, name="cont")


def test_continuation_refuses_a_corpus_too_small_for_the_choices():
    spec = ContinuationTask(
        type="continuation", questions=5, context_chars=80, continuation_chars=40, choices=4
    )
    with pytest.raises(InputError, match="fewer than the 4 choices"):
        build_continuation(heldout(n=3), spec, seed=0, name="cont")


def test_perplexity_rows_are_cut_and_filtered_by_kind():
    spec = PerplexityTask(type="perplexity", documents=3, kinds=["code"], max_chars=50)
    rows = build_perplexity(heldout(), spec, seed=0, name="ppl")
    assert len(rows) == 3 and all(r["kind"] == "code" and len(r["text"]) <= 50 for r in rows)


def test_build_tasks_writes_yaml_and_jsonl_that_materialise_with_absolute_paths(tmp_path):
    config = EvaluationConfig(
        tasks=["cont", "ppl"],
        local_tasks={
            "cont": {"type": "continuation", "questions": 4, "context_chars": 80, "continuation_chars": 40},
            "ppl": {"type": "perplexity", "documents": 2},
        },
        scoring={"cont": {"metric": "acc_norm"}, "ppl": {"metric": "bits_per_byte", "in_mean": False}},
    )
    out = tmp_path / "tasks"
    out.mkdir()
    counts = build_tasks(heldout(), config, out)
    assert counts == {"cont": 4, "ppl": 2}
    raw = (out / "cont.yaml").read_text()
    assert str(tmp_path) not in raw, "the artifact must not depend on where it lies"
    names = materialise(out, tmp_path / "live", tmp_path / "cache")
    assert names == ["cont", "ppl"]
    task = yaml.safe_load((tmp_path / "live" / "cont.yaml").read_text())
    assert task["task"] == "cont" and task["output_type"] == "multiple_choice"
    assert task["dataset_kwargs"]["data_files"]["test"] == str((out / "cont.jsonl").resolve())
    assert task["dataset_kwargs"]["cache_dir"] == str((tmp_path / "cache").resolve())
    assert "$" not in (tmp_path / "live" / "ppl.yaml").read_text()
    first = json.loads((out / "cont.jsonl").read_text().splitlines()[0])
    assert set(first) == {"doc_id", "kind", "context", "choices", "label"}


def test_templates_have_only_known_placeholders():
    from workflow_scripts.evaluate.tasks import TEMPLATES

    for file in TEMPLATES.glob("*.yaml"):
        rendered = string.Template(file.read_text()).substitute(task="x")
        left = string.Template(rendered).safe_substitute(data_dir="/d", cache_dir="/c")
        assert "${" not in left, file.name
        yaml.safe_load(left)


def test_evaluation_config_requires_a_metric_for_every_task():
    with pytest.raises(ValueError, match="scoring has no entry for tasks"):
        EvaluationConfig(tasks=["a", "b"], local_tasks={}, scoring={"a": {"metric": "acc"}})
    with pytest.raises(ValueError, match="Extra inputs"):
        EvaluationConfig.model_validate({"local_tasks": {"p": {"type": "perplexity", "choices": 3}}})


def test_several_windows_per_document_never_take_distractors_from_the_same_document():
    frame = heldout(n=5)
    spec = ContinuationTask(
        type="continuation",
        questions=100,
        context_chars=80,
        continuation_chars=40,
        choices=4,
        windows_per_document=3,
    )
    rows = build_continuation(frame, spec, seed=0, name="cont")
    assert len(rows) == 15
    texts = dict(zip(frame["doc_id"], frame["text"]))
    for row in rows:
        own = texts[row["doc_id"]]
        assert row["context"] + row["choices"][row["label"]] in own
        assert all(choice not in own for i, choice in enumerate(row["choices"]) if i != row["label"])
