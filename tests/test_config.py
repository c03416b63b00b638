"""One schema validates every configuration; bad ones fail with the key path and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from workflow_scripts.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def default_raw() -> dict:
    """The tests' configuration (configs/tiny.yaml): its names are the ones the broken keys below use."""
    return yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())


@pytest.mark.parametrize("path", ["params.yaml", "configs/tiny.yaml", "configs/paper.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(REPO / path)
    assert config.experiments


def test_default_uses_the_real_builtin_model_in_every_llm_role_and_random_students():
    config = load_config(REPO / "params.yaml")
    real = {name for name, spec in config.models.items() if spec.builtin is not None}
    generators = {e.synthetic.generator for e in config.experiments.values() if e.synthetic}
    assert generators <= real and config.generate.topic_extraction.model in real
    assert config.diversity.cluster_agent.judge in real and config.diversity.perplexity.scorer in real
    assert "perplexity_gap" not in config.diversity.metrics  # a gap between a real and a random model means nothing
    assert not config.local_models.models  # no random LLMs in the default


def test_default_grid_has_a_t_contrast_and_a_template_contrast():
    config = load_config(REPO / "params.yaml")
    synthetic = {n: e.synthetic for n, e in config.experiments.items() if e.synthetic}
    size = {n: s.topics * s.generations_per_topic for n, s in synthetic.items()}
    t_contrast = [(a, b) for a in synthetic for b in synthetic if synthetic[a].template == synthetic[b].template
                  and synthetic[a].topics > synthetic[b].topics and size[a] == size[b]]
    template_contrast = [(a, b) for a in synthetic for b in synthetic if synthetic[a].template == "topic"
                         and synthetic[b].template == "topic_styles_persona" and size[a] == size[b]
                         and synthetic[a].topics == synthetic[b].topics]
    assert t_contrast and template_contrast
    assert config.diversity.bootstrap.subset_size and len(config.diversity.bootstrap.seeds) >= 2  # error bars


def test_test_grid_has_baseline_and_three_synthetic_variants(default_raw):
    config = parse_config(default_raw)
    synthetic = {n: e.synthetic for n, e in config.experiments.items() if e.synthetic}
    assert any(e.synthetic is None for e in config.experiments.values())
    assert len(synthetic) >= 3
    for field in ("topics", "generations_per_topic", "template"):
        assert len({getattr(s, field) for s in synthetic.values()}) >= 2, f"the grid never varies {field}"


def _break(raw: dict, dotted: str, value) -> dict:
    broken = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = broken
    for part in parents:
        node = node[part]
    node[last] = value
    return broken


BAD = [
    # (key to set, bad value, text the error must contain)
    ("topics.near_duplicate_treshold", 0.5, "topics.near_duplicate_treshold: unknown key"),
    ("seed", "twelve", "seed: Input should be a valid integer"),
    ("experiments.topic_t8_g2.synthetic.topics", 0, "experiments.topic_t8_g2.synthetic.topics: Input should be greater than 0"),
    ("experiments.topic_t8_g2.synthetic.template", "haiku", "experiments.topic_t8_g2.synthetic.template: Input should be"),
    ("experiments.topic_t8_g2.synthetic.generator", "gpt-9", "experiments.topic_t8_g2.synthetic.generator: 'gpt-9' is not in 'models'"),
    ("real_corpus.weights", {"web": 0, "code": 0, "math": 0}, "real_corpus.weights: weights must be >= 0 and at least one must be > 0"),
    ("real_corpus.heldout_fraction", 1.5, "real_corpus.heldout_fraction: Input should be less than 1"),
    ("real_corpus.sources", [{"name": "x", "kind": "poetry", "type": "text", "paths": ["*.txt"]}],
     "real_corpus.sources.0.kind: Input should be 'web', 'code' or 'math'"),
    ("local_models.models.generator.num_attention_heads", 5, "hidden_size (64) must be divisible by num_attention_heads (5)"),
    ("models.tiny-judge", {"local": "nonexistent"}, "models.tiny-judge.local: 'nonexistent' is not built by local_models.models"),
    ("experiments", {}, "experiments: Dictionary should have at least 1 item"),
    # settings the pretrain job would refuse only after the mixes are built
    ("pretrain.global_batch_size", 16, "pretrain.global_batch_size (16) must equal mixes.global_batch_size (8)"),
    ("pretrain.lr_warmup_steps", 40, "pretrain.lr_warmup_steps (40) must be fewer than the 40 training steps"),
    ("mixes.seq_length", 100_000, "mixes.seq_length (100000) is longer than the"),
    ("pretrain.model", "tiny-x", "pretrain.model: unknown model config 'tiny-x'"),
    # strict types: no quiet coercion of booleans or strings into numbers
    ("experiments.topic_t8_g2.synthetic.topics", True, "experiments.topic_t8_g2.synthetic.topics: Input should be a valid integer (got True)"),
    ("pretrain.train_steps", "10", "pretrain.train_steps: Input should be a valid integer (got '10')"),
    ("sft.include_explanation", "yes", "sft.include_explanation: Input should be a valid boolean (got 'yes')"),
]


@pytest.mark.parametrize("key,value,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key_and_the_expectation(default_raw, key, value, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(_break(default_raw, key, value), "params.yaml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("invalid configuration params.yaml:")


def test_missing_required_section_is_reported(default_raw):
    del default_raw["real_corpus"]
    with pytest.raises(ConfigError, match="real_corpus: required key is missing"):
        parse_config(default_raw)


def test_unreadable_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_a_repeated_key_is_refused_with_both_lines_and_exponents_read_as_numbers(tmp_path):
    text = (REPO / "configs/tiny.yaml").read_text()
    duplicated = tmp_path / "dup.yaml"
    experiments = text.index("\nexperiments:\n") + len("\nexperiments:\n")
    first = text[experiments:].splitlines(keepends=True)[0:3]  # "  real_only:" and its body
    duplicated.write_text(text + "".join(first).replace("  real_only:", "experiments:\n  real_only:", 1))
    with pytest.raises(ConfigError, match=r"duplicate key 'experiments' \(first defined on line \d+\)"):
        load_config(duplicated)
    exponent = tmp_path / "exp.yaml"
    exponent.write_text(text.replace("learning_rate: 1.0e-3", "learning_rate: 2e-5"))
    assert load_config(exponent).sft.learning_rate == 2e-5


def test_a_request_that_cannot_fit_its_models_context_is_refused_with_the_numbers():
    raw = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    raw["diversity"]["cluster_agent"]["judge"] = "gpt-35-turbo"
    raw["diversity"]["cluster_agent"]["max_sample_chars"] = 8000  # K=10 samples of ~2000 tokens for a 16K judge
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, "configs/paper.yaml")
    message = str(caught.value)
    assert "diversity.cluster_agent: cluster_agent requests to 'gpt-35-turbo'" in message
    assert "+ max_new_tokens 2048 = 22548, more than its context_window 16385" in message


def test_paper_api_models_are_pinned_snapshots_with_a_structured_output_mode_they_accept():
    models = load_config(REPO / "configs" / "paper.yaml").models
    api = {name: spec for name, spec in models.items() if spec.backend == "openai"}
    assert api and all(spec.revision and spec.context_window for spec in api.values())
    assert models["gpt-4"].structured_output == models["gpt-35-turbo"].structured_output == "json_object"
    assert models["gpt-4o"].path == "gpt-4o-2024-08-06" and models["gpt-4o"].structured_output == "json_schema"
