"""Topic catalog: normalisation, exact and near-duplicate merging, nested seeded samples."""

from __future__ import annotations

import json

import polars as pl
import pytest

from workflow_scripts.config import TopicsConfig
from workflow_scripts.core.artifacts import InputError, read_manifest
from workflow_scripts.topics import (
    build_catalog,
    builtin_topics_file,
    main,
    read_topic_file,
    sample_topics,
)


def test_builtin_hierarchy_is_large_and_well_formed():
    records = read_topic_file(builtin_topics_file())
    domains = {path.split("/")[0] for path, _ in records}
    assert len(records) >= 300 and len(domains) >= 10
    assert all(len(keywords) >= 3 for _, keywords in records)
    assert all(path.count("/") >= 1 for path, _ in records)
    table, counts = build_catalog([(p, k, "builtin") for p, k in records], TopicsConfig())
    assert counts["exact_duplicates"] == 0 and table.height >= 300


def test_exact_and_near_duplicates_merge_and_are_counted():
    records = [
        ("Science/Biology/cell respiration", ["Mitochondria", "ATP", "oxygen"], "a"),
        ("science / biology /  Cell respiration", ["glycolysis", "atp"], "b"),           # exact (normalised)
        ("Science/Biology/cellular respiration", ["mitochondria", "atp", "oxygen", "glycolysis"], "c"),  # near
        ("Arts/Poetry/sonnet form", ["volta", "quatrain", "couplet"], "a"),
        ("Arts/Poetry/free verse", ["rhythm"], "a"),                                      # too few keywords
    ]
    table, counts = build_catalog(records, TopicsConfig(near_duplicate_threshold=0.6))
    assert counts == {"input_records": 5, "dropped_empty_path": 0, "dropped_few_keywords": 1,
                      "exact_duplicates": 1, "near_duplicates": 1, "topics": 2, "domains": 2}
    merged = table.filter(pl.col("domain") == "Science").row(0, named=True)
    assert merged["path"] == "Science/Biology/cell respiration"
    assert merged["keywords"] == ["mitochondria", "atp", "oxygen", "glycolysis"]
    assert merged["sources"] == ["a", "b", "c"]


def test_samples_are_nested_and_seeded():
    catalog = pl.DataFrame({"topic_id": [f"t{i}" for i in range(300)], "path": ["x"] * 300})
    small, large = sample_topics(catalog, 100, seed=7), sample_topics(catalog, 200, seed=7)
    assert set(small["topic_id"]) < set(large["topic_id"])
    assert small.equals(sample_topics(catalog, 100, seed=7))
    assert set(sample_topics(catalog, 100, seed=8)["topic_id"]) != set(small["topic_id"])
    with pytest.raises(InputError, match="asked for 301 topics but the catalog has only 300"):
        sample_topics(catalog, 301, seed=7)


def test_topic_files_in_jsonl_and_bad_input(tmp_path):
    good = tmp_path / "topics.jsonl"
    good.write_text('{"A/b/c": ["x", "y", "z"]}\n\n{"A/b/d": ["u", "v", "w"]}\n')
    assert [p for p, _ in read_topic_file(good)] == ["A/b/c", "A/b/d"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"A/b/c": ["x"]}\n{"A/b/d": "not a list"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: keywords of 'A/b/d' must be a list of strings"):
        read_topic_file(bad)


def test_catalog_and_sample_commands(tmp_path, monkeypatch):
    from tests.helpers import write_config

    topic_file = tmp_path / "mine.json"
    topic_file.write_text(json.dumps({f"D{i % 3}/sub/topic {i}": [f"k{i}a", f"k{i}b", f"k{i}c"] for i in range(40)}))
    config = write_config(tmp_path, topics={"sources": [str(topic_file)]},
                          experiments={"e1": {"synthetic": {"topics": 5, "generations_per_topic": 1,
                                                            "template": "topic", "generator": "gen"}}})
    catalog = tmp_path / "catalog"
    assert main(["catalog", "--config", str(config), "--out", str(catalog)]) == 0
    assert read_manifest(catalog, "topics").counts["topics"] == 40
    sample = tmp_path / "sample"
    assert main(["sample", "--config", str(config), "--experiment", "e1", "--catalog", str(catalog),
                 "--out", str(sample)]) == 0
    manifest = read_manifest(sample, "sample_topics")
    assert manifest.params == {"seed": 1234, "experiments.e1.synthetic.topics": 5}
    assert pl.read_parquet(sample / "topics.parquet").height == 5
    too_many = write_config(tmp_path, topics={"sources": [str(topic_file)]},
                            experiments={"e1": {"synthetic": {"topics": 50, "generations_per_topic": 1,
                                                              "template": "topic", "generator": "gen"}}})
    assert main(["sample", "--config", str(too_many), "--experiment", "e1", "--catalog", str(catalog),
                 "--out", str(tmp_path / "s2")]) == 2
    assert not (tmp_path / "s2").exists()
