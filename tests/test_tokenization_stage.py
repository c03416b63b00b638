"""Tokenization: Megatron-readable .bin/.idx, exact tokens + EOD, identity in the manifest, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
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
)
from workflow_scripts.core.artifacts import ArtifactError, InputError, JobIdentity, read_manifest, read_run_facts
from workflow_scripts.core.hashing import hash_path
from workflow_scripts.tokenization.reader import read_tokenized, token_dtype
from workflow_scripts.tokenization.stage import Part, main, tokenize_parts


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    return save_tokenizer(tmp_path_factory, tiny_tokenizer)


def megatron_dataset(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset(str(prefix))


@pytest.fixture(scope="module")
def real_tokens(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("real")
    corpus = make_real_corpus(
        root / "real_corpus", {"web": 40, "code": 10, "math": 10}, {"web": 4, "code": 2, "math": 2}
    )
    return corpus, tokenize_real(corpus, root / "tokens", tokenizer_dir)


def test_real_corpus_gives_one_megatron_dataset_per_kind_with_exact_tokens(real_tokens, tiny_tokenizer):
    corpus, tokens = real_tokens
    artifact = read_tokenized(tokens)
    assert sorted(artifact.datasets) == ["code", "heldout_code", "heldout_math", "heldout_web", "math", "web"]
    eod = tiny_tokenizer.eos_token_id
    train = pl.read_parquet(corpus / "train.parquet")
    for kind in ("web", "code", "math"):
        texts = train.filter(pl.col("kind") == kind)["text"].to_list()
        dataset = megatron_dataset(artifact.datasets[kind].prefix)
        assert len(dataset) == len(texts) == artifact.datasets[kind].documents
        assert dataset.index.dtype == np.uint16
        for i in (0, len(texts) - 1):
            expected = tiny_tokenizer(texts[i], add_special_tokens=False).input_ids + [eod]
            assert dataset[i].tolist() == expected
            assert tiny_tokenizer.decode(dataset[i][:-1]) == texts[i]
        assert int(dataset.sequence_lengths.sum()) == artifact.datasets[kind].tokens
        assert int((dataset.sequence_lengths > 0).sum()) == len(texts)


def test_manifest_records_tokenizer_identity_counts_and_hashes(real_tokens, tiny_tokenizer, tokenizer_dir):
    _, tokens = real_tokens
    manifest = read_manifest(tokens, stage="tokenize_real")
    info = manifest.info["tokenizer"]
    assert info["name"] == str(tokenizer_dir)
    assert info["vocab_size"] == len(tiny_tokenizer)
    assert info["eod_id"] == tiny_tokenizer.eos_token_id and info["eod_token"] == "<|endoftext|>"
    assert info["dtype"] == "uint16" and len(info["hash"]) == 64 and len(info["files_hash"]) == 64
    assert manifest.counts["documents"] == 68 and manifest.counts["skipped_empty"] == 0
    assert manifest.counts["tokens"] == sum(d["tokens"] for d in manifest.info["datasets"].values())
    assert manifest.files["web.bin"] == hash_path(tokens / "web.bin")
    assert manifest.inputs["tokenizer"] == hash_path(tokenizer_dir)


def test_consumer_refuses_another_tokenizer_vocab_or_dtype(real_tokens, tiny_tokenizer):
    _, tokens = real_tokens
    read_tokenized(tokens, expect={"vocab_size": len(tiny_tokenizer), "dtype": "uint16"})
    with pytest.raises(ArtifactError, match=r"vocab_size: found 400, expected 50295"):
        read_tokenized(tokens, expect={"vocab_size": 50295})
    with pytest.raises(ArtifactError, match=r"dtype: found 'uint16', expected 'int32'"):
        read_tokenized(tokens, expect={"dtype": "int32"})
    with pytest.raises(ArtifactError, match=r"hash: found '[0-9a-f]{64}', expected 'abc'.*Re-tokenize"):
        read_tokenized(tokens, expect={"hash": "abc", "name": "Salesforce/codegen-350M-mono"})


def test_tokenizer_hash_follows_content_not_location(tmp_path, tiny_tokenizer):
    from workflow_scripts.config import TokenizerSpec
    from workflow_scripts.local_models import train_tokenizer
    from workflow_scripts.tokenization.reader import describe_tokenizer

    tiny_tokenizer.save_pretrained(tmp_path / "a")
    tiny_tokenizer.save_pretrained(tmp_path / "b")
    other = train_tokenizer(
        ["completely different words here"] * 50, TokenizerSpec(vocab_size=300, min_frequency=1)
    )
    other.save_pretrained(tmp_path / "c")
    a, b, c = (describe_tokenizer(str(tmp_path / n)) for n in "abc")
    assert a.hash == b.hash != c.hash
    assert a.name != b.name


def test_output_does_not_depend_on_workers_or_batch_size(tmp_path, tokenizer_dir):
    texts = documents("web", 150) + ["", "unicode: naïve café – ∑ x² ✓"] + documents("code", 50)
    make_generations(tmp_path / "gen", texts, shards=3)
    files = tuple(sorted((tmp_path / "gen").glob("generations-*.parquet")))
    outs = []
    for workers, batch_chars in ((1, 1 << 20), (2, 500)):
        out = tmp_path / f"out-{workers}"
        tokenize_parts(
            [Part(files, name="synthetic")],
            out,
            tokenizer=str(tokenizer_dir),
            identity=JobIdentity(stage="tokenize_synthetic"),
            workers=workers,
            batch_chars=batch_chars,
        )
        outs.append(out)
    for name in ("synthetic.bin", "synthetic.idx"):
        assert hash_path(outs[0] / name) == hash_path(outs[1] / name)
    manifest = read_manifest(outs[1])
    assert manifest.counts["documents"] == 201 and manifest.counts["skipped_empty"] == 1
    assert read_run_facts(outs[1])["workers"] == 2  # a fact of the run: the manifest is the same for both
    assert (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()


def test_writer_matches_megatron_builder_byte_for_byte(tmp_path, monkeypatch):
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from workflow_scripts.tokenization import indexed

    monkeypatch.setattr(indexed, "CHUNK", 7)  # exercise the chunked index streaming
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 70_000, size=int(rng.integers(1, 40))).astype(np.int32) for _ in range(50)]
    ours = indexed.IndexedDatasetWriter(tmp_path / "ours", "int32")
    for start in range(0, 50, 9):
        chunk = docs[start : start + 9]
        ours.add(np.concatenate(chunk), np.array([len(d) for d in chunk]))
    ours.finalize()
    theirs = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.int32)
    for doc in docs:
        theirs.add_item(torch.from_numpy(doc))
        theirs.end_document()
    theirs.finalize(str(tmp_path / "theirs.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"theirs{suffix}").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))
    dataset = megatron_dataset(tmp_path / "ours")  # keep it alive: items are views of its memory map
    assert dataset[49].tolist() == docs[49].tolist()


def test_dtype_is_the_smallest_safe_one():
    assert token_dtype(400) == token_dtype(50_295) == token_dtype(65_536) == "uint16"
    assert token_dtype(65_537) == token_dtype(128_256) == "int32"


def test_null_text_and_missing_column_are_input_errors_naming_file_and_row(tmp_path, tokenizer_dir):
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"text": ["fine", None]}, schema={"text": pl.String}).write_parquet(bad)
    ident = JobIdentity(stage="tokenize")
    with pytest.raises(InputError, match=r"bad.parquet: row 1: 'text' is null"):
        tokenize_parts([Part((bad,))], tmp_path / "out", tokenizer=str(tokenizer_dir), identity=ident)
    with pytest.raises(InputError, match=r"bad.parquet: no column 'body'"):
        tokenize_parts(
            [Part((bad,))], tmp_path / "out", tokenizer=str(tokenizer_dir), identity=ident, text_column="body"
        )
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_ordered_pool_keeps_a_bounded_window():
    from workflow_scripts.tokenization.encode import OrderedPool

    produced = []

    def items():
        for i in range(40):
            produced.append(i)
            yield -i

    with OrderedPool(2, int, (), window=4) as pool:
        for consumed, value in enumerate(pool.map(abs, items())):
            assert value == consumed
            assert len(produced) - consumed <= 4


def _config(tmp_path, **extra):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(minimal_config(**extra)))
    return path


def test_cli_real_synthetic_and_corpus_commands(tmp_path, tokenizer_dir, capsys):
    corpus = make_real_corpus(tmp_path / "real_corpus", {"web": 8, "code": 2, "math": 2})
    make_generations(tmp_path / "gen", documents("synthetic", 10), experiment="real_only")
    config = _config(tmp_path)
    common = ["--config", str(config), "--local-models", str(tokenizer_dir), "--workers", "1"]
    assert main(["real", *common, "--corpus", str(corpus), "--out", str(tmp_path / "t_real")]) == 0
    assert sorted(read_tokenized(tmp_path / "t_real").datasets) == ["code", "math", "web"]
    assert (
        main(
            [
                "synthetic",
                *common,
                "--experiment",
                "real_only",
                "--generations",
                str(tmp_path / "gen"),
                "--out",
                str(tmp_path / "t_syn"),
            ]
        )
        == 0
    )
    syn = read_tokenized(tmp_path / "t_syn")
    assert list(syn.datasets) == ["synthetic"] and syn.datasets["synthetic"].documents == 10
    assert read_manifest(tmp_path / "t_syn").experiment == "real_only"
    assert (
        main(
            [
                "corpus",
                "--config",
                str(config),
                "--tokenizer",
                str(tokenizer_dir),
                "--input",
                str(tmp_path / "gen"),
                "--glob",
                "generations-*.parquet",
                "--name",
                "gen",
                "--out",
                str(tmp_path / "t_any"),
            ]
        )
        == 0
    )
    manifest = read_manifest(tmp_path / "t_any")
    assert manifest.params["tokenize"]["tokenizer"] == str(tokenizer_dir)
    # 'local' tokenizer without --local-models, and a missing input: one clear error line, exit 2
    assert main(["real", "--config", str(config), "--corpus", str(corpus), "--out", str(tmp_path / "x")]) == 2
    assert "pass --local-models" in capsys.readouterr().err
    assert main(["real", *common, "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_cli_help_explains_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "real" in out and "synthetic" in out and "EOD" in out
    with pytest.raises(SystemExit):
        main(["synthetic", "--help"])
    assert "--generations" in capsys.readouterr().out


def test_manifest_json_is_self_describing(real_tokens):
    _, tokens = real_tokens
    data = json.loads((tokens / "manifest.json").read_text())
    assert set(data["info"]) >= {"tokenizer", "datasets", "source"}
    assert data["info"]["datasets"]["web"]["documents"] == 40
    assert os.path.getsize(tokens / "web.bin") == 2 * data["info"]["datasets"]["web"]["tokens"]


def test_bad_group_values_are_input_errors(tmp_path, tokenizer_dir):
    ident = JobIdentity(stage="tokenize")
    for kinds, message in (
        (["web", None], r"row 1: 'kind' is None"),
        (["web", "no/slash"], r"row 1: 'kind' is 'no/slash'"),
    ):
        bad = tmp_path / "groups.parquet"
        pl.DataFrame(
            {"text": ["a", "b"], "kind": kinds}, schema={"text": pl.String, "kind": pl.String}
        ).write_parquet(bad)
        with pytest.raises(InputError, match=message):
            tokenize_parts(
                [Part((bad,), group_by="kind")],
                tmp_path / "out",
                tokenizer=str(tokenizer_dir),
                identity=ident,
            )


def test_empty_texts_are_skipped_inside_groups(tmp_path, tokenizer_dir):
    corpus = tmp_path / "c.parquet"
    pl.DataFrame(
        {"text": ["alpha", "", "gamma", "delta"], "kind": ["web", "code", "web", "math"]}
    ).write_parquet(corpus)
    tokenize_parts(
        [Part((corpus,), group_by="kind")],
        tmp_path / "out",
        tokenizer=str(tokenizer_dir),
        identity=JobIdentity(stage="tokenize"),
    )
    artifact = read_tokenized(tmp_path / "out")
    assert {k: d.documents for k, d in artifact.datasets.items()} == {"web": 2, "math": 1}
    assert read_manifest(tmp_path / "out").counts["skipped_empty"] == 1


def test_synthetic_tokenization_refuses_an_edited_generations_parquet(tmp_path, tokenizer_dir, capsys):
    make_generations(tmp_path / "gen", documents("synthetic", 10), experiment="real_only")
    shard = next((tmp_path / "gen").glob("generations-*.parquet"))
    frame = pl.read_parquet(shard)
    frame.with_columns(pl.col("text").str.replace("a", "e")).write_parquet(shard)  # readable, other text
    config = _config(tmp_path)
    capsys.readouterr()
    assert main(["synthetic", "--config", str(config), "--local-models", str(tokenizer_dir), "--workers", "1",
                 "--experiment", "real_only", "--generations", str(tmp_path / "gen"),
                 "--out", str(tmp_path / "t_syn")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and shard.name in errors[0], errors
    assert not (tmp_path / "t_syn").exists()
