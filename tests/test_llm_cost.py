"""Cost and budgets: dollars from token counts, prices outside fingerprints, manifests' tokens and dollars,
a budget that stops a stage before it overspends and resumes from the cache, prompts laid out for caching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import pytest
import yaml

from workflow_scripts.config import parse_config
from workflow_scripts.config.root import Price
from workflow_scripts.core.artifacts import JobIdentity, build_artifact, read_manifest, read_run_facts
from workflow_scripts.llm.cost import (
    Budget,
    BudgetedBackend,
    BudgetExceeded,
    Usage,
    cost_usd,
    estimate_usage,
    usage_counts,
)
from workflow_scripts.llm.types import LLMRequest, LLMResponse, finish_response

from tests.helpers import minimal_config

GPT4O = Price(input_per_mtok=2.50, cached_input_per_mtok=1.25, output_per_mtok=10.00, batch_discount=0.5)


# --- arithmetic -----------------------------------------------------------------------------------------------


def test_cost_by_hand():
    usage = Usage(requests=3, prompt_tokens=1_000_000, cached_prompt_tokens=400_000, completion_tokens=200_000)
    # 600K uncached x $2.50 + 400K cached x $1.25 + 200K out x $10 = 1.50 + 0.50 + 2.00
    assert cost_usd(usage, GPT4O) == 4.0
    assert cost_usd(usage, GPT4O, "batch") == 2.0
    from workflow_scripts.config.generate import BackendOptions
    from workflow_scripts.llm.cost import backend_mode

    assert backend_mode(BackendOptions(mode="batch")) == "batch" and backend_mode(BackendOptions()) == "online"
    assert cost_usd(usage, None) == 0.0  # a local model has no price
    no_cache_price = Price(input_per_mtok=30, output_per_mtok=60)  # cached tokens cost the input price
    assert cost_usd(usage, no_cache_price) == 30 + 12
    assert usage.cached_share == 0.4
    counts = usage_counts(usage, GPT4O, "online", prefix="judge_")
    assert counts == {"judge_prompt_tokens": 1_000_000, "judge_cached_prompt_tokens": 400_000,
                      "judge_cached_prompt_share": 0.4, "judge_completion_tokens": 200_000, "judge_cost_usd": 4.0}


def test_usage_adds_responses_and_estimate_is_an_upper_bound():
    answers = [LLMResponse("a", prompt_tokens=100, cached_prompt_tokens=64, completion_tokens=7),
               LLMResponse("b", prompt_tokens=50, completion_tokens=3)]
    assert Usage().add(answers) == Usage(2, 150, 64, 10)
    request = LLMRequest(messages=[{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 81}],
                         max_new_tokens=300)
    # 121 characters at 4 a token (rounded up) + 4 tokens per message; the completion at max_new_tokens
    assert estimate_usage([request, request]) == Usage(2, 2 * (31 + 8), 0, 600)


# --- prices and budgets change no fingerprint -----------------------------------------------------------------


def _api_config(price: dict | None = None, budget: float | None = None, judge_budget: float | None = None,
                path: str = "gpt-4o-2024-08-06") -> dict:
    model = {"path": path, "revision": "2024-08-06", "backend": "openai"}
    if price is not None:
        model["price"] = price
    return minimal_config(
        models={"api": model},
        local_models={"models": {}},
        experiments={"x": {"synthetic": {"topics": 12, "generations_per_topic": 2, "template": "topic",
                                         "generator": "api"}}},  # the 24 texts the diversity test scores
        generate={"budget_usd": budget},
        diversity={"metrics": ["context_length", "cluster_agent"],
                   "cluster_agent": {"judge": "api", "budget_usd": judge_budget}},
    )


def test_price_and_budgets_enter_no_fingerprint():
    from workflow_scripts.core.identity import fingerprint, stage_params

    def prints(raw):
        config = parse_config(raw)
        return [fingerprint(config, stage, "x", []) for stage in ("generate", "diversity", "report")]

    base = prints(_api_config())
    priced = prints(_api_config(price={"input_per_mtok": 2.5, "output_per_mtok": 10}, budget=5.0, judge_budget=1.0))
    assert priced == base
    assert prints(_api_config(path="gpt-4o-2024-11-20")) != base  # what does change the answers still counts
    params = stage_params(parse_config(_api_config(price={"input_per_mtok": 1, "output_per_mtok": 2})), "generate", "x")
    assert "price" not in params["models.api"] and params["models.api"]["path"] == "gpt-4o-2024-08-06"


def test_dvc_params_leave_out_prices_and_budgets():
    from workflow_scripts.dvc_yaml import dvc_params

    raw = _api_config(price={"input_per_mtok": 1, "output_per_mtok": 2}, judge_budget=1.0)
    keys = dvc_params(raw, ("models.api", "diversity", "generate.budget_usd", "seed"))
    assert "models.api.path" in keys and "models.api.price" not in keys and "models.api" not in keys
    assert "diversity.metrics" in keys and "diversity.cluster_agent.judge" in keys
    assert not any("budget_usd" in key for key in keys)
    assert dvc_params(minimal_config(), ("models.gen", "seed")) == ["models.gen", "seed"]  # nothing to leave out


# --- the budget --------------------------------------------------------------------------------------------------


def _instance(schema: dict[str, Any], index: int = 0) -> Any:
    """A small value valid under the generation and judge schemas (strings bounded by patterns or free)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _instance(schema["properties"][name], i) for i, name in enumerate(schema["required"])}
    if kind == "array":
        return [_instance(schema["items"], i) for i in range(schema.get("minItems", 1))]
    if kind == "integer":
        return schema.get("minimum", 1)
    return f"w{index}"


