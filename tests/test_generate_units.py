"""Generation: the pieces without a model (requests, templates, schema, rendering, cache, config)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jsonschema
import pytest

from workflow_scripts.config import ConfigError
from workflow_scripts.config.generate import (
    PARAM_KEYS,
    GenerationConfig,
    PromptConfig,
    RenderConfig,
    SchemaBounds,
    resolve_param_keys,
)
from workflow_scripts.core.artifacts import InputError
from workflow_scripts.generate.render import check_document, render_document
from workflow_scripts.core.identity import stage_params
from workflow_scripts.generate.stage import split_config
from workflow_scripts.generate.templates import (
    TEMPLATES,
    Topic,
    document_schema,
    load_personas,
    plan_generation,
)
from workflow_scripts.llm.cache import CachedBackend, RequestCache, request_key
from workflow_scripts.llm.types import LLMRequest, LLMResponse, parse_json_output

TOPICS = [Topic("t1", "Science/Physics/Optics", ("lens", "refraction")),
          Topic("t2", "Science/Biology/Cells", ("membrane",)),
          Topic("t3", "History/Rome/Roads", ("via", "milestone")),
          Topic("t4", "Science/Chemistry/Acids", ("pH",))]
PERSONAS = [f"A reader who {verb} things" for verb in ("builds", "paints", "counts", "sails", "bakes", "grows")]
DOCUMENT = {
    "audience": 2,
    "passages": [{"nuance": "basics", "passage": "Light bends."}, {"nuance": "why", "passage": "Speed changes."},
                 {"nuance": "limits", "passage": "Total internal reflection."}],
    "question": "What makes light bend?",
    "options": ["Colour", "A change of speed", "Heat", "Mass"],
    "answer": "B",
    "explanation": "Refraction follows from the speed change.",
}


def raw_config(**generate):
    return {
        "seed": 3,
        "models": {"gen": {"path": "some/model", "revision": "abc", "backend": "openai"}},
        "real_corpus": {"sources": [{"name": "docs", "kind": "web", "type": "python_stdlib_docs"}],
                        "weights": {"web": 1}},
        "experiments": {"e10": {"synthetic": {"topics": 2, "generations_per_topic": 10, "template": "topic",
                                              "generator": "gen"}}},
        "generate": generate,
    }


def test_request_payload_and_key_cover_everything():
    base = LLMRequest(messages=[{"role": "user", "content": "hi"}], seed=1, json_schema={"type": "object"})
    key = request_key("m@1", base)
    assert key == request_key("m@1", LLMRequest(messages=({"role": "user", "content": "hi"},), seed=1,
                                                 json_schema={"type": "object"}))
    variants = [
        request_key("m@2", base),
        request_key("m@1", LLMRequest(messages=[{"role": "user", "content": "hi!"}], seed=1,
                                      json_schema={"type": "object"})),
        request_key("m@1", LLMRequest(messages=[{"role": "user", "content": "hi"}], seed=2,
                                      json_schema={"type": "object"})),
        request_key("m@1", LLMRequest(messages=[{"role": "user", "content": "hi"}], seed=1)),
        request_key("m@1", LLMRequest(messages=[{"role": "user", "content": "hi"}], seed=1, temperature=0.5,
                                      json_schema={"type": "object"})),
    ]
    assert len({key, *variants}) == 6
    with pytest.raises(ValueError, match="role"):
        LLMRequest(messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="top_p"):
        LLMRequest(messages=[{"role": "user", "content": "x"}], top_p=0)


def test_parse_json_output_checks_schema():
    schema = document_schema(SchemaBounds(), 3)
    value, error = parse_json_output(json.dumps(DOCUMENT), schema)
    assert error is None and value == DOCUMENT
    _, error = parse_json_output('{"passages": [', schema)
    assert error.startswith("invalid JSON")
    bad = dict(DOCUMENT, answer="E")
    _, error = parse_json_output(json.dumps(bad), schema)
    assert "answer" in error


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_build_the_paper_prompt(template):
    prompts = PromptConfig(personas_per_prompt=3, topics_per_prompt=3)
    plan = plan_generation(template, TOPICS[0], 4, prompts=prompts, bounds=SchemaBounds(), personas=PERSONAS,
                           global_seed=11, topic_pool=TOPICS)
    user = plan.messages[-1]["content"]
    assert "Physics > Optics" in user and "refraction" in user
    assert "four" in user and "step by step" in user
    if template == "topic":
        assert plan.style is None and "textbook" in user
    else:
        assert plan.style in ("narrative_textbook", "college_textbook", "blog_post", "wikihow")
    if "persona" in template:
        assert len(plan.personas) == 3 and all(p in user for p in plan.personas)
        assert "audience" in plan.json_schema["properties"]
    else:
        assert not plan.personas and "audience" not in plan.json_schema["properties"]
    if template == "multi_topic_styles_persona":
        assert len(plan.companions) == 2
        # same_domain: companions share the first path component when enough exist
        assert all(t.path.startswith("Science/") for t in plan.companions)
        assert all(t.path.split("/")[-1] in user for t in plan.companions)
    # Same inputs, same request: what makes G=20 reuse G=10.
    again = plan_generation(template, TOPICS[0], 4, prompts=prompts, bounds=SchemaBounds(), personas=PERSONAS,
                            global_seed=11, topic_pool=TOPICS)
    assert again.messages == plan.messages and again.json_schema == plan.json_schema
    jsonschema.Draft202012Validator.check_schema(plan.json_schema)


def test_style_assignment_round_robin_covers_all_styles():
    prompts = PromptConfig(style_assignment="round_robin")
    styles = [plan_generation("topic_styles", TOPICS[1], g, prompts=prompts, bounds=SchemaBounds(),
                              personas=(), global_seed=0).style for g in range(4)]
    assert sorted(styles) == sorted(PromptConfig().styles)


def test_schema_bounds_every_string():
    schema = document_schema(SchemaBounds(max_passage_chars=20), 0)
    passage = schema["properties"]["passages"]["items"]["properties"]["passage"]
    assert passage["pattern"].endswith("{1,20}$")
    jsonschema.validate("x" * 20, passage)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("x" * 21, passage)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate('say "hi"', passage)
    assert document_schema(SchemaBounds(string_mode="free"))["properties"]["question"] == {"type": "string"}


def test_load_personas(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"persona": "A   sailor"}\n\n{"persona": "A baker"}\n{"persona": "A sailor"}\n')
    assert load_personas(good) == ["A sailor", "A baker"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"persona": "ok"}\n{"name": "no persona"}\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        load_personas(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_personas(tmp_path / "missing.jsonl")


def test_shipped_personas_load():
    personas = load_personas("builtin")
    assert len(personas) >= 200 and len(set(personas)) == len(personas)


def test_companions_for_large_pools_are_cheap_and_exclude_the_topic():
    pool = [Topic(f"t{i}", f"D{i % 3}/x/{i}", ()) for i in range(30000)]
    prompts = PromptConfig(topics_per_prompt=4)
    from workflow_scripts.generate.templates import TopicPool

    indexed = TopicPool(pool)
    started = time.perf_counter()
    plans = [plan_generation("multi_topic_styles_persona", pool[i], 0, prompts=prompts, bounds=SchemaBounds(),
                             personas=PERSONAS, global_seed=0, topic_pool=indexed) for i in range(300)]
    assert time.perf_counter() - started < 5
    for plan in plans:
        ids = [t.topic_id for t in plan.companions]
        assert len(ids) == 3 and plan.topic.topic_id not in ids and len(set(ids)) == 3
        assert all(t.path[:2] == plan.topic.path[:2] for t in plan.companions)


def test_render_is_seeded_and_follows_the_paper():
    config = RenderConfig()
    text = render_document(DOCUMENT, config, seed=5)
    assert text == render_document(DOCUMENT, config, seed=5)
    assert "Light bends.\nSpeed changes.\nTotal internal reflection." in text
    assert "basics" not in text and "nuance" not in text
    assert "What makes light bend?" in text
    texts = {render_document(DOCUMENT, config, seed=s) for s in range(60)}
    assert len(texts) > 20
    assert any("(2)" in t for t in texts) and any("B." in t for t in texts) and any("ii." in t for t in texts)
    assert any("Refraction follows" not in t for t in texts) and any("Refraction follows" in t for t in texts)
    never = RenderConfig(explanation_drop_probability=0.0, option_markers=["letter_dot"], answer_forms=["label"],
                         answer_prefixes=["Answer:"], question_lead_ins=["Q:"])
    text = render_document(DOCUMENT, never, seed=1)
    assert "Q: What makes light bend?\n\nA. Colour\nB. A change of speed\nC. Heat\nD. Mass\n\nAnswer: B" in text
    assert text.endswith("Refraction follows from the speed change.")
    always = RenderConfig(explanation_drop_probability=1.0, option_markers=["bullet"], answer_forms=["label"])
    text = render_document(DOCUMENT, always, seed=1)
    assert "Refraction" not in text and "- A change of speed" in text
    assert text.rstrip().endswith("A change of speed")  # bullets have no label: the answer is the option text


def test_check_document():
    assert check_document(DOCUMENT) is None
    assert "blank" in check_document(dict(DOCUMENT, question="  "))
    assert check_document([1]) is not None


class CountingBackend:
    def __init__(self, transient_for=()):
        self.calls = 0
        self.transient_for = set(transient_for)

    def identity(self):
        return "fake:counting@1"

    def generate(self, requests):
        self.calls += len(requests)
        return [LLMResponse(text="", finish_reason="error", error="down", transient=True)
                if r.seed in self.transient_for else LLMResponse(text=f"answer {r.seed}", completion_tokens=2)
                for r in requests]


def test_cached_backend_counts_and_skips_transient(tmp_path):
    requests = [LLMRequest(messages=[{"role": "user", "content": "q"}], seed=s) for s in range(5)]
    inner = CountingBackend(transient_for={3})
    with RequestCache(tmp_path) as cache:
        cached = CachedBackend(inner, cache)
        first = cached.generate(requests + requests[:1])  # a duplicate inside one batch is asked once
        assert inner.calls == 5 and first[0].text == first[5].text == "answer 0"
        assert len(cache) == 4 and cached.transient_errors == 1
        second = cached.generate(requests)
        assert inner.calls == 6  # only the transient one is asked again
        assert [r.text for r in second] == [r.text for r in first[:5]]
        assert cached.hits == 4 and cached.backend_requests == 6  # duplicates in a batch are not hits


class DyingBackend:
    """Answers requests one at a time, then dies (as a killed job would) before the batch is done."""

    def __init__(self, answers_before_dying):
        self.answers_before_dying = answers_before_dying

    def identity(self):
        return "fake:counting@1"

    def generate(self, requests):
        raise AssertionError("the cache must take answers as they come")

    def generate_as_completed(self, requests):
        for index in reversed(range(len(requests))):  # any order
            if len(requests) - index > self.answers_before_dying:
                raise KeyboardInterrupt
            yield index, LLMResponse(text=f"answer {requests[index].seed}")


def test_answers_reach_the_cache_as_they_arrive_so_a_kill_loses_only_those_in_flight(tmp_path):
    requests = [LLMRequest(messages=[{"role": "user", "content": "q"}], seed=s) for s in range(32)]
    with RequestCache(tmp_path) as cache:
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(DyingBackend(answers_before_dying=20), cache).generate(requests)
        assert len(cache) == 20
        rerun = CountingBackend()
        answers = CachedBackend(rerun, cache).generate(requests)
        assert rerun.calls == 12 and [a.text for a in answers] == [f"answer {s}" for s in range(32)]


_WRITER = textwrap.dedent("""
    import sys
    from workflow_scripts.llm.cache import RequestCache, request_key
    from workflow_scripts.llm.types import LLMRequest, LLMResponse
    cache = RequestCache(sys.argv[1])
    seed = 0
    print("ready", flush=True)
    while True:
        items = []
        for _ in range(50):
            r = LLMRequest(messages=[{"role": "user", "content": "x" * 200}], seed=seed)
            items.append((request_key("w", r), "w", r, LLMResponse(text="y" * 500)))
            seed += 1
        cache.put_many(items)
