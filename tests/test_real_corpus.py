"""Real corpus: configurable sources, mixing by kind weights, deterministic held-out split."""

from __future__ import annotations

import json

import polars as pl
import pytest

from workflow_scripts.config import RealCorpusConfig
from workflow_scripts.core.artifacts import read_manifest
from workflow_scripts.real_corpus import documents, main, mix_by_weight, split_document, split_heldout


def _sources(tmp_path):
    web = tmp_path / "web.jsonl"
    web.write_text("\n".join(json.dumps({"body": f"web page {i} " + "words " * 60}) for i in range(60)))
    pl.DataFrame({"text": [f"def f{i}():\n    return {i}\n" * 20 for i in range(40)]}).write_parquet(tmp_path / "code.parquet")
    (tmp_path / "math").mkdir()
    for i in range(30):
        (tmp_path / "math" / f"{i}.txt").write_text(f"Lemma {i}. " + "x + y = y + x. " * 30)
    return [
        {"name": "web", "kind": "web", "type": "jsonl", "paths": [str(web)], "text_field": "body"},
        {"name": "code", "kind": "code", "type": "parquet", "paths": [str(tmp_path / "code.parquet")]},
        {"name": "math", "kind": "math", "type": "text", "paths": [str(tmp_path / "math" / "*.txt")]},
    ]


def test_weights_set_each_kinds_share_of_characters(tmp_path):
    config = RealCorpusConfig(sources=_sources(tmp_path), weights={"web": 4, "code": 1, "math": 1},
                              max_chars=12_000, min_chars_per_document=50)
    docs, _ = documents(config)
    mixed = mix_by_weight(docs, config)
    chars = mixed.group_by("kind").agg(pl.col("text").str.len_chars().sum()).to_dict(as_series=False)
    share = dict(zip(chars["kind"], chars["text"]))
    total = sum(share.values())
    assert total == pytest.approx(12_000, rel=0.1)
    assert share["web"] / total == pytest.approx(4 / 6, abs=0.06)
    assert share["code"] / total == pytest.approx(1 / 6, abs=0.06)


def test_scarce_kind_shrinks_the_budget_to_keep_the_ratio(tmp_path):
    config = RealCorpusConfig(sources=_sources(tmp_path), weights={"web": 1, "code": 0, "math": 10},
                              max_chars=10_000_000, min_chars_per_document=50)
    mixed = mix_by_weight(documents(config)[0], config)
    math_chars = mixed.filter(pl.col("kind") == "math")["text"].str.len_chars().sum()
    web_chars = mixed.filter(pl.col("kind") == "web")["text"].str.len_chars().sum()
    assert set(mixed["kind"]) == {"web", "math"}
    assert web_chars == pytest.approx(math_chars / 10, rel=0.1)


def test_heldout_split_is_deterministic_and_disjoint():
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(2000)], "text": ["t"] * 2000})
    train, heldout = split_heldout(docs, 0.1, seed=3)
    again = split_heldout(docs, 0.1, seed=3)[1]
    assert heldout.equals(again)
    assert not set(train["doc_id"]) & set(heldout["doc_id"])
    assert 150 < heldout.height < 250


def test_split_document_respects_the_limit():
    text = "\n\n".join(["para " * 30] * 10 + ["y" * 500])
    chunks = split_document(text, 200)
    assert all(len(c) <= 200 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_missing_text_field_is_a_clear_error(tmp_path, capsys):
    from tests.helpers import write_config

    sources = _sources(tmp_path)
    sources[0]["text_field"] = "content"
    config = write_config(tmp_path, real_corpus={"sources": sources, "weights": {"web": 1, "code": 1, "math": 1}})
    assert main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "web.jsonl: no column 'content'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_stdlib_default_builds_all_kinds(tmp_path):
    from tests.helpers import write_config

    config = write_config(tmp_path, real_corpus={
        "sources": [{"name": "docs", "kind": "web", "type": "python_stdlib_docs"},
                    {"name": "code", "kind": "code", "type": "python_stdlib_code"},
                    {"name": "math", "kind": "math", "type": "python_stdlib_math"}],
        "max_chars": 300_000})
    out = tmp_path / "corpus"
    assert main(["--config", str(config), "--out", str(out)]) == 0
    manifest = read_manifest(out, "real_corpus")
    assert set(manifest.info["kinds"]["train"]) == {"web", "code", "math"}
    heldout = pl.read_parquet(out / "heldout.parquet")
    assert heldout.height > 0 and heldout.columns == ["doc_id", "source", "kind", "text"]
    first = (out / "train.parquet").read_bytes()
    assert main(["--config", str(config), "--out", str(out)]) == 0
    assert (out / "train.parquet").read_bytes() == first, "the default corpus is deterministic"
