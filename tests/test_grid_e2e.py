"""End to end on the tiny configuration: the paper grid's building blocks run through the real stages (an
external corpus, a mixed set, a replicate, a set shared by another model run, a scorer variant). Minutes: slow."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.project import copy_project, run
from workflow_scripts.config.root import read_yaml
from workflow_scripts.core.artifacts import input_hash, read_manifest

pytestmark = pytest.mark.slow

GRID = {
    "cosmo": {"external": {"name": "cosmo-tiny", "type": "jsonl", "paths": ["inputs/cosmo.jsonl"]},
              "mix": {"synthetic_effective_tokens": 4096}},
    "mixed_set": {"mixed": {"sources": {"topic_t8_g2": 1, "persona_t8_g4": 1}, "unique_tokens": 2000},
                  "mix": {"synthetic_effective_tokens": 4096}},
    "twin": {"synthetic_from": "topic_t8_g2", "pretrain": {"lr": 1.0e-3}, "mix": {"synthetic_effective_tokens": 4096}},
    "variant": {"synthetic_from": "topic_t8_g2", "train": False,
                "diversity": {"metrics": ["context_length", "ngram_diversity"], "lexical": {"ngram_max_n": 2}}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("grid"))
    raw = read_yaml(project / "params.yaml")
    raw["experiments"]["topic_t8_g2"]["seeds"] = [1234, 7]
    raw["experiments"].update(GRID)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (project / "inputs").mkdir()
    lines = [json.dumps({"text": f"Document {i} about the tides, the moon and the sea floor. " * 3}) for i in range(60)]
    (project / "inputs" / "cosmo.jsonl").write_text("\n".join(lines) + "\n")
    targets = ["data/pretrain/topic_t8_g2-seed7", "data/pretrain/twin", "data/mixes/cosmo", "data/mixes/mixed_set",
               "data/diversity/variant", "data/diversity/cosmo"]
    for target in targets:  # one target a call: several targets at once trip the stamps of rules/common.smk
        run(project, "snakemake", "--cores", "2", target)
    return project


def test_external_and_mixed_sets_enter_their_mixes(project):
    for name, stage in (("cosmo", "external_synthetic"), ("mixed_set", "mixed_synthetic")):
        assert read_manifest(project / "data" / "synthetic_sets" / stage.split("_")[0] / name).stage == stage
        sources = (project / "data" / "mixes" / name / "sources.md").read_text()
        assert "synthetic" in sources
    assert read_manifest(project / "data" / "diversity" / "cosmo").counts["documents"] == 60


def test_replicate_and_twin_train_on_the_shared_set(project):
    seed7 = read_manifest(project / "data" / "pretrain" / "topic_t8_g2-seed7")
    assert seed7.params["experiments.topic_t8_g2-seed7.seed"] == 7
    twin = read_manifest(project / "data" / "pretrain" / "twin")
    assert twin.params["experiments.twin.pretrain"] == {"lr": 1.0e-3}
    shared = input_hash(project / "data" / "tokens" / "synthetic" / "topic_t8_g2")
    for name in ("topic_t8_g2-seed7", "twin"):
        assert shared in read_manifest(project / "data" / "mixes" / name).inputs.values()
    assert not (project / "data" / "generations" / "twin").exists()


def test_scorer_variant_scores_the_shared_set_with_its_own_settings(project):
    variant = read_manifest(project / "data" / "diversity" / "variant")
    assert variant.params["experiments.variant.diversity"]["lexical"] == {"ngram_max_n": 2}
    assert not (project / "data" / "pretrain" / "variant").exists()