class PricedStandIn:
    """An API stand-in: schema-valid answers, every completion as long as max_new_tokens (so the budget's
    upper-bound estimate is exact) and, when asked, part of the prompt reported as provider-cached."""

    def __init__(self, cached_share: float = 0.0) -> None:
        self.cached_share = cached_share
        self.requests: list[LLMRequest] = []

    def identity(self) -> str:
        return "openai:stand-in@1"

    def generate(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self.requests.extend(requests)
        answers = []
        for request in requests:
            answer = finish_response(json.dumps(_instance(request.json_schema or {})), request, 100,
                                     request.max_new_tokens, "stop")
            answer.cached_prompt_tokens = int(100 * self.cached_share)
            answers.append(answer)
        return answers


TOPICS = ["Science/Physics/Optics", "Science/Biology/Cells", "History/Rome/Roads"]


@pytest.fixture()
def topics_dir(tmp_path) -> Path:
    with build_artifact(tmp_path / "topics", identity=JobIdentity(stage="sample_topics"), inputs={}) as art:
        pl.DataFrame({"topic_id": [f"t{i}" for i in range(3)], "path": TOPICS,
                      "keywords": [[p.split("/")[-1].lower()] for p in TOPICS]}).write_parquet(
            art.path / "topics.parquet")
    return tmp_path / "topics"


def _generation_config(backend_options: dict, budget: float | None, price: dict) -> dict:
    return minimal_config(
        models={"api": {"path": "stand-in", "revision": "1", "backend": "openai", "price": price}},
        local_models={"models": {}},
        experiments={"x": {"synthetic": {"topics": 3, "generations_per_topic": 2, "template": "topic",
                                         "generator": "api"}}},
        generate={"decoding": {"max_new_tokens": 300}, "json_schema": {"string_mode": "free"},
                  "models": {"api": {"backend": backend_options}}, "max_attempts": 1, "requests_per_batch": 2,
                  "budget_usd": budget},
        diversity={"metrics": ["context_length"]},
    )


def test_manifest_records_tokens_and_dollars_of_the_answers_it_uses(tmp_path, topics_dir):
    from workflow_scripts.generate.stage import run_stage

    price = {"input_per_mtok": 2.5, "cached_input_per_mtok": 1.25, "output_per_mtok": 10.0}
    config = parse_config(_generation_config({}, None, price))
    stand_in = PricedStandIn(cached_share=0.64)
    for out in ("first", "again"):
        run_stage(config, config.generate, experiment="x", topics_dir=topics_dir, cache_dir=tmp_path / "cache",
                  out=tmp_path / out, backend=stand_in, progress=False)
    first, again = (read_manifest(tmp_path / out, stage="generate") for out in ("first", "again"))
    # 6 answers: 6 x (36 uncached x $2.50 + 64 cached x $1.25 + 300 out x $10) / 1M
    expected = 6 * (36 * 2.5 + 64 * 1.25 + 300 * 10) / 1e6
    assert first.counts["prompt_tokens"] == 600 and first.counts["cached_prompt_tokens"] == 384
    assert first.counts["cached_prompt_share"] == 0.64 and first.counts["completion_tokens"] == 1800
    assert first.counts["cost_usd"] == pytest.approx(expected)
    assert first.info["price"]["input_per_mtok"] == 2.5 and first.info["billing"] == "online"
    # as if all were paid: the same for the rerun answered from the cache, which paid nothing
    assert {k: again.counts[k] for k in ("cost_usd", "prompt_tokens")} == \
        {k: first.counts[k] for k in ("cost_usd", "prompt_tokens")}
    assert read_run_facts(tmp_path / "first")["paid_cost_usd"] == pytest.approx(expected)
    assert read_run_facts(tmp_path / "again")["paid_cost_usd"] == 0 and len(stand_in.requests) == 6


def test_budget_stops_before_overspending_and_a_larger_budget_resumes(tmp_path, topics_dir, capsys):
    """Through the OpenAI-compatible HTTP backend and the local server: the first run stops with a one-line
    message and publishes nothing; the second, with a larger budget, sends only the remaining requests."""
    from workflow_scripts.generate.stage import main
    from workflow_scripts.llm.server import ChatServer

    stand_in = PricedStandIn()
    server = ChatServer(stand_in, port=0, model_name="stand-in", batch_size=2)
    server.start()
    price = {"input_per_mtok": 0.0, "output_per_mtok": 10.0}  # a request costs 300 x $10 / 1M = $0.003
    options = {"base_url": server.base_url, "api_key_env": None, "max_concurrency": 2}

    def run(budget: float) -> int:
        config_file = tmp_path / f"config-{budget}.yaml"
        config_file.write_text(yaml.safe_dump(_generation_config(options, budget, price)))
        return main(["--config", str(config_file), "--experiment", "x", "--topics", str(topics_dir),
                     "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--no-progress"])

    try:
        # the first batch of 2 ($0.006) fits in $0.007; the second would take the spend to $0.012
        assert run(0.007) == BudgetExceeded.exit_code
        stopped = [line for line in capsys.readouterr().err.splitlines() if "generate.budget_usd" in line]
        assert len(stopped) == 1
        assert "$0.0060" in stopped[0] and "$0.0070" in stopped[0] and "raise generate.budget_usd" in stopped[0]
        assert server.completion_calls == 2
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))
        assert run(0.007) == BudgetExceeded.exit_code and server.completion_calls == 2  # same budget: no spend
        assert run(1.0) == 0
    finally:
        server.stop()
    assert server.completion_calls == 6  # the 2 answered before the stop came from the cache
    manifest = read_manifest(tmp_path / "out", stage="generate")
    assert manifest.counts["generations"] == 6 and read_run_facts(tmp_path / "out")["cache_hits"] == 2
    assert manifest.counts["cost_usd"] == pytest.approx(0.018)
    facts = read_run_facts(tmp_path / "out")
    assert facts["paid_requests"] == 4 and facts["paid_cost_usd"] == pytest.approx(0.012)


