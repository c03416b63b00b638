"""The default's real model (SmolLM2-135M-Instruct) in the roles users rely on: generator and judge.

Slow (the model runs on CPU). The prompts, schemas and decoding are the default's (params.yaml), so
these tests check what `bash scripts/run.sh` produces: documents about their topic, schema-valid within
the default's attempts, and a Cluster-agent that tells a varied corpus from rewordings of one text.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.project import REPO
from tests.real_model_corpora import MANY_DOMAINS, ONE_TEXT_REWORDED
from workflow_scripts.config import load_config
from workflow_scripts.generate.templates import Topic, plan_generation
from workflow_scripts.llm.backends.hf import HFBackend
from workflow_scripts.llm.types import LLMRequest

pytestmark = pytest.mark.slow

TOPICS = [
    Topic("t1", "Biology/Cells/Cell membrane", ("phospholipid", "bilayer", "protein")),
    Topic("t2", "History/Ancient Rome/Roman roads", ("legions", "engineering", "trade")),
    Topic("t3", "Cooking/Baking/Sourdough bread", ("starter", "fermentation", "flour")),
    Topic("t4", "Computer science/Algorithms/Binary search", ("sorted", "midpoint", "logarithmic")),
    Topic("t5", "Economics/Markets/Inflation", ("prices", "money", "interest")),
    Topic("t6", "Geography/Rivers/River deltas", ("sediment", "river", "floodplain")),
    Topic("t7", "Music/Theory/Major scales", ("whole step", "half step", "tonic")),
    Topic("t8", "Health/Nutrition/Dietary fiber", ("digestion", "grains", "bacteria")),
]


@pytest.fixture(scope="module")
def generations(smollm2):
    """One Topic-template document per topic, with the default's settings and retries."""
    import torch

    torch.set_num_threads(2)
    config = load_config(REPO / "params.yaml")
    generation = config.generate
    options = generation.backend_for("smollm2")
    decoding = generation.decoding_for("smollm2")
    backend = HFBackend(str(smollm2), options=options)
    plans = [plan_generation("topic", topic, 0, prompts=generation.prompts, bounds=generation.json_schema,
                             personas=[], global_seed=config.seed, layout="form") for topic in TOPICS]
    answers, first_attempt_valid = {}, 0
    for attempt in range(generation.max_attempts):
        pending = [p for p in plans if p.topic.topic_id not in answers]
        if not pending:
            break
        responses = backend.generate([LLMRequest(
            messages=p.messages, json_schema=p.json_schema, temperature=decoding.temperature, top_p=decoding.top_p,
            max_new_tokens=decoding.max_new_tokens, repetition_penalty=decoding.repetition_penalty,
            seed=1000 * attempt + i) for i, p in enumerate(pending)])
        for plan, response in zip(pending, responses):
            if response.ok:
                answers[plan.topic.topic_id] = response.parsed
        if attempt == 0:
            first_attempt_valid = len(answers)
    return answers, first_attempt_valid


def _words(document: dict) -> str:
    return json.dumps(document, ensure_ascii=False).lower()


def test_every_default_request_gives_a_schema_valid_document_within_the_attempts(generations):
    answers, first_attempt_valid = generations
    assert len(answers) == len(TOPICS)
    assert first_attempt_valid >= len(TOPICS) - 1  # the retries are a safety net, not the rule


def test_documents_name_their_own_topic_more_often_than_the_others(generations):
    answers, _ = generations

    def hits(document: dict, topic: Topic) -> float:
        text = _words(document)
        terms = [*topic.keywords, topic.path.split("/")[-1].split()[-1]]
        return sum(bool(re.search(re.escape(term.lower().rstrip("s")), text)) for term in terms) / len(terms)

    own = [hits(answers[t.topic_id], t) for t in TOPICS]
    other = [hits(answers[t.topic_id], o) for t in TOPICS for o in TOPICS if o is not t]
    assert sum(own) / len(own) > 3 * sum(other) / len(other), (own, other)
    assert sum(h > 0 for h in own) >= len(TOPICS) - 1


def _cluster_agent_score(corpus: list[str], tmp_path, name: str) -> float:
    from workflow_scripts.diversity.__main__ import main

    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    out = tmp_path / f"{name}.json"
    code = main([str(data), "--metrics", "cluster_agent", "--judge", "builtin:smollm2-135m-instruct",
                 "--J", "3", "--M", "2", "--k", "2", "--K", "6", "--N", "4", "--min-items", "1",
                 "--max-items", "1", "--max-string-chars", "70", "--max-sample-chars", "240", "--seeds", "0",
                 "--max-new-tokens", "400", "--repetition-penalty", "1.1", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(out), "--quiet"])
    assert code == 0
    return json.loads(out.read_text())["cluster_agent"]["value"]


def test_the_cluster_agent_scores_many_domains_above_rewordings_of_one_text(smollm2, tmp_path):
    varied = _cluster_agent_score(MANY_DOMAINS, tmp_path, "many")
    alike = _cluster_agent_score(ONE_TEXT_REWORDED, tmp_path, "one")
    assert varied > alike + 1.0, (varied, alike)
