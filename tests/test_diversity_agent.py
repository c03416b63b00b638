"""The LLM Cluster-agent: stages, batching, schemas, retries, cache reuse, conventions, recomputation."""

from __future__ import annotations

import time

import jsonschema
import numpy as np
import polars as pl
import pytest

from workflow_scripts.config.diversity import ClusterAgentConfig, Conventions
from workflow_scripts.diversity.cluster_agent.agent import (
    RECORD_SCHEMA,
    ClusterAgent,
    CriteriaError,
    needed_indices,
    plan_seed,
    sample_labels,
)
from workflow_scripts.diversity.cluster_agent.score import score_records, score_round, summarize
from workflow_scripts.diversity.cluster_agent.scripted import ScriptedJudge, stage_of
from workflow_scripts.llm.cache import CachedBackend, RequestCache

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]


def corpus(distinct_starts: int, size: int = 40) -> dict[int, str]:
    return {i: f"{WORDS[i % distinct_starts]} document number {i}" for i in range(size)}


def config(**overrides) -> ClusterAgentConfig:
    values = dict(judge="judge", J=3, M=2, k=2, K=6, N=4)
    values.update(overrides)
    return ClusterAgentConfig(**values)


def run_agent(judge, cfg, texts, seeds=(0, 1)):
    plans = [plan_seed(seed, np.arange(len(texts)), cfg) for seed in seeds]
    return ClusterAgent(judge, cfg, progress=False).run(plans, texts)


# --- the five stages --------------------------------------------------------------------------------------


def test_five_stages_batched_schema_constrained_and_recorded():
    judge = ScriptedJudge()
    cfg = config()
    result = run_agent(judge, cfg, corpus(10))
    # one generate() call per stage: every seed and round of a stage travel together
    assert [stage_of(call[0].json_schema) for call in judge.calls] == \
        ["generation", "gathering", "summary", "clustering", "verification"]
    assert [len(call) for call in judge.calls[:4]] == [2 * cfg.M, 2 * 2, 2, 2 * cfg.N]
    for call in judge.calls:
        for request in call:
            assert request.json_schema is not None
            jsonschema.validate(judge._answer(request).parsed, request.json_schema)
    clustering = judge.calls[3][0].json_schema
    member_enum = clustering["properties"]["clusters"]["items"]["properties"]["members"]["items"]["enum"]
    assert member_enum == sample_labels(cfg.K)
    # criteria header: metadata and metric sentences interleaved
    header = result.criteria[0]["header"].splitlines()
    assert header[1:] == ["1. Compare metadata 1.", "2. Rate metric 1.", "3. Compare metadata 2.", "4. Rate metric 2."]
    assert result.criteria[0]["header"] in judge.calls[3][0].messages[-1]["content"]
    records = result.records
    assert records.schema == pl.Schema(RECORD_SCHEMA)
    assert records.height == 2 * cfg.N and set(records["status"]) == {"ok"}
    row = records.row(0, named=True)
    members = sorted(m for c in row["clusters"] for m in c["members"])
    assert members == sorted(row["sample_ids"])  # every sample in exactly one cluster
    for cluster in row["clusters"]:
        assert len(cluster["scores"]) == 2 and all(1 <= s <= 5 for s in cluster["scores"])
        assert cluster["checked"] == (len(cluster["members"]) > 1)
        if len(cluster["members"]) == 1:
            assert cluster["valid"] is None  # singletons are valid without a call


def test_verification_marks_invalid_clusters_and_drop_removes_them():
    texts = {i: f"{'alpha' if i % 2 else 'beta'} text {i}" for i in range(20)}
    cfg = config(K=8, N=3)
    records = run_agent(ScriptedJudge(max_valid_size=3), cfg, texts, seeds=(0,)).records
    # two first words -> two clusters of ~4; the scripted verifier rejects clusters of more than 3
    row = records.row(0, named=True)
    sizes_valid = [(len(c["members"]), c["valid"]) for c in row["clusters"]]
    assert all(valid == (size <= 3) for size, valid in sizes_valid)
    by_convention = {}
    for invalid in ("drop", "singletons", "keep"):
        by_convention[invalid] = score_records(records, Conventions(invalid_clusters=invalid))[0]["value"]
    assert by_convention["singletons"] > by_convention["keep"]


def test_near_duplicates_get_a_lower_score():
    cfg = config(K=8, N=6)
    varied = score_records(run_agent(ScriptedJudge(max_valid_size=8), cfg, corpus(10)).records, cfg.conventions)
    similar = score_records(run_agent(ScriptedJudge(max_valid_size=8), cfg, corpus(2)).records, cfg.conventions)
    assert similar[0]["value"] < varied[0]["value"]