def test_judge_budget_stops_and_resumes_from_the_cache(tmp_path):
    from workflow_scripts.config.diversity import ClusterAgentConfig
    from workflow_scripts.diversity.cluster_agent.agent import ClusterAgent, plan_seed
    from workflow_scripts.diversity.cluster_agent.scripted import ScriptedJudge
    from workflow_scripts.llm.cache import CachedBackend, RequestCache

    texts = {i: f"{['alpha', 'beta', 'gamma'][i % 3]} document {i}" for i in range(30)}
    config = ClusterAgentConfig(judge="j", J=3, M=2, k=2, K=6, N=3, requests_per_batch=1,
                                decoding={"max_new_tokens": 1000})  # each request estimated at ~$0.0011
    plans = [plan_seed(0, np.arange(len(texts)), config)]
    price = Price(input_per_mtok=1.0, output_per_mtok=1.0)
    with RequestCache(tmp_path / "cache") as cache:
        first_judge = ScriptedJudge()
        budget = Budget(0.0015, price, "online", "diversity.cluster_agent.budget_usd")
        with pytest.raises(BudgetExceeded, match=r"over diversity.cluster_agent.budget_usd = \$0.0015"):
            ClusterAgent(BudgetedBackend(CachedBackend(first_judge, cache), budget), config, progress=False).run(
                plans, texts)
        assert 0 < len(first_judge.calls) < 11 and budget.spent_usd <= 0.0015
        sent_before = sum(len(call) for call in first_judge.calls)
        second_judge = ScriptedJudge()
        resumed = BudgetedBackend(CachedBackend(second_judge, cache), Budget(10.0, price, "online", "b"))
        ClusterAgent(resumed, config, progress=False).run(plans, texts)
    assert resumed.hits == sent_before  # the answers bought before the stop were not bought again
    assert resumed.budget.paid.requests == sum(len(call) for call in second_judge.calls)


