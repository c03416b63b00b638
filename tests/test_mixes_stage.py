"""The mix stage: blend.json + sources table from tokenized artifacts; refuses mismatched tokenizers."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from tests.helpers import minimal_config
from tests.test_mixes_helpers import (
    documents,
    make_generations,
    make_real_corpus,
    save_tokenizer,
    tokenize_real,
    tokenize_synthetic,
)
from workflow_scripts.config.mixes import MixConfig, MixSpec
from workflow_scripts.core.artifacts import ArtifactError, JobIdentity, read_manifest
from workflow_scripts.mixes.plan import MixError
from workflow_scripts.mixes.reader import read_blend
from workflow_scripts.mixes.stage import build_mix, main
from workflow_scripts.tokenization.reader import read_tokenized

IDENTITY = JobIdentity(stage="mix", experiment="exp")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    return save_tokenizer(tmp_path_factory, tiny_tokenizer)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("mix")
    corpus = make_real_corpus(
        root / "real_corpus", {"web": 60, "code": 15, "math": 15}, {"web": 4, "code": 2, "math": 2}
    )
    make_generations(root / "gen", documents("synthetic", 12))
    return (
        tokenize_real(corpus, root / "tokens_real", tokenizer_dir),
        tokenize_synthetic(root / "gen", root / "tokens_syn", tokenizer_dir),
    )


def test_blend_and_sources_table(tmp_path, tokens, monkeypatch):
    real_dir, syn_dir = tokens
    monkeypatch.chdir(real_dir.parent)
    config = MixConfig(total_tokens=8000, seq_length=32)
    blend = build_mix(
        tmp_path / "mix", real_dir, syn_dir, config, MixSpec(synthetic_epochs=3), IDENTITY, "exp"
    )
    syn_unique = read_tokenized(syn_dir).datasets["synthetic"].tokens
    assert blend.prefixes == [
        "tokens_real/web",
        "tokens_real/code",
        "tokens_real/math",
        "tokens_syn/synthetic",
    ]
    assert sum(blend.weights) == pytest.approx(1.0)
    assert blend.weights[3] == pytest.approx(3 * syn_unique / 8000)
    assert blend.weights[0] / blend.weights[1] == pytest.approx(4.0)
    assert blend.total_tokens == 8000 and blend.num_samples == 250 and blend.seq_length == 32
    assert blend.tokenizer.vocab_size == 400 and blend.tokenizer.dtype == "uint16"
    assert blend.tokenizer.path is not None
    assert blend.valid is not None and blend.valid.prefixes[0] == "tokens_real/heldout_web"
    assert read_blend(tmp_path / "mix") == blend

    table = pl.read_parquet(tmp_path / "mix" / "sources.parquet")
    assert table["source"].to_list() == ["web", "code", "math", "synthetic"]
    syn = table.filter(pl.col("source") == "synthetic").row(0, named=True)
    assert syn["unique_tokens"] == syn_unique and syn["epochs"] == pytest.approx(3.0)
    assert table["share"].sum() == pytest.approx(1.0)
    assert (table["effective_tokens"] - table["unique_tokens"] * table["epochs"]).abs().max() <= 1
    markdown = (tmp_path / "mix" / "sources.md").read_text()
    assert "| synthetic | synthetic | 12 |" in markdown and "3.000" in markdown and "8,000" in markdown

    manifest = read_manifest(tmp_path / "mix", stage="mix")
    assert manifest.info["epochs"]["synthetic"] == pytest.approx(3.0)
    assert manifest.info["tokenizer"]["hash"] == blend.tokenizer.hash
    assert set(manifest.inputs) == {"real_tokens", "synthetic_tokens"}
    assert json.loads((tmp_path / "mix" / "blend.json").read_text())["sources"][3]["bin_sha256"]


def test_real_only_mix(tmp_path, tokens):
    real_dir, _ = tokens
    blend = build_mix(
        tmp_path / "mix",
        real_dir,
        None,
        MixConfig(total_tokens=4000, seq_length=32),
        MixSpec(),
        IDENTITY,
        "real_only",
    )
    assert [s.name for s in blend.sources] == ["web", "code", "math"]
    assert blend.weights == pytest.approx([4 / 6, 1 / 6, 1 / 6])


def test_synthetic_from_another_tokenizer_is_refused(tmp_path, tokens):
    from workflow_scripts.config import TokenizerSpec
    from workflow_scripts.local_models import train_tokenizer

    real_dir, _ = tokens
    other = train_tokenizer(documents("synthetic", 40) * 3, TokenizerSpec(vocab_size=300, min_frequency=1))
    other.save_pretrained(tmp_path / "other")
    make_generations(tmp_path / "gen", documents("synthetic", 5))
    syn = tokenize_synthetic(tmp_path / "gen", tmp_path / "tok", tmp_path / "other")
    with pytest.raises(
        ArtifactError, match=r"different tokenizer.*hash: found .*vocab_size: found 300, expected 400"
    ):
        build_mix(
            tmp_path / "mix",
            real_dir,
            syn,
            MixConfig(total_tokens=4000, seq_length=32),
            MixSpec(),
            IDENTITY,
            "exp",
        )
    assert not (tmp_path / "mix").exists()


def test_impossible_mix_writes_nothing(tmp_path, tokens):
    real_dir, syn_dir = tokens
    config = MixConfig(total_tokens=10**6, seq_length=32, allow_repetition=False)
    with pytest.raises(MixError, match="experiments.exp.mix: mixes.allow_repetition is false"):
        build_mix(tmp_path / "mix", real_dir, syn_dir, config, MixSpec(), IDENTITY, "exp")
    assert not (tmp_path / "mix").exists()


def test_cli(tmp_path, tokens, capsys):
    real_dir, syn_dir = tokens
    raw = minimal_config(mixes={"total_tokens": 6000, "seq_length": 32})
    raw["experiments"]["syn"] = {"synthetic": {"topics": 1, "generations_per_topic": 1, "template": "topic",
                                               "generator": "gen"},
                                 "mix": {"synthetic_effective_tokens": 1000}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    common = ["--config", str(config), "--experiment", "syn", "--real-tokens", str(real_dir)]
    assert main([*common, "--synthetic-tokens", str(syn_dir), "--out", str(tmp_path / "mix")]) == 0
    blend = read_blend(tmp_path / "mix")
    assert blend.sources[-1].effective_tokens == 1000
    manifest = read_manifest(tmp_path / "mix")
    assert manifest.params["mixes"]["total_tokens"] == 6000
    assert manifest.params["experiments.syn.mix"]["synthetic_effective_tokens"] == 1000
    assert main([*common, "--out", str(tmp_path / "mix2")]) == 2  # synthetic asked for, none given
    assert "no synthetic tokens" in capsys.readouterr().err
