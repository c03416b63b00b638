"""configs/paper.yaml against the paper's design (workflow_scripts/resources/paper_design.yaml): every cell of
Tables 6-8, the ratio study and the Cluster-agent ablation maps to exactly one configured experiment with the
paper's factors, and no experiment claims a cell whose factors it does not have."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest

from workflow_scripts.config import load_config, paper, parse_config
from workflow_scripts.config import paper_design as design
from workflow_scripts.config.root import read_yaml

REPO = Path(__file__).resolve().parent.parent
PAPER_CONFIG = REPO / "configs" / "paper.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(PAPER_CONFIG)


def test_design_numbers_are_the_ones_the_report_compares_with():
    for cell in design.cells():
        if cell.reported is None:
            assert cell.table == "ratio"
            continue
        for stage in ("pt", "sft"):
            assert paper.paper_value(cell.table, cell.size, stage, cell.name) == cell.reported[stage], cell.key
    assert list(design.design()["tasks"]) == list(paper.PAPER_TASKS)


def test_the_design_covers_every_cell_the_paper_ran():
    counts = Counter((cell.table, cell.size) for cell in design.cells())
    assert counts == {("table6", "350M"): 6, ("table6", "1.4B"): 6, ("table7", "350M"): 7, ("table7", "1.4B"): 7,
                      ("table8", "350M"): 5, ("ratio", "350M"): 6, ("ratio", "1.4B"): 6}


def test_every_cell_maps_to_exactly_one_experiment_with_its_factors(config):
    claimed = Counter(key for key, _ in design.claims(config))
    unclaimed = [cell.key for cell in design.cells() if claimed[cell.key] == 0]
    twice = [key for key, count in claimed.items() if count > 1]
    assert not unclaimed, f"cells no experiment produces: {unclaimed}"
    assert not twice, f"cells claimed by several experiments: {twice}"
    problems = {key: differ for key, differ in design.like_for_like(config).items() if differ}
    assert not problems, problems


def test_every_ablation_cell_is_one_scorer_variant_of_one_dataset(config):
    owners = [experiment for (table, size, cell), experiment in design.claims(config)
              if (table, size, cell) == ("table7", "350M", "Topic Styles Persona")]
    matches = design.ablation_matches(config, owners[0])
    assert all(len(found) == 1 for found in matches.values()), matches
    variants = {name for name, spec in config.experiments.items() if spec.diversity is not None}
    assert variants == {found[0] for found in matches.values()} - {owners[0]}
    assert not any(config.experiments[name].trained for name in variants)


def _paper_raw() -> dict:
    return read_yaml(PAPER_CONFIG)


def test_a_claim_with_other_factors_is_not_like_for_like():
    raw = copy.deepcopy(_paper_raw())
    raw["experiments"]["t100k_g10"]["synthetic"]["generations_per_topic"] = 11
    raw["experiments"]["template_topic_1p4b"].pop("pretrain")
    changed = parse_config(raw)
    differing = {key: d for key, d in design.like_for_like(changed).items() if d}
    assert set(differing) == {("table6", "350M", "T=100K,G=10", "t100k_g10"),
                              ("table6", "1.4B", "T=100K,G=10", "t100k_g10_1p4b"),
                              ("table7", "1.4B", "Topic", "template_topic_1p4b")}
    assert differing[("table6", "350M", "T=100K,G=10", "t100k_g10")] == [
        "generations_per_topic: paper 10, configured 11"]
    assert "model_size" in differing[("table7", "1.4B", "Topic", "template_topic_1p4b")][0]


def test_unique_tokens_of_the_template_and_generator_sets(config):
    tokens = {name: design.experiment_factors(config, name)["unique_tokens"]
              for name in ("template_topic_styles_persona", "generator_gpt4o", "generator_mixed")}
    assert 12.9e9 <= tokens["template_topic_styles_persona"] <= 13.0e9   # G = 36
    assert 4.0e9 <= tokens["generator_gpt4o"] <= 5.0e9                   # G = 13: a subset of the 12.9B set
    assert tokens["generator_mixed"] == 4_500_000_000


def test_generator_ids_match_dated_snapshots_only_of_their_model():
    assert design.model_matches("gpt-4o-2024-08-06", "gpt-4o")
    assert design.model_matches("gpt-4-turbo-2024-04-09", "gpt-4")
    assert not design.model_matches("gpt-4o-2024-08-06", "gpt-4")
    assert design.model_matches("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct")


def test_api_models_of_the_paper_config_are_pinned(config):
    for name, spec in config.models.items():
        if spec.backend == "openai":
            assert any(ch.isdigit() for ch in spec.path.rsplit("-", 1)[-1]), f"{name}: {spec.path} is not dated"
            assert spec.context_window is not None