def test_diversity_summary_shows_the_judge_cost(tmp_path):
    from workflow_scripts.diversity.summary import cost_markdown, judge_costs

    counts = {"judge_prompt_tokens": 12_000, "judge_cached_prompt_share": 0.25, "judge_completion_tokens": 3_000,
              "judge_cost_usd": 0.06}
    with build_artifact(tmp_path / "d", identity=JobIdentity(stage="diversity", experiment="x"), inputs={}) as art:
        art.counts.update(counts)
    table = cost_markdown(judge_costs([tmp_path / "d"]))
    assert "| x | 12,000 | 25.0% | 3,000 | 0.06 |" in table


# --- prompts laid out for prompt caching -----------------------------------------------------------------------


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_cluster_agent_prompts_put_the_criteria_and_instructions_before_the_documents():
    from workflow_scripts.diversity.cluster_agent import prompts

    criteria = prompts.Criteria((prompts.Item("field", "its field"),),
                                (prompts.Item("depth", "how deep", ("1", "2", "3", "4", "5")),),
                                (("Compare the field of knowledge.", "Compare the depth."),))
    labels = ["S1", "S2"]
    one = prompts.clustering_prompt(criteria, labels, ["first text about rivers", "second text about rain"])
    two = prompts.clustering_prompt(criteria, labels, ["other text about trains", "more text about roads"])
    shared = _common_prefix(one[1]["content"], two[1]["content"])
    assert one[0] == two[0]  # the system prompt
    assert shared.startswith(criteria.header()) and "Group these 2 documents" in shared
    assert "Answer with JSON shaped like" in shared and "rivers" not in shared
    assert one[1]["content"].endswith("second text about rain\n>>>")
    check = [prompts.verification_prompt(criteria, labels, texts, [("C1", labels, "alike")], ["C1"])
             for texts in (["a river", "the rain"], ["a train", "the road"])]
    shared = _common_prefix(check[0][1]["content"], check[1][1]["content"])
    assert shared.startswith(criteria.header()) and "valid = 0 if it should be split" in shared
    one, two = (prompts.generation_prompt(texts, 3, 5) for texts in (["rivers", "rain"], ["trains", "roads"]))
    assert "rubric of five levels" in _common_prefix(one[1]["content"], two[1]["content"])


