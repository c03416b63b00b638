"""Mix arithmetic: the paper's families give the epochs the paper implies; impossible requests are errors."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from workflow_scripts.config.mixes import MixConfig, MixSpec, parse_token_count
from workflow_scripts.mixes.plan import MixError, SourceStats, plan_mix

B = 10**9
TOKENS_PER_GENERATION = 580  # PAPER.md section 2: ~580 tokens per generation


def real_stats(total: float, weights=(4, 1, 1)) -> dict[str, SourceStats]:
    """Real sources whose unique tokens split ``total`` by ``weights`` (one epoch each at the paper's 34B)."""
    kinds = ("web", "code", "math")
    return {
        k: SourceStats(k, "real", round(total * w / sum(weights)), prefix=f"tok/{k}")
        for k, w in zip(kinds, weights)
    }


def synthetic(unique: float) -> SourceStats:
    return SourceStats("synthetic", "synthetic", round(unique), prefix="tok/synthetic")


PAPER = MixConfig(real_tokens="34B", seq_length=2048)


@pytest.mark.parametrize(
    "topics,generations",
    [(100_000, 10), (100_000, 20), (100_000, 30), (300_000, 10), (300_000, 20), (300_000, 30)],
)
def test_t_x_g_family_upweights_every_set_to_4_5b_effective(topics, generations):
    unique = topics * generations * TOKENS_PER_GENERATION
    plan = plan_mix(real_stats(34 * B), synthetic(unique), PAPER, MixSpec(synthetic_effective_tokens="4.5B"))
    syn = plan.source("synthetic")
    assert syn.effective_tokens == pytest.approx(4.5 * B)
    assert syn.epochs == pytest.approx(4.5 * B / unique)
    assert plan.total_tokens == 38.5 * B
    for kind, share in (("web", 4 / 6), ("code", 1 / 6), ("math", 1 / 6)):
        assert plan.source(kind).effective_tokens == pytest.approx(34 * B * share)
        assert plan.source(kind).epochs == pytest.approx(1.0)
    assert syn.share == pytest.approx(4.5 / 38.5)


def test_t_x_g_smallest_and_largest_sets_match_the_paper():
    small = plan_mix(
        real_stats(34 * B), synthetic(0.58 * B), PAPER, MixSpec(synthetic_effective_tokens="4.5B")
    )
    assert small.source("synthetic").epochs == pytest.approx(7.76, abs=0.005)
    large = plan_mix(
        real_stats(34 * B), synthetic(4.43 * B), PAPER, MixSpec(synthetic_effective_tokens="4.5B")
    )
    assert large.source("synthetic").epochs == pytest.approx(1.016, abs=0.001)


@pytest.mark.parametrize(
    "effective,epochs", [(1, 0.0775), (5, 0.3876), (10, 0.7752), (20, 1.5504), (34, 2.6357), (50, 3.8760)]
)
def test_ratio_study_reweights_12_9b_next_to_34b_real(effective, epochs):
    plan = plan_mix(
        real_stats(34 * B), synthetic(12.9 * B), PAPER, MixSpec(synthetic_effective_tokens=f"{effective}B")
    )
    syn = plan.source("synthetic")
    assert syn.epochs == pytest.approx(epochs, abs=1e-4)
    assert syn.share == pytest.approx(effective / (34 + effective))
    assert sum(s.share for s in plan.blend) == pytest.approx(1.0)
    assert plan.source("web").epochs == pytest.approx(1.0)


@pytest.mark.parametrize("unique,epochs", [(10.4 * B, 1.923), (12.9 * B, 1.550)])
def test_template_family_at_20b_effective(unique, epochs):
    plan = plan_mix(real_stats(34 * B), synthetic(unique), PAPER, MixSpec(synthetic_effective_tokens="20B"))
    assert plan.source("synthetic").epochs == pytest.approx(epochs, abs=1e-3)


def test_generator_family_at_5b_effective():
    plan = plan_mix(real_stats(34 * B), synthetic(2.5 * B), PAPER, MixSpec(synthetic_effective_tokens="5B"))
    assert plan.source("synthetic").epochs == pytest.approx(2.0)


def test_a_fixed_training_budget_scales_the_mix_and_reports_the_real_epochs():
    # 34B real + 4.5B synthetic proportions, trained for 50B tokens: everything is seen 50/38.5 times more.
    config = MixConfig(total_tokens="50B", real_tokens="34B", seq_length=2048)
    plan = plan_mix(
        real_stats(34 * B), synthetic(0.58 * B), config, MixSpec(synthetic_effective_tokens="4.5B")
    )
    scale = 50 / 38.5
    assert plan.total_tokens == 50 * B
    assert plan.source("web").epochs == pytest.approx(scale)
    assert plan.source("synthetic").epochs == pytest.approx(4.5 / 0.58 * scale)
    assert "scaled" in plan.notes[0]


def test_budget_with_real_filling_the_rest_and_steps_budget():
    config = MixConfig(total_steps=1000, global_batch_size=8, seq_length=128)  # 1,024,000 tokens
    plan = plan_mix(
        real_stats(500_000), synthetic(20_000), config, MixSpec(synthetic_effective_tokens=100_000)
    )
    assert plan.total_tokens == 1_024_000 and plan.num_samples == 8000
    assert plan.source("web").effective_tokens == pytest.approx((1_024_000 - 100_000) * 4 / 6)
    assert plan.source("synthetic").epochs == pytest.approx(5.0)


def test_real_to_synthetic_ratios():
    budget = MixConfig(total_tokens=600_000, seq_length=100)
    plan = plan_mix(real_stats(300_000), synthetic(50_000), budget, MixSpec(real_to_synthetic=5))
    assert plan.source("synthetic").effective_tokens == pytest.approx(100_000)
    # the paper's "real web : synthetic = 4 : 1": web gets 4/6 of real, so all real : synthetic = 6 : 1
    web_ratio = MixSpec(real_to_synthetic=4, ratio_reference="web")
    plan = plan_mix(
        real_stats(300_000), synthetic(50_000), MixConfig(real_tokens=600_000, seq_length=100), web_ratio
    )
    assert plan.source("web").effective_tokens == pytest.approx(4 * plan.source("synthetic").effective_tokens)
    assert plan.total_tokens == 700_000


def test_defaults_real_only_and_one_pass_of_synthetic():
    config = MixConfig(total_tokens=100_000, seq_length=64)
    real_only = plan_mix(real_stats(60_000), None, config)
    assert [s.name for s in real_only.blend] == ["web", "code", "math"]
    assert real_only.source("web").epochs == pytest.approx(100_000 * 4 / 6 / 40_000)
    one_pass = plan_mix(real_stats(60_000), synthetic(10_000), config)
    assert one_pass.source("synthetic").epochs == pytest.approx(1.0)


def test_zero_weight_kind_is_listed_but_not_blended():
    config = MixConfig(total_tokens=100_000, seq_length=64, real_weights={"web": 1, "code": 0, "math": 1})
    plan = plan_mix(real_stats(60_000), None, config)
    assert [s.name for s in plan.blend] == ["web", "math"]
    assert not plan.source("code").included and plan.source("code").effective_tokens == 0


@pytest.mark.parametrize(
    "config,spec,real,syn,message",
    [
        (
            dict(total_tokens=1000, seq_length=10, real_weights={"web": 0, "code": 0, "math": 0}),
            {},
            3000,
            None,
            "every weight is zero",
        ),
        (
            dict(total_tokens=10**6, seq_length=10, allow_repetition=False),
            {"synthetic_effective_tokens": 50_000},
            3_000_000,
            10_000,
            r"allow_repetition is false but source 'synthetic' would need 5.000 epochs",
        ),
        (
            dict(total_tokens=10**6, seq_length=10, allow_repetition=False),
            {},
            60_000,
            None,
            r"source 'web' would need",
        ),
        (
            dict(total_tokens=10_000, seq_length=10, allow_partial_epochs=False),
            {"synthetic_epochs": 1},
            6_000,
            5_000,
            r"budget is below one pass of source 'web'",
        ),
        (
            dict(total_tokens=10_000, seq_length=10),
            {"synthetic_epochs": 1},
            60_000,
            20_000,
            r"budget of 10K tokens is below the requested synthetic share",
        ),
        (
            dict(total_tokens=10_000, seq_length=10),
            {"synthetic_effective_tokens": 10_000},
            60_000,
            20_000,
            r"nothing is left for the real data",
        ),
        (
            dict(total_tokens=10_000, real_tokens=5_000, seq_length=10),
            {"real_to_synthetic": 2},
            60_000,
            20_000,
            "over-determined",
        ),
        (
            dict(total_tokens=10_000, seq_length=10),
            {"synthetic_effective_tokens": 100},
            60_000,
            None,
            "asks for synthetic data but it has no synthetic tokens",
        ),
        (
            dict(total_tokens=10_000, seq_length=1000),
            {"synthetic_effective_tokens": 500},
            60_000,
            2000,
            r"source 'synthetic' gets 500 tokens, less than one sequence of 1000",
        ),
        (
            dict(total_tokens=10_000, seq_length=10, real_weights={"web": 0, "code": 0, "math": 0}),
            {"synthetic_effective_tokens": 500},
            60_000,
            2000,
            "must fill the budget",
        ),
        (
            dict(total_tokens=10_000, seq_length=10),
            {"real_to_synthetic": 2, "ratio_reference": "math"},
            60_000,
            2000,
            None,
        ),
    ],
)
def test_impossible_requests_are_errors(config, spec, real, syn, message):
    def run():
        stats = synthetic(syn) if syn else None
        where = "experiments.x.mix"
        return plan_mix(real_stats(real), stats, MixConfig(**config), MixSpec(**spec), where=where)

    if message is None:
        run()
        return
    with pytest.raises(MixError, match=message) as error:
        run()
    assert "experiments.x.mix" in str(error.value)


def test_a_weighted_kind_without_data_is_an_error():
    real = real_stats(60_000)
    del real["math"]
    with pytest.raises(MixError, match="gives 'math' a share but the real tokens have no 'math' data"):
        plan_mix(real, None, MixConfig(total_tokens=10_000, seq_length=10))


@pytest.mark.parametrize(
    "raw,value",
    [
        ("4.5B", 4_500_000_000),
        ("34e9", 34 * B),
        ("500M", 500_000_000),
        ("128K", 128_000),
        (1000, 1000),
        (2.0e9, 2 * B),
        ("1_000", 1000),
    ],
)
def test_token_counts_accept_suffixes(raw, value):
    assert parse_token_count(raw) == value
    assert MixSpec(synthetic_effective_tokens=raw).synthetic_effective_tokens == value


@pytest.mark.parametrize(
    "section,raw,message",
    [
        (MixConfig, {"seq_length": 10}, "give a budget"),
        (MixConfig, {"total_tokens": 10, "total_steps": 2, "global_batch_size": 1}, "not both"),
        (MixConfig, {"total_steps": 2}, "go together"),
        (MixConfig, {"total_tokens": "lots"}, "not a token count"),
        (MixConfig, {"total_tokens": -5}, "greater than 0"),
        (MixConfig, {"total_tokens": 10, "real_weights": {"web": -1}}, ">= 0"),
        (MixConfig, {"real_tokens": 10, "real_weights": {"web": 0}}, "every real weight is zero"),
        (MixConfig, {"total_tokens": 10, "real_weights": {"books": 1}}, "web"),
        (MixConfig, {"total_tokens": 10, "weights": {}}, "Extra inputs"),
        (MixSpec, {"synthetic_epochs": 2, "real_to_synthetic": 1}, "at most one"),
        (MixSpec, {"ratio_reference": "web"}, "only applies"),
        (MixSpec, {"synthetic_epochs": 0}, "greater than 0"),
    ],
)
def test_bad_sections_are_refused(section, raw, message):
    with pytest.raises(ValidationError, match=message):
        section(**raw)


def test_num_samples_covers_the_budget():
    plan = plan_mix(real_stats(60_000), None, MixConfig(total_tokens=1000, seq_length=64))
    assert plan.num_samples == math.ceil(1000 / 64)
