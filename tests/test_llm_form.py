"""The form layout of structured output: schema -> labelled lines -> JSON document, and the transformers
backend filling a form with a tiny random model (the schema-valid answer does not depend on the model)."""

from __future__ import annotations

import jsonschema
import pytest

from workflow_scripts.config import ModelSpec
from workflow_scripts.config.generate import BackendOptions, PromptConfig, SchemaBounds
from workflow_scripts.diversity.cluster_agent import schemas
from workflow_scripts.config.diversity import StringBounds
from workflow_scripts.generate.templates import Topic, document_schema, plan_generation
from workflow_scripts.llm.form import FormError, assemble, clean_text_value, form_fields
from workflow_scripts.llm.loader import load_backend
from workflow_scripts.llm.types import LLMRequest

BOUNDS = SchemaBounds(min_passages=2, max_passages=4, max_nuance_chars=20, max_passage_chars=60,
                      max_question_chars=40, max_option_chars=20, max_explanation_chars=40)


def test_generation_schema_reads_as_a_form_in_document_order():
    fields = form_fields(document_schema(BOUNDS, n_personas=3))
    assert [f.label for f in fields] == [
        "Reader", "Passage 1 heading", "Passage 1", "Passage 2 heading", "Passage 2", "Question",
        "Option A", "Option B", "Option C", "Option D", "Answer", "Explanation"]
    assert fields[0].choices == (1, 2, 3) and fields[-2].choice_texts == ("A", "B", "C", "D")
    assert fields[2].max_chars == 60 and fields[1].max_chars == 20


def test_assembled_values_make_a_schema_valid_document():
    schema = document_schema(BOUNDS, n_personas=0)
    values = ["basics", "Light bends in water.", "deeper", "The angle depends on speed.", "Why does light bend?",
              "speed", "colour", "heat", "mass", "A", "Light is slower in water."]
    document = assemble(schema, values)
    jsonschema.validate(document, schema)
    assert document["passages"][1] == {"nuance": "deeper", "passage": "The angle depends on speed."}
    assert document["options"] == ["speed", "colour", "heat", "mass"]
    with pytest.raises(FormError, match="more values"):
        assemble(schema, values + ["extra"])


def test_cluster_agent_schemas_are_forms_with_unique_labels():
    bounds = StringBounds()
    for schema in (schemas.generation_schema(1, 2, bounds), schemas.gathering_schema("metrics", 2, bounds),
                   schemas.summary_schema(2, bounds), schemas.verification_schema(["C1", "C2"], bounds),
                   schemas.labeling_schema(bounds)):
        labels = [f.label for f in form_fields(schema)]
        assert len(labels) == len(set(labels)) > 0


def test_unsupported_schemas_are_refused_with_the_place():
    with pytest.raises(FormError, match=r"\(root\)/n: type 'number' needs an enum"):
        form_fields({"type": "object", "properties": {"n": {"type": "number"}}})
    with pytest.raises(FormError, match="share the label"):
        form_fields({"type": "object", "properties": {"a_b": {"type": "string"}, "a b": {"type": "string"}}})


def test_clean_text_value_keeps_one_safe_line_within_bounds():
    assert clean_text_value(' "Light" bends\\ in water\nnext line', None) == "'Light' bends in water"
    assert clean_text_value("one two three four five", 12) == "one two"
    assert clean_text_value("**Bold heading**", None) == "Bold heading"
    assert clean_text_value("'Cells divide", None) == "Cells divide"
    assert clean_text_value("Cells divide. Then they grow and grow", 24) == "Cells divide."


@pytest.fixture(scope="module")
def form_backend(tiny_llama_dir):
    import torch

    torch.set_num_threads(1)
    return load_backend(ModelSpec(path=str(tiny_llama_dir)),
                        options=BackendOptions(device="cpu", batch_size=4, structured_output="form"))


def _requests(layout="form", n=4):
    topic = Topic("t1", "Science/Physics/Optics", ("lens", "light"))
    requests = []
    for g in range(n):
        plan = plan_generation("topic_styles_persona", topic, g, prompts=PromptConfig(personas_per_prompt=2),
                               bounds=BOUNDS, personas=["A nurse", "A chess coach"], global_seed=1, layout=layout)
        requests.append(LLMRequest(messages=plan.messages, json_schema=plan.json_schema, seed=10 + g,
                                   temperature=1.0, top_p=0.95, max_new_tokens=400, repetition_penalty=1.1))
    return requests


def test_a_random_model_filling_the_form_gives_schema_valid_documents(form_backend):
    requests = _requests()
    responses = form_backend.generate(requests)
    for request, response in zip(requests, responses):
        assert response.ok, response.error
        jsonschema.validate(response.parsed, request.json_schema)
    # reproducible per request, whatever shares the batch
    assert form_backend.generate([requests[2]])[0].text == responses[2].text


def test_the_form_prompt_names_no_json_and_ends_with_the_topic():
    user = _requests(n=1)[0].messages[1]["content"]
    assert "JSON" not in user and user.rstrip().endswith("(keywords: lens, light)")
    assert "JSON" in _requests(layout="json", n=1)[0].messages[1]["content"]


def test_a_form_too_short_for_max_new_tokens_is_truncated_not_invented(form_backend):
    request = LLMRequest(**{**_requests(n=1)[0].__dict__, "max_new_tokens": 8})
    [response] = form_backend.generate([request])
    assert response.finish_reason == "length" and response.parsed is None and "truncated" in response.error


def test_repetition_penalty_enters_the_cache_key_only_when_used():
    plain = LLMRequest(messages=[{"role": "user", "content": "hi"}])
    assert "repetition_penalty" not in plain.payload()
    assert LLMRequest(messages=plain.messages, repetition_penalty=1.2).payload()["repetition_penalty"] == 1.2
    with pytest.raises(ValueError, match="repetition_penalty"):
        LLMRequest(messages=plain.messages, repetition_penalty=0.5)
