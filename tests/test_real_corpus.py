"""Real corpus: configurable sources, mixing by kind weights, deterministic held-out split, streaming."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from workflow_scripts import real_corpus
from workflow_scripts.config import RealCorpusConfig
from workflow_scripts.core.artifacts import InputError, read_manifest
from workflow_scripts.real_corpus import build_corpus, is_heldout, main, scan, split_document

# --- the implementation before streaming, kept as the reference of the selection and the output -----------


def reference_documents(config: RealCorpusConfig) -> pl.DataFrame:
    rows: dict[str, list[str]] = {name: [] for name in real_corpus.SCHEMA}
    for source in config.sources:
        for name, text in reference_read_source(source):
            for index, chunk in enumerate(split_document(text, config.max_chars_per_document)):
                if len(chunk) >= config.min_chars_per_document:
                    rows["doc_id"].append(f"{source.name}/{name}#{index}")
                    rows["source"].append(source.name)
                    rows["kind"].append(source.kind)
                    rows["text"].append(chunk)
    return pl.DataFrame(rows, schema=real_corpus.SCHEMA)


def reference_read_source(source):
    if source.type.startswith("python_stdlib"):
        yield from real_corpus.read_source(source)
        return
    for file in real_corpus.matched_files(source):
        if source.type == "text":
            yield file.as_posix(), file.read_text(encoding="utf-8", errors="replace")
            continue
        frame = pl.read_parquet(file) if source.type == "parquet" else pl.read_ndjson(file)
        for row, text in enumerate(frame[source.text_field]):
            if text is not None:
                yield f"{file.as_posix()}#{row}", str(text)


def reference_mix(docs: pl.DataFrame, config: RealCorpusConfig) -> pl.DataFrame:
    weights = {kind: w for kind, w in config.weights.items() if w > 0}
    total_weight = sum(weights.values())
    available = {k: docs.filter(pl.col("kind") == k)["text"].str.len_chars().sum() for k in weights}
    shares = {k: config.max_chars * w / total_weight for k, w in weights.items()}
    scale = min([1.0] + [available[k] / shares[k] for k in weights])
    kept = []
    for kind in sorted(weights):
        part = docs.filter(pl.col("kind") == kind)
        rank = pl.Series([hashlib.sha256(f"{config.seed}:{i}".encode()).hexdigest() for i in part["doc_id"]])
        part = part.with_columns(rank.alias("_rank")).sort("_rank")
        chars = part["text"].str.len_chars()
        kept.append(part.filter(chars.cum_sum() - chars < shares[kind] * scale).drop("_rank"))
    return pl.concat(kept)


def reference_corpus(config: RealCorpusConfig) -> dict[str, pl.DataFrame]:
    mixed = reference_mix(reference_documents(config), config)
    digests = [hashlib.sha256(f"heldout:{config.seed}:{i}".encode()).hexdigest() for i in mixed["doc_id"]]
    bucket = [int(digest[:8], 16) / 0xFFFFFFFF for digest in digests]
    heldout = pl.Series(bucket) < config.heldout_fraction
    return {"train": mixed.filter(~heldout), "heldout": mixed.filter(heldout)}


# --- fixtures -----------------------------------------------------------------------------------------------


def _sources(tmp_path):
    lines = [json.dumps({"body": f"web page {i} " + "words " * (20 + 7 * i)}) for i in range(60)]
    lines[5:5] = ["", json.dumps({"body": None}), "   ", json.dumps({"other": 1})]  # rows without text
    web = tmp_path / "web.jsonl"
    web.write_text("\n".join(lines) + "\n")
    code = [f"def f{i}():\n    return {i}\n" * (5 + i) + "\n\n" + "# note\n" * i for i in range(40)]
    code[3] = None
    pl.DataFrame({"text": code}).write_parquet(tmp_path / "code.parquet", row_group_size=7)
    (tmp_path / "math").mkdir()
    for i in range(30):
        (tmp_path / "math" / f"{i}.txt").write_text(f"Lemma {i}. " + "x + y = y + x. " * (10 + 3 * i))
    return [
        {"name": "web", "kind": "web", "type": "jsonl", "paths": [str(web)], "text_field": "body"},
        {"name": "code", "kind": "code", "type": "parquet", "paths": [str(tmp_path / "code.parquet")]},
        {"name": "math", "kind": "math", "type": "text", "paths": [str(tmp_path / "math" / "*.txt")]},
    ]


def _config(tmp_path, **overrides) -> RealCorpusConfig:
    settings = {"weights": {"web": 4, "code": 1, "math": 1}, "max_chars": 12_000,
                "min_chars_per_document": 50, "max_chars_per_document": 400, "heldout_fraction": 0.2}
    return RealCorpusConfig(sources=_sources(tmp_path), **{**settings, **overrides})


def _build(config: RealCorpusConfig, out) -> dict[str, pl.DataFrame]:
    out.mkdir()
    build_corpus(config, out)
    return {split: pl.read_parquet(out / f"{split}.parquet") for split in real_corpus.SPLITS}


def _tiny_batches(monkeypatch, max_buckets: int = 256) -> None:
    monkeypatch.setattr(real_corpus, "PARQUET_READ_ROWS", 3)
    monkeypatch.setattr(real_corpus, "SPILL_BUFFER_CHARS", 700)
    monkeypatch.setattr(real_corpus, "BUCKET_CHARS", 1500)
    monkeypatch.setattr(real_corpus, "MAX_BUCKETS", max_buckets)
    monkeypatch.setattr(real_corpus, "ROW_GROUP_CHARS", 1000)
    monkeypatch.setattr(real_corpus, "ROW_GROUP_ROWS", (2, 50))
    monkeypatch.setattr(real_corpus, "SINK_SLICE_ROWS", 3)


# --- selection and output -----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {},
    {"weights": {"web": 1, "code": 0, "math": 10}, "max_chars": 10_000_000},
    {"max_chars": 3_000, "seed": 7, "heldout_fraction": 0.5},
])
def test_streamed_corpus_is_the_previous_implementation_s(tmp_path, settings):
    config = _config(tmp_path, **settings)
    expected = reference_corpus(config)
    streamed = _build(config, tmp_path / "out")
    for split in real_corpus.SPLITS:
        assert streamed[split].equals(expected[split]), split  # the same rows in the same order
        expected[split].write_parquet(tmp_path / f"{split}-reference.parquet")
        written = (tmp_path / "out" / f"{split}.parquet").read_bytes()
        assert written == (tmp_path / f"{split}-reference.parquet").read_bytes(), "byte for byte as before"


@pytest.mark.parametrize("max_buckets", [256, 2])
def test_small_batches_buckets_and_row_groups_give_the_same_corpus(tmp_path, monkeypatch, max_buckets):
    config = _config(tmp_path, max_chars=10_000_000, max_chars_per_document=300)
    whole = _build(config, tmp_path / "whole")
    _tiny_batches(monkeypatch, max_buckets)
    batched = _build(config, tmp_path / "batched")
    for split in real_corpus.SPLITS:
        assert batched[split].equals(whole[split]), split
    assert pq.ParquetFile(tmp_path / "batched" / "train.parquet").metadata.num_row_groups > 3
    assert pq.ParquetFile(tmp_path / "whole" / "train.parquet").metadata.num_row_groups == 1


def test_pass_one_keeps_a_few_bytes_per_document_and_pass_two_a_bounded_buffer(tmp_path, monkeypatch):
    config = _config(tmp_path, max_chars=10_000_000)
    facts = scan(config)
    arrays = (facts.kinds, facts.rank_high, facts.rank_low, facts.chars)
    assert sum(a.nbytes for a in arrays) == 25 * len(facts)
    _tiny_batches(monkeypatch)
    largest, flush = [0], real_corpus.BucketSpill.flush

    def recording_flush(self):
        largest[0] = max(largest[0], self.buffered_chars)
        flush(self)

    monkeypatch.setattr(real_corpus.BucketSpill, "flush", recording_flush)
    _build(config, tmp_path / "out")
    assert 0 < largest[0] < real_corpus.SPILL_BUFFER_CHARS + config.max_chars_per_document


def test_weights_set_each_kinds_share_of_characters(tmp_path):
    corpus = _build(_config(tmp_path, max_chars_per_document=150), tmp_path / "out")
    mixed = pl.concat(corpus.values())
    chars = mixed.group_by("kind").agg(pl.col("text").str.len_chars().sum()).to_dict(as_series=False)
    share = dict(zip(chars["kind"], chars["text"]))
    total = sum(share.values())
    assert total == pytest.approx(12_000, rel=0.1)
    assert share["web"] / total == pytest.approx(4 / 6, abs=0.06)
    assert share["code"] / total == pytest.approx(1 / 6, abs=0.06)


def test_scarce_kind_shrinks_the_budget_to_keep_the_ratio(tmp_path):
    config = _config(tmp_path, weights={"web": 1, "code": 0, "math": 10}, max_chars=10_000_000,
                     max_chars_per_document=150)
    mixed = pl.concat(_build(config, tmp_path / "out").values())
    math_chars = mixed.filter(pl.col("kind") == "math")["text"].str.len_chars().sum()
    web_chars = mixed.filter(pl.col("kind") == "web")["text"].str.len_chars().sum()
    assert set(mixed["kind"]) == {"web", "math"}
    assert web_chars == pytest.approx(math_chars / 10, rel=0.1)


def test_heldout_split_is_deterministic():
    chosen = [i for i in range(2000) if is_heldout(f"d{i}", 0.1, seed=3)]
    assert chosen == [i for i in range(2000) if is_heldout(f"d{i}", 0.1, seed=3)]
    assert chosen != [i for i in range(2000) if is_heldout(f"d{i}", 0.1, seed=4)]
    assert 150 < len(chosen) < 250


def test_split_document_respects_the_limit():
    text = "\n\n".join(["para " * 30] * 10 + ["y" * 500])
    chunks = split_document(text, 200)
    assert all(len(c) <= 200 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


# --- errors -------------------------------------------------------------------------------------------------


def _run_stage(tmp_path, sources) -> int:
    from tests.helpers import write_config

    weights = {"web": 1, "code": 1, "math": 1}
    config = write_config(tmp_path, real_corpus={"sources": sources, "weights": weights})
    return main(["--config", str(config), "--out", str(tmp_path / "out")])


def test_missing_text_field_is_a_clear_error(tmp_path, capsys):
    sources = _sources(tmp_path)
    sources[0]["text_field"] = "content"
    assert _run_stage(tmp_path, sources) == 2
    assert "web.jsonl: no column 'content' (columns: ['body', 'other'])" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_parquet_column_is_a_clear_error(tmp_path, capsys):
    sources = _sources(tmp_path)
    sources[1]["text_field"] = "content"
    assert _run_stage(tmp_path, sources) == 2
    assert "code.parquet: no column 'content' (columns: ['text'])" in capsys.readouterr().err


def test_malformed_jsonl_line_is_named(tmp_path, capsys):
    sources = _sources(tmp_path)
    web = tmp_path / "web.jsonl"
    lines = web.read_text().splitlines()
    lines[7] = '{"body": "unterminated'
    web.write_text("\n".join(lines) + "\n")
    assert _run_stage(tmp_path, sources) == 2
    assert "web.jsonl: line 8: not valid JSON" in capsys.readouterr().err


def test_unreadable_parquet_is_named(tmp_path, capsys):
    sources = _sources(tmp_path)
    (tmp_path / "code.parquet").write_bytes(b"not parquet at all")
    assert _run_stage(tmp_path, sources) == 2
    assert "code.parquet: not a readable Parquet file" in capsys.readouterr().err


def test_sources_that_change_between_the_passes_are_refused(tmp_path, monkeypatch):
    config = _config(tmp_path)
    read, calls = real_corpus.chunks, []

    def changing_chunks(config, dropped=None):
        calls.append(1)
        for chunk in read(config, dropped):
            yield chunk._replace(text=chunk.text + " edited") if len(calls) > 1 else chunk

    monkeypatch.setattr(real_corpus, "chunks", changing_chunks)
    with pytest.raises(InputError, match="the sources changed while the stage read them"):
        _build(config, tmp_path / "out")


# --- the default, from the standard library -----------------------------------------------------------------


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
    train = pl.read_parquet(out / "train.parquet")
    assert manifest.counts["train_documents"] == train.height
    assert manifest.counts["heldout_documents"] == heldout.height
    assert manifest.counts["train_chars"] == train["text"].str.len_chars().sum()
    assert sorted(p.name for p in out.iterdir()) == ["heldout.parquet", "manifest.json", "stats.json",
                                                     "train.parquet"], "no spill files are left"
    first = (out / "train.parquet").read_bytes()
    assert main(["--config", str(config), "--out", str(out)]) == 0
    assert (out / "train.parquet").read_bytes() == first, "the default corpus is deterministic"
