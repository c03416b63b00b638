"""Megatron-core itself reads a mix: samples decode to text of the right source, in the blend's proportions,
and each source is consumed for the epochs sources.md reports."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from tests.test_mixes_helpers import (
    WORDS,
    documents,
    make_generations,
    make_real_corpus,
    save_tokenizer,
    tokenize_real,
    tokenize_synthetic,
)
from workflow_scripts.config.mixes import MixConfig, MixSpec
from workflow_scripts.core.artifacts import ArtifactError, JobIdentity
from workflow_scripts.mixes.reader import build_gpt_datasets, read_blend, single_process_group
from workflow_scripts.mixes.stage import build_mix

SEQ = 32
SYNTHETIC_EPOCHS = 3.5
IDENTITY = JobIdentity(stage="mix", experiment="exp")
WORD = re.compile(r"[a-z]+")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    return save_tokenizer(tmp_path_factory, tiny_tokenizer)


@pytest.fixture(scope="module")
def mix(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("megatron")
    corpus = make_real_corpus(
        root / "real_corpus", {"web": 80, "code": 30, "math": 30}, {"web": 6, "code": 3, "math": 3}
    )
    make_generations(root / "gen", documents("synthetic", 10))
    real = tokenize_real(corpus, root / "tokens_real", tokenizer_dir)
    syn = tokenize_synthetic(root / "gen", root / "tokens_syn", tokenizer_dir)
    build_mix(
        root / "mix",
        real,
        syn,
        MixConfig(total_tokens=24_000, seq_length=SEQ),
        MixSpec(synthetic_epochs=SYNTHETIC_EPOCHS),
        IDENTITY,
        "exp",
    )
    return root


def source_of(text: str) -> set[str]:
    """Which sources' vocabularies the decoded words come from (edge words may be cut, so only full words)."""
    words = set(WORD.findall(text)[1:-1])
    return {name for name, vocab in WORDS.items() if words & set(vocab)}


def test_megatron_samples_come_from_the_right_sources_in_the_blend_proportions(
    mix, tiny_tokenizer, monkeypatch
):
    monkeypatch.chdir(mix)  # prefixes are relative to the directory the mix was built in
    blend = read_blend(mix / "mix")
    names = [s.name for s in blend.sources]
    with single_process_group():
        train, valid, test = build_gpt_datasets(
            mix / "mix", cache_dir=mix / "cache", seed=7, tokenizer_info=blend.tokenizer, valid_samples=20
        )
    assert test is None and len(valid) >= 20
    n = len(train)
    assert n >= blend.num_samples
    by_index, by_text = Counter(), Counter()
    for i in range(n):
        sample = train[i]
        source = names[int(train.dataset_index[i])]
        text = tiny_tokenizer.decode(sample["tokens"].tolist())
        found = source_of(text)
        assert found == {source}, f"sample {i} from {source} decodes to words of {found}: {text!r}"
        by_index[source] += 1
        by_text[found.pop()] += 1
    assert by_index == by_text
    for name, weight in zip(names, blend.weights):
        sigma = math.sqrt(weight * (1 - weight) / n)
        assert abs(by_index[name] / n - weight) <= 3 * sigma + 1 / n, (name, by_index[name] / n, weight)
    # epochs actually consumed = samples drawn x sequence length / unique tokens, as sources.md says
    for source in blend.sources:
        consumed = by_index[source.name] * SEQ / source.unique_tokens
        assert consumed == pytest.approx(
            source.epochs, abs=1.5 * SEQ / source.unique_tokens + 0.01 * source.epochs
        )
    synthetic = blend.sources[names.index("synthetic")]
    assert synthetic.epochs == pytest.approx(SYNTHETIC_EPOCHS)
    megatron_synthetic = train.datasets[names.index("synthetic")]
    built_epochs = len(megatron_synthetic.document_index) / 10
    assert built_epochs == math.ceil(SYNTHETIC_EPOCHS)  # Megatron repeats the 10 documents 4 times, uses 3.5


def test_builder_refuses_a_mismatched_consumer(mix, monkeypatch):
    monkeypatch.chdir(mix)
    blend = read_blend(mix / "mix")
    with pytest.raises(ArtifactError, match="vocab_size: found 400, expected 50304"):
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c", tokenizer_info={"vocab_size": 50304})
    with pytest.raises(ArtifactError, match="sequences of 32 tokens, the caller uses 2048"):
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c", seq_length=2048)
    with pytest.raises(ArtifactError, match="epochs would differ"):
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c", num_samples=2 * blend.num_samples)
    with pytest.raises(RuntimeError, match="torch.distributed initialised"):
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c")


@pytest.fixture
def damaged(mix):
    """Damage a token file of the shared mix for one test (``damaged(path, new_bytes)``); restored after."""
    saved = {}

    def damage(path, data):
        saved.setdefault(path, path.read_bytes())
        path.write_bytes(data)

    yield damage
    for path, data in saved.items():
        path.write_bytes(data)


def test_a_truncated_bin_is_refused_in_one_line_before_megatron_reads_it(mix, damaged, monkeypatch):
    monkeypatch.chdir(mix)
    token_file = next((mix / "tokens_syn").rglob("*.bin"))
    damaged(token_file, token_file.read_bytes()[:-6])  # the last three uint16 tokens lost
    with single_process_group(), pytest.raises(ArtifactError, match="the file was truncated") as error:
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c")
    assert "\n" not in str(error.value) and token_file.name in str(error.value)
    # the mix stage refuses it too, instead of reporting the manifest's token count
    with pytest.raises(ArtifactError, match="the file was truncated"):
        build_mix(mix / "mix2", mix / "tokens_real", mix / "tokens_syn", MixConfig(total_tokens=24_000,
                  seq_length=SEQ), MixSpec(synthetic_epochs=SYNTHETIC_EPOCHS), IDENTITY, "exp")
    assert not (mix / "mix2").exists()


def test_an_overwritten_bin_of_the_same_size_is_refused(mix, damaged, monkeypatch):
    monkeypatch.chdir(mix)
    token_file = next((mix / "tokens_real").rglob("*.bin"))
    data = token_file.read_bytes()
    damaged(token_file, data[2:] + data[:2])  # same size, other tokens: would train to another loss
    with single_process_group(), pytest.raises(ArtifactError, match="does not match the hash in its manifest"):
        build_gpt_datasets(mix / "mix", cache_dir=mix / "c")