def test_generation_prompts_put_the_task_before_the_topic():
    from workflow_scripts.config.generate import PromptConfig, SchemaBounds
    from workflow_scripts.generate.templates import Topic, plan_generation

    topics = [Topic("t1", "Science/Physics/Optics", ("lens",)), Topic("t2", "History/Rome/Roads", ("road",))]
    for template in ("topic", "topic_styles_persona", "multi_topic_styles_persona"):
        one, two = (plan_generation(template, topic, 0, prompts=PromptConfig(personas_per_prompt=2),
                                    bounds=SchemaBounds(), personas=["A nurse", "A pilot", "A cook"],
                                    global_seed=1, topic_pool=topics).messages[1]["content"] for topic in topics)
        shared = _common_prefix(one, two)
        assert "Reply with JSON only" in shared and "multiple-choice question" in shared, template
        assert "Optics" not in shared and "Rome" not in shared
        assert one.rstrip().endswith(("(keywords: lens)", "(keywords: road)")), template


def test_diversity_manifest_records_the_judges_tokens_and_dollars_and_its_budget_stops(tmp_path, capsys):
    """The diversity stage with an API judge (the scripted judge behind the local OpenAI-compatible server)."""
    from workflow_scripts.diversity import stage
    from workflow_scripts.diversity.cluster_agent.scripted import ScriptedJudge
    from workflow_scripts.llm.server import ChatServer

    generations = tmp_path / "generations"
    with build_artifact(generations, identity=JobIdentity(stage="generate", experiment="x"), inputs={}) as art:
        pl.DataFrame({"text": [f"{['alpha', 'beta', 'gamma'][i % 3]} text number {i}" for i in range(24)]}) \
            .write_parquet(art.path / "part-0.parquet")
        art.info["shards"] = ["part-0.parquet"]
    server = ChatServer(ScriptedJudge(), port=0, model_name="judge", batch_size=8)
    server.start()

    def run(budget: float | None, out: str) -> int:
        raw = _api_config(price={"input_per_mtok": 1.0, "output_per_mtok": 4.0}, judge_budget=budget, path="judge")
        raw["diversity"]["bootstrap"] = {"seeds": [0]}
        raw["diversity"]["cluster_agent"].update(
            J=3, M=2, k=2, K=6, N=3, decoding={"max_new_tokens": 200}, requests_per_batch=1,
            backend={"base_url": server.base_url, "api_key_env": None, "max_concurrency": 4})
        config_file = tmp_path / f"config-{out}.yaml"
        config_file.write_text(yaml.safe_dump(raw))
        return stage.main(["--config", str(config_file), "--experiment", "x", "--generations", str(generations),
                           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / out), "--no-progress"])

    try:
        # a request is estimated at ~$0.001 (200 tokens out at $4/M + the prompt) and costs ~$0.0002
        assert run(0.0012, "stopped") == BudgetExceeded.exit_code
        assert "over diversity.cluster_agent.budget_usd = $0.0012" in capsys.readouterr().err
        assert not (tmp_path / "stopped").exists()
        calls_before = server.completion_calls
        assert 0 < calls_before
        assert run(None, "out") == 0
    finally:
        server.stop()
    counts = read_manifest(tmp_path / "out", stage="diversity").counts
    tokens = (counts["judge_prompt_tokens"], counts["judge_completion_tokens"])
    assert min(tokens) > 0 and counts["judge_cached_prompt_share"] == 0
    assert counts["judge_cost_usd"] == pytest.approx((tokens[0] * 1.0 + tokens[1] * 4.0) / 1e6)
    facts = read_run_facts(tmp_path / "out")
    assert facts["judge_paid_requests"] == server.completion_calls - calls_before  # the rest, not the first ones
    assert 0 < facts["judge_paid_cost_usd"] < counts["judge_cost_usd"]