def test_without_verification_no_verifier_calls():
    judge = ScriptedJudge()
    records = run_agent(judge, config(verification=False), corpus(3)).records
    assert len(judge.calls) == 4
    assert set(records["verification"]) == {"disabled"}


def test_handwritten_criteria_skip_stages_one_to_three():
    criteria = {"metadata": [{"name": "domain", "description": "The field the text belongs to."}],
                "metrics": [{"name": "depth", "description": "How deep the text goes.",
                             "rubric": ["none", "little", "some", "much", "expert"]}]}
    judge = ScriptedJudge()
    run = run_agent(judge, config(criteria=criteria), corpus(3))
    assert [stage_of(call[0].json_schema) for call in judge.calls] == ["clustering", "verification"]
    assert run.records["criteria"][0].endswith("1. The field the text belongs to.\n2. How deep the text goes.")
    assert all(log["handwritten"] for log in run.criteria.values())


# --- retries and failures ---------------------------------------------------------------------------------


def test_failed_first_attempts_are_retried_with_new_seeds():
    judge = ScriptedJudge(fail_first=["clustering"])
    cfg = config()
    agent_result = run_agent(judge, cfg, corpus(10), seeds=(0,))
    clustering_calls = [c for c in judge.calls if stage_of(c[0].json_schema) == "clustering"]
    assert len(clustering_calls) == 2  # first attempt (all fail), one retry
    first, retry = clustering_calls
    assert {r.seed for r in first}.isdisjoint({r.seed for r in retry})
    assert retry[0].temperature == cfg.decoding.retry_temperature
    assert set(agent_result.records["clustering_attempts"]) == {2}
    assert agent_result.usage["clustering"].calls == 2 * cfg.N


def test_rounds_failing_every_attempt_are_recorded_and_skipped():
    judge = ScriptedJudge(fail_first=["clustering"])
    result = run_agent(judge, config(max_attempts=1, decoding={"retry_temperature": 0.0}), corpus(10), seeds=(0,))
    assert set(result.records["status"]) == {"failed"}
    assert result.records["error"][0].startswith("clustering:")
    scored = score_records(result.records, Conventions())[0]
    assert scored["rounds_failed"] == 4 and np.isnan(scored["value"])
    assert score_records(result.records, Conventions(failed_rounds="zero"))[0]["value"] == 0.0


def test_criteria_failure_is_an_error():
    with pytest.raises(CriteriaError, match="no usable metadata"):
        run_agent(ScriptedJudge(fail_first=["generation"]), config(max_attempts=1), corpus(10), seeds=(0,))


# --- determinism and cache reuse --------------------------------------------------------------------------


def test_raising_n_reuses_paid_rounds(tmp_path):
    texts = corpus(5)
    with RequestCache(tmp_path / "cache") as cache:
        small = CachedBackend(ScriptedJudge(), cache)
        first = run_agent(small, config(N=3), texts)
        larger = CachedBackend(ScriptedJudge(), cache)
        second = run_agent(larger, config(N=5), texts)
    # only the two new rounds per seed (clustering + their verification) reach the judge
    new_rounds = 2 * 2
    assert larger.backend_requests <= 2 * new_rounds
    assert larger.backend_requests >= new_rounds
    old = second.records.filter(pl.col("round") < 3)
    assert old.drop("prompt_tokens", "completion_tokens").equals(
        first.records.drop("prompt_tokens", "completion_tokens"))


def test_plans_depend_only_on_seed_and_round():
    pool = np.arange(100)
    a = plan_seed(3, pool, config(N=2))
    b = plan_seed(3, pool, config(N=5))
    assert all((x == y).all() for x, y in zip(a.clustering_samples, b.clustering_samples))
    assert all(len(set(s.tolist())) == 6 for s in b.clustering_samples)
    c = plan_seed(4, pool, config(N=2))
    assert not all((x == y).all() for x, y in zip(a.clustering_samples, c.clustering_samples))
    assert set(needed_indices([a]).tolist()) == {int(i) for s in (*a.generation_samples, *a.clustering_samples)
                                                 for i in s}


# --- conventions and recomputation ------------------------------------------------------------------------


def test_score_round_conventions_by_hand():
    samples = [10, 11, 12, 13, 14]
    clusters = [
        {"members": [10, 11], "valid": True},
        {"members": [12, 13], "valid": False},
        {"members": [11], "valid": None},   # 11 already placed: dropped, cluster empties
    ]                                       # 14 unassigned
    default = score_round(samples, clusters, Conventions())
    assert (default.clusters, default.samples, default.invalid, default.unassigned) == (1, 2, 1, 1)
    assert default.value == pytest.approx(1 / 2)             # C^2 / n
    singles = score_round(samples, clusters, Conventions(invalid_clusters="singletons",
                                                         unassigned_samples="singletons"))
    assert (singles.clusters, singles.samples) == (4, 5)     # {10,11}, {12}, {13}, {14}
    assert singles.value == pytest.approx(16 / 5)
    keep = score_round(samples, clusters, Conventions(invalid_clusters="keep", cluster_size="round_size"))
    assert keep.value == pytest.approx(2 / 5)                # C / K
    assert score_round(samples, [{"members": [10], "valid": False}], Conventions()).value == 0.0


