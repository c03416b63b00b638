"""The standalone scorer, the pipeline stage, the summary table and the config section."""

from __future__ import annotations

import json
import random
import shutil
import time

import polars as pl
import pytest
import yaml

from tests.helpers import minimal_config
from workflow_scripts.config.diversity import (
    METRICS,
    DiversityConfig,
    check_references,
    resolve_param_keys,
)
from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest, read_run_facts
from workflow_scripts.diversity import __main__ as cli
from workflow_scripts.diversity.metrics import parse_metrics

LEXICAL = ["context_length", "self_repetition", "ngram_diversity", "compression_ratio"]


def texts(n=30, seed=0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) for _ in range(n)]


# --- standalone scorer ------------------------------------------------------------------------------------


def test_scorer_on_plain_text_file(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts()) + "\n\n")
    out = tmp_path / "out.json"
    assert cli.main([str(source), "--metrics", "lexical", "--output", str(out), "--quiet"]) == 0
    scores = json.loads(out.read_text())
    assert list(scores) == LEXICAL
    for result in scores.values():
        assert set(result) == {"value", "details"} and isinstance(result["value"], float)
    assert scores["context_length"]["details"]["per_seed_details"]["0"]["documents"] == 30


def test_scorer_formats_agree_and_bootstrap(tmp_path):
    docs = texts(40)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in docs))
    pl.DataFrame({"body": docs}).write_parquet(tmp_path / "c.parquet")
    results = []
    for name in ("c.jsonl", "c.parquet"):
        out = tmp_path / f"{name}.json"
        assert cli.main([str(tmp_path / name), "--metrics", "ngram_diversity,compression_ratio",
                         "--text-field", "body", "--seeds", "1,2,3", "--subset-size", "20",
                         "--output", str(out), "--quiet"]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]
    details = results[0]["ngram_diversity"]["details"]
    assert details["seeds"] == [1, 2, 3] and details["subset_size"] == 20
    per_seed = list(details["per_seed"].values())
    assert results[0]["ngram_diversity"]["value"] == pytest.approx(sum(per_seed) / 3)
    assert details["std"] > 0


def test_scorer_errors_are_one_line(tmp_path, capfd):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"oops": 1}\n')
    assert cli.main([str(bad), "--metrics", "lexical", "--quiet"]) == 2
    assert "bad.jsonl:2: no string field 'text'" in capfd.readouterr().err
    assert cli.main([str(bad), "--metrics", "cluster_agent", "--quiet"]) == 2
    assert "--judge" in capfd.readouterr().err
    assert cli.main([str(bad), "--metrics", "nonsense", "--quiet"]) == 2
    assert "unknown metric 'nonsense'" in capfd.readouterr().err


