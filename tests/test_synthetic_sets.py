"""Experiment schema for the paper's grid (sizes, replicates, external and mixed sets, unique-token targets,
scorer variants) and the synthetic_sets stage on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import minimal_config, write_config
from workflow_scripts import pipeline, synthetic_sets
from workflow_scripts.config import ConfigError, load_config, lookup, parse_config
from workflow_scripts.config.root import generations_for_target
from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest
from workflow_scripts.core.identity import stage_params
from workflow_scripts.generate.reader import generation_shards, iter_documents

GENERATED = {"topics": 4, "generations_per_topic": 2, "template": "topic", "generator": "gen"}
LIGHT = {"metrics": ["context_length"]}  # no K-means: its k must not exceed these tiny sets


def config_with(**experiments):
    return parse_config(minimal_config(diversity=LIGHT, experiments={"real_only": {}, **experiments}))


# --- schema -----------------------------------------------------------------------------------------------


def test_unique_token_target_becomes_generations_per_topic():
    # 12.9B over 620K topics at 580 tokens a generation: 35.9 -> 36 generations per topic
    assert generations_for_target(12_900_000_000, 620_000, 580) == 36
    config = config_with(a={"synthetic": {"topics": 10, "unique_tokens": "10K", "template": "topic",
                                          "generator": "gen"}})
    spec = config.experiments["a"].synthetic
    assert (spec.generations_per_topic, spec.tokens_per_generation) == (2, 580)  # 10000 / 5800 -> 2
    with pytest.raises(ConfigError, match="not both"):
        config_with(a={"synthetic": {**GENERATED, "generations_per_topic": 7, "unique_tokens": "10K"}})


def test_new_keys_stay_out_of_the_dumps_while_unset():
    config = config_with(a={"synthetic": GENERATED})
    assert lookup(config, "experiments.a") == {"description": "", "synthetic": GENERATED,
                                               "mix": lookup(config, "experiments.a.mix")}
    assert "criteria" not in lookup(config, "diversity.cluster_agent")


def test_seeds_expand_to_replicates_sharing_the_synthetic_set():
    config = config_with(a={"synthetic": GENERATED, "seeds": [1, 2, 3]})
    assert config.replicates("a") == ["a", "a-seed2", "a-seed3"]
    assert config.synthetic_set("a-seed3") == "a"
    assert [config.pretrain_for(n).seed for n in config.replicates("a")] == [1, 2, 3]
    assert config.sft_for("a-seed2").seed == 2
    jobs = {job.name: job for job in pipeline.plan(config)}
    assert "generate--a-seed2" not in jobs and "generate--a" in jobs
    for name in ("mix", "pretrain", "sft", "evaluate_pt", "evaluate_sft"):
        assert {f"{name}--a", f"{name}--a-seed2", f"{name}--a-seed3"} <= set(jobs)
    assert jobs["pretrain--a"].fingerprint != jobs["pretrain--a-seed2"].fingerprint
    assert jobs["mix--a-seed2"].inputs["synthetic_tokens"] == jobs["mix--a"].inputs["synthetic_tokens"]


def test_model_size_per_experiment():
    config = config_with(a={"synthetic": GENERATED},
                         b={"synthetic_from": "a", "pretrain": {"model": "1.4b", "global_batch_size": 128,
                                                                "micro_batch_size": 4}})
    assert (config.model_size("a"), config.model_size("b")) == ("tiny", "1.4b")
    assert config.pretrain_for("b").global_batch_size == 128
    assert "experiments.b.pretrain" in stage_params(config, "pretrain", "b")
    assert "experiments.a.pretrain" not in stage_params(config, "pretrain", "a")
    with pytest.raises(ConfigError, match="experiments.b.pretrain: model"):
        config_with(a={"synthetic": GENERATED}, b={"synthetic_from": "a", "pretrain": {"model": "9b"}})


@pytest.mark.parametrize("experiments, message", [
    ({"b": {"synthetic_from": "nope"}}, "'nope' is not an experiment"),
    ({"b": {"synthetic_from": "real_only"}}, "has no synthetic set"),
    ({"b": {"mixed": {"sources": {"real_only": 1, "x": 1}, "unique_tokens": 10}}}, "not an experiment with a generated"),
    ({"b": {"synthetic": GENERATED, "external": {"name": "c", "type": "jsonl", "paths": ["x"]}}}, "at most one"),
    ({"b": {"train": False}}, "has none"),
])
def test_synthetic_set_references_are_checked(experiments, message):
    with pytest.raises(ConfigError, match=message):
        config_with(**experiments)


def test_scorer_variant_is_scored_but_not_trained():
    config = config_with(a={"synthetic": GENERATED},
                         a_k2={"synthetic_from": "a", "train": False,
                               "diversity": {"metrics": ["context_length"], "lexical": {"ngram_max_n": 2}}})
    jobs = {job.name: job for job in pipeline.plan(config)}
    assert "diversity--a_k2" in jobs and "pretrain--a_k2" not in jobs and "generate--a_k2" not in jobs
    assert jobs["diversity--a_k2"].inputs["generations"] == jobs["diversity--a"].inputs["generations"]
    assert config.diversity_for("a_k2").lexical.ngram_max_n == 2
    assert config.diversity_for("a_k2").lexical.tokenizer == config.diversity.lexical.tokenizer


# --- the stage --------------------------------------------------------------------------------------------


def _generations(path: Path, experiment: str, texts: list[str]) -> Path:
    with build_artifact(path, identity=JobIdentity(stage="generate", experiment=experiment), inputs={}) as art:
        pq.write_table(pa.table({"text": texts, "raw_json": [json.dumps({"t": t}) for t in texts]}),
                       art.path / "generations-00000.parquet")
        art.info["shards"] = ["generations-00000.parquet"]
    return path


def test_external_corpus_enters_in_the_generations_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cosmo").mkdir()
    pq.write_table(pa.table({"text": ["a" * 40, "", "b" * 40, "c" * 40], "id": [1, 2, 3, 4]}),
                   tmp_path / "cosmo" / "part-0.parquet")
    external = {"name": "cosmopedia-v0.1", "type": "parquet", "paths": ["cosmo/*.parquet"], "unique_tokens": 15}
    config = write_config(tmp_path, diversity=LIGHT, experiments={"cosmo": {"external": external,
                                                          "mix": {"synthetic_effective_tokens": 100}}})
    out = tmp_path / "set"
    assert synthetic_sets.main(["external", "--config", str(config), "--experiment", "cosmo", "--out", str(out)]) == 0
    shards = generation_shards(out, "cosmo")
    texts = pq.read_table(shards[0])["text"].to_pylist()
    assert texts == ["a" * 40, "b" * 40]  # the empty text skipped; stopped at the 15-token target (10 a text)
    assert read_manifest(out).counts["estimated_tokens"] == 20
    jobs = {job.name: job for job in pipeline.plan(load_config(config))}
    assert jobs["tokenize_synthetic--cosmo"].inputs["generations"].endswith("synthetic_sets/external/cosmo")


def test_external_corpus_without_its_text_column_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.jsonl").write_text('{"content": "x"}\n')
    config = write_config(tmp_path, diversity=LIGHT, experiments={"c": {"external": {"name": "c", "type": "jsonl",
                                                                    "paths": ["c.jsonl"]}}})
    code = synthetic_sets.main(["external", "--config", str(config), "--experiment", "c", "--out", "o"])
    assert code == 2 and not Path("o").exists()
    from workflow_scripts.core.inputs import external_input_problems

    assert any("experiments.c.external" in p and "'text'" in p for p in external_input_problems(load_config(config)))


def test_mixed_set_draws_each_source_in_its_share(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synthetic = {"topics": 2, "generations_per_topic": 1, "template": "topic", "generator": "gen"}
    experiments = {"gen_a": {"synthetic": synthetic}, "gen_b": {"synthetic": {**synthetic, "topics": 3}},
                   "mixed": {"mixed": {"sources": {"gen_a": 3, "gen_b": 1}, "unique_tokens": 40, "seed": 7}}}
    config = write_config(tmp_path, diversity=LIGHT, experiments=experiments)
    a = _generations(tmp_path / "a", "gen_a", [f"a{i}" + "x" * 18 for i in range(10)])   # 5 tokens each
    b = _generations(tmp_path / "b", "gen_b", [f"b{i}" + "y" * 18 for i in range(10)])
    job = {j.name: j for j in pipeline.plan(load_config(config))}["mixed_synthetic--mixed"]
    assert set(job.inputs) == {"generations_gen_a", "generations_gen_b"}
    argv = ["mixed", "--config", str(config), "--experiment", "mixed", "--generations-gen-a", str(a),
            "--generations-gen-b", str(b), "--out", "m"]
    assert synthetic_sets.main(argv) == 0
    sources = read_manifest("m").info["sources"]
    assert sources["gen_a"] == {"documents": 6, "estimated_tokens": 30, "target_tokens": 30}
    assert sources["gen_b"] == {"documents": 2, "estimated_tokens": 10, "target_tokens": 10}
    documents = [json.loads(raw)["t"] for _, raw in iter_documents("m", "mixed")]
    assert len(documents) == 8 and len(set(documents)) == 8
    assert synthetic_sets.main([*argv[:-1], "m2"]) == 0  # seeded: the same draw again
    assert pq.read_table(generation_shards("m2")[0])["text"].to_pylist() == \
        pq.read_table(generation_shards("m")[0])["text"].to_pylist()