""")


def test_cache_survives_sigkill(tmp_path):
    """A writer killed mid-stream leaves whole records only, readable, with no duplicate."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    with RequestCache(tmp_path) as cache:
        deadline = time.time() + 30
        while len(cache) < 500 and time.time() < deadline:
            time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with RequestCache(tmp_path) as cache:
        count = len(cache)
        assert count >= 500
        lines = [line for shard in (tmp_path / "shards").glob("*.jsonl")
                 for line in shard.read_bytes().split(b"\n")[:-1]]
        keys = [json.loads(line)["key"] for line in lines]  # every complete line is a whole record
        assert len(keys) == len(set(keys)) == count
        # the resumed writer adds the same records again: ignored, not duplicated
        r = LLMRequest(messages=[{"role": "user", "content": "x" * 200}], seed=0)
        assert cache.put_many([(request_key("w", r), "w", r, LLMResponse(text="other"))]) == 0
        assert cache.get_many([request_key("w", r)])[request_key("w", r)].text == "y" * 500


def test_config_section_and_param_keys():
    config, generation = split_config(raw_config(max_attempts=5, decoding={"temperature": 0.7}))
    assert generation.max_attempts == 5 and generation.decoding.temperature == 0.7
    keys = resolve_param_keys(config, "e10")
    assert keys[:3] == ["seed", "experiments.e10.synthetic", "models.gen"] and "generate.render" in keys
    params = stage_params(config, "generate", "e10")
    assert set(params) == set(keys) and "generate.topic_extraction" not in params  # only what the stage reads
    assert params["generate.max_attempts"] == 5 and params["seed"] == 3
    assert params["generate.decoding"]["temperature"] == 0.7 and params["models.gen"]["backend"] == "openai"
    assert "{experiment}" in PARAM_KEYS[1]
    with pytest.raises(ConfigError, match=r"generate\.decoding\.temperatur"):
        split_config(raw_config(decoding={"temperatur": 1.0}))
    with pytest.raises(ConfigError, match="generate.models"):
        split_config(raw_config(models={"unknown": {}}))
    assert GenerationConfig().decoding_for("gen") == GenerationConfig().decoding