def test_recompute_from_parquet_without_llm(tmp_path):
    cfg = config(N=5)
    result = run_agent(ScriptedJudge(max_valid_size=1), cfg, corpus(4))
    path = tmp_path / "cluster_rounds.parquet"
    result.records.write_parquet(path)
    stored = pl.read_parquet(path)
    for conventions in (Conventions(), Conventions(invalid_clusters="singletons", cluster_size="round_size")):
        assert score_records(stored, conventions) == score_records(result.records, conventions)
    three = score_records(stored, Conventions(), rounds=3)
    assert all(v["rounds"] == 3 for v in three.values())


def test_summarize_bootstrap():
    summary = summarize({0: 1.0, 1: 2.0, 2: 3.0})
    assert summary["mean"] == 2.0 and summary["std"] == pytest.approx(1.0)
    assert summary["per_seed"] == {"0": 1.0, "1": 2.0, "2": 3.0}
    assert summarize({0: 4.0})["std"] == 0.0


# --- a real model ------------------------------------------------------------------------------------------


def test_tiny_hf_judge_gives_schema_valid_answers(tiny_llama_dir):
    import torch

    from workflow_scripts.config import ModelSpec
    from workflow_scripts.llm.loader import load_backend

    torch.set_num_threads(1)
    started = time.perf_counter()
    backend = load_backend(ModelSpec(path=str(tiny_llama_dir)), None, {"device": "cpu", "batch_size": 4})
    cfg = ClusterAgentConfig(judge="tiny", J=1, M=1, k=1, K=2, N=2, min_items=1, max_items=1,
                             max_sample_chars=60, decoding={"max_new_tokens": 400},
                             strings={"max_name_chars": 8, "max_sentence_chars": 12, "max_reason_chars": 12,
                                      "max_value_chars": 8})
    texts = {i: t for i, t in enumerate(["The river runs.", "def f(): pass", "Primes are odd.", "Rain falls."])}
    result = run_agent(backend, cfg, texts, seeds=(0,))
    assert all(u.failures == 0 for u in result.usage.values())  # every answer parsed and schema-valid
    assert set(result.records["status"]) == {"ok"}
    for row in result.records.iter_rows(named=True):
        assert row["clusters"] and all(set(c["members"]) <= set(row["sample_ids"]) for c in row["clusters"])
    assert result.usage["clustering"].prompt_tokens > 0
    assert time.perf_counter() - started < 60


# --- the labels answer (small judges) ---------------------------------------------------------------------


def test_labels_answer_asks_once_per_text_and_clusters_equal_labels():
    judge = ScriptedJudge(max_valid_size=10)
    cfg = config(clustering_answer="labels", N=6)
    texts = corpus(10)
    result = run_agent(judge, cfg, texts)
    stages = [stage_of(call[0].json_schema) for call in judge.calls]
    assert stages == ["generation", "gathering", "summary", "labeling", "verification"]
    plans = [plan_seed(seed, np.arange(len(texts)), cfg) for seed in (0, 1)]
    drawn = {int(i) for plan in plans for sample in plan.clustering_samples for i in sample}
    assert len(judge.calls[3]) == len(drawn)  # one request per distinct text, not per round and position
    for row in result.records.iter_rows(named=True):
        assert row["status"] == "ok"
        members = sorted(m for cluster in row["clusters"] for m in cluster["members"])
        assert members == sorted(row["sample_ids"])
        for cluster in row["clusters"]:
            assert len({texts[m].split()[0] for m in cluster["members"]}) == 1
            assert cluster["uniqueness"] == texts[cluster["members"][0]].split()[0]
    varied = score_records(result.records, Conventions())
    alike = score_records(run_agent(ScriptedJudge(max_valid_size=10), cfg, corpus(2)).records, Conventions())
    assert min(v["value"] for v in varied.values()) > max(v["value"] for v in alike.values())


def test_labels_differing_only_in_case_or_punctuation_are_one_cluster():
    from workflow_scripts.diversity.cluster_agent.agent import clusters_from_labels

    value = {"S1": "Cell biology", "S2": "cell  biology!", "S3": "Rivers", "S4": ""}
    clusters = clusters_from_labels(value, ["S1", "S2", "S3", "S4"])["clusters"]
    assert [c["members"] for c in clusters] == [["S1", "S2"], ["S3"], ["S4"]]