def test_help_explains_every_metric(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in METRICS:
        assert name in text
    for option in ("--metrics", "--text-field", "--output", "--seeds", "--subset-size", "--judge",
                   "--invalid-clusters", "--cluster-size", "--kmeans-k", "--scorer", "--reference"):
        assert option in text


def test_parse_metrics_groups_and_exclusions():
    assert parse_metrics("all") == list(METRICS)
    assert parse_metrics("all,-cluster_agent,-perplexity") == [m for m in METRICS
                                                               if m not in ("cluster_agent", "perplexity")]
    assert parse_metrics("vendi,lexical") == LEXICAL + ["vendi"]
    assert parse_metrics("perplexity") == ["perplexity"]
    assert parse_metrics("ppl") == ["perplexity", "perplexity_gap"]
    with pytest.raises(ValueError):
        parse_metrics("-vendi")


# --- config section ---------------------------------------------------------------------------------------


def test_config_validation_and_param_keys():
    default = DiversityConfig()
    assert resolve_param_keys(default) == ["diversity"]
    with pytest.raises(ValueError, match="judge"):
        DiversityConfig(metrics=["cluster_agent"])
    with pytest.raises(ValueError, match="reference"):
        DiversityConfig(metrics=["perplexity_gap"], perplexity={"scorer": "a"})
    with pytest.raises(ValueError, match="subset_size"):
        DiversityConfig(metrics=["cluster_agent"], cluster_agent={"judge": "j", "K": 10},
                        bootstrap={"subset_size": 5})
    with pytest.raises(ValueError):
        DiversityConfig(unknown=1)
    full = DiversityConfig(metrics=list(METRICS), cluster_agent={"judge": "j"},
                           perplexity={"scorer": "s", "reference": "r"})
    assert resolve_param_keys(full) == ["diversity", "models.j", "models.s", "models.r"]
    with pytest.raises(ValueError, match="diversity.cluster_agent.judge"):
        check_references(full, {"s": {}, "r": {}})


# --- pipeline stage and summary ---------------------------------------------------------------------------


def generations(tmp_path, name, docs):
    out = tmp_path / "generations" / name
    with build_artifact(out, identity=JobIdentity(stage="generate", experiment=name), inputs={}) as art:
        (art.path / "shards").mkdir()
        half = len(docs) // 2
        pl.DataFrame({"text": docs[:half], "topic": ["t"] * half}).write_parquet(art.path / "shards/part-0.parquet")
        pl.DataFrame({"text": docs[half:], "topic": ["t"] * (len(docs) - half)}).write_parquet(
            art.path / "shards/part-1.parquet")
        art.info["shards"] = ["shards/part-0.parquet", "shards/part-1.parquet"]  # the manifest lists the shards
    return out


def write_config(tmp_path, diversity, **overrides):
    raw = minimal_config(**overrides)
    raw["experiments"] = {"small": {}, "big": {}}
    raw["data_root"] = str(tmp_path / "data")
    raw["diversity"] = diversity
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_stage_and_summary_lexical(tmp_path):
    from workflow_scripts.diversity import stage, summary

    config = write_config(tmp_path, {"metrics": LEXICAL, "bootstrap": {"seeds": [0, 1], "subset_size": 20}})
    outs = []
    for name, docs in (("small", texts(30, 1)), ("big", texts(30, 2) * 2)):
        out = tmp_path / "data" / "diversity" / name
        assert stage.main(["--config", str(config), "--experiment", name, "--generations",
                           str(generations(tmp_path, name, docs)), "--out", str(out), "--no-progress"]) == 0
        manifest = read_manifest(out, stage="diversity")
        assert manifest.experiment == name and manifest.counts["documents"] == len(docs)
        assert manifest.params["diversity"]["metrics"] == LEXICAL
        assert set(manifest.files) == {"scores.json", "cluster_rounds.parquet", "cluster_criteria.json", "examples.json"}
        scores = json.loads((out / "scores.json").read_text())
        assert list(scores) == LEXICAL and scores["ngram_diversity"]["details"]["seeds"] == [0, 1]
        outs.append(out)
    table_dir = tmp_path / "data" / "diversity_summary"
    assert summary.main(["--config", str(config), "--diversity-small", str(outs[0]), "--diversity-big",
                         str(outs[1]), "--out", str(table_dir)]) == 0
    table = pl.read_parquet(table_dir / "summary.parquet")
    assert table.height == 2 * len(LEXICAL)
    assert set(table.columns) >= {"experiment", "metric", "value", "std", "per_seed"}
    markdown = (table_dir / "summary.md").read_text()
    assert "| small |" in markdown and "| big |" in markdown and "±" in markdown


def test_stage_refuses_bad_inputs(tmp_path):
    from workflow_scripts.diversity import stage

    config = write_config(tmp_path, {"metrics": LEXICAL})
    not_artifact = tmp_path / "plain"
    not_artifact.mkdir()
    assert stage.main(["--config", str(config), "--experiment", "small", "--generations", str(not_artifact),
                       "--out", str(tmp_path / "o")]) == 2
    config = write_config(tmp_path, {"metrics": ["cluster_agent"], "cluster_agent": {"judge": "missing"}})
    assert stage.main(["--config", str(config), "--experiment", "small", "--generations", str(not_artifact),
                       "--out", str(tmp_path / "o")]) == 2


def test_stage_all_metrics_with_local_models(tmp_path, tiny_llama_dir):
    """Every metric on CPU: local judge and scorers from a models artifact, MiniLM embeddings."""
    import torch

    from workflow_scripts.config.diversity import Conventions
    from workflow_scripts.diversity import stage
    from workflow_scripts.diversity.cluster_agent.score import score_records

    torch.set_num_threads(1)
    started = time.perf_counter()
    models = tmp_path / "models"
    with build_artifact(models, identity=JobIdentity(stage="local_models"), inputs={}) as art:
        shutil.copytree(tiny_llama_dir, art.path / "generator")
        shutil.copytree(tiny_llama_dir, art.path / "tokenizer")
    diversity = {
        "metrics": list(METRICS),
        "bootstrap": {"seeds": [0, 1], "subset_size": 8},
        "lexical": {"tokenizer": "local:tokenizer"},
        "perplexity": {"scorer": "gen", "reference": "ref", "max_tokens": 32, "device": "cpu"},
        "embedding": {"kmeans_k": 2, "device": "cpu", "batch_size": 8},
        "cluster_agent": {"judge": "gen", "J": 1, "M": 1, "k": 1, "K": 2, "N": 2, "min_items": 1,
                          "max_items": 1, "max_sample_chars": 60, "decoding": {"max_new_tokens": 400},
                          "strings": {"max_name_chars": 8, "max_sentence_chars": 12, "max_reason_chars": 12,
                                      "max_value_chars": 8},
                          "backend": {"device": "cpu", "batch_size": 4}},
    }
    config = write_config(tmp_path, diversity, models={"gen": {"local": "generator"},
                                                       "ref": {"path": str(tiny_llama_dir)}})
    out = tmp_path / "data" / "diversity" / "small"
    args = ["--config", str(config), "--experiment", "small", "--generations",
            str(generations(tmp_path, "small", texts(12))), "--models", str(models), "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert stage.main(args) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == list(METRICS)
    assert scores["perplexity_gap"]["value"] == pytest.approx(0.0)  # same weights twice
    records = pl.read_parquet(out / "cluster_rounds.parquet")
    assert records.height == 2 * 2
    recomputed = score_records(records, Conventions())
    assert [recomputed[s]["value"] for s in (0, 1)] == list(scores["cluster_agent"]["details"]["per_seed"].values())
    manifest = read_manifest(out, stage="diversity")
    assert manifest.info["cluster_agent_usage"]["clustering"]["requests"] == 4
    # a rerun is served from the request cache
    shutil.rmtree(out)
    assert stage.main(args) == 0
    rerun = json.loads((out / "scores.json").read_text())["cluster_agent"]
    assert rerun["value"] == scores["cluster_agent"]["value"]
    assert "cache" not in read_manifest(out).info["cluster_agent_usage"]  # run-only: in the sidecar
    cache = read_run_facts(out)["judge_cache"]
    assert cache["backend_requests"] == 0 and cache["hits"] == cache["requests"]
    assert cache["judge_loaded"] is False
    assert time.perf_counter() - started < 300


def test_lexical_passes_per_seed_group_agree(tmp_path):
    from workflow_scripts.diversity.corpus import Corpus
    from workflow_scripts.diversity.scoring import Resources, score_corpus

    source = tmp_path / "c.txt"
    source.write_text("\n".join(texts(60, 4)) + "\n")
    base = {"metrics": LEXICAL, "bootstrap": {"seeds": [0, 1, 2], "subset_size": 25},
            "lexical": {"batch_bytes": 200}}
    together = score_corpus(Corpus(source), DiversityConfig(**base), Resources(), progress=False)
    base["lexical"] = {"batch_bytes": 200, "seeds_per_pass": 1, "workers": 2}
    apart = score_corpus(Corpus(source), DiversityConfig(**base), Resources(), progress=False)
    assert together.metrics == apart.metrics
    assert len(set(together.metrics["ngram_diversity"]["details"]["per_seed"].values())) == 3
