"""Generation backends with the tiny random Llama: transformers (constrained) and HTTP through our server."""

from __future__ import annotations

import json
import urllib.request

import jsonschema
import pytest

from workflow_scripts.config import ModelSpec
from workflow_scripts.config.generate import BackendOptions, PromptConfig, SchemaBounds
from workflow_scripts.generate.templates import TEMPLATES, Topic, plan_generation
from workflow_scripts.llm.loader import LazyBackend, load_backend, spec_identity
from workflow_scripts.llm.types import LLMRequest

TINY_BOUNDS = SchemaBounds(min_passages=3, max_passages=4, max_nuance_chars=6, max_passage_chars=16,
                           max_question_chars=12, max_option_chars=6, max_explanation_chars=12)
TOPICS = [Topic("t1", "Science/Physics/Optics", ("lens",)), Topic("t2", "Science/Biology/Cells", ("cell",)),
          Topic("t3", "Science/Chemistry/Acids", ("acid",))]
PERSONAS = ["A curious child", "A retired engineer", "A nurse on night shifts", "A chess coach"]


@pytest.fixture(scope="module")
def hf_backend(tiny_llama_dir):
    import torch

    torch.set_num_threads(1)
    spec = ModelSpec(path=str(tiny_llama_dir))
    return load_backend(spec, options=BackendOptions(device="cpu", batch_size=4))


def _requests(n_per_template=2, max_new_tokens=400):
    requests = []
    for template in TEMPLATES:
        for g in range(n_per_template):
            plan = plan_generation(template, TOPICS[g % 3], g, prompts=PromptConfig(personas_per_prompt=2),
                                   bounds=TINY_BOUNDS, personas=PERSONAS, global_seed=1, topic_pool=TOPICS)
            requests.append(LLMRequest(messages=plan.messages, json_schema=plan.json_schema, seed=100 + g,
                                       temperature=1.0, top_p=0.95, max_new_tokens=max_new_tokens))
    return requests


def test_hf_constrained_json_is_schema_valid(hf_backend):
    requests = _requests()
    responses = hf_backend.generate(requests)
    assert len(responses) == len(requests)
    for request, response in zip(requests, responses):
        assert response.finish_reason == "stop", response.error
        assert response.error is None
        document = json.loads(response.text, strict=False)
        jsonschema.validate(document, request.json_schema)
        assert response.parsed == document
        assert response.prompt_tokens > 100 and 0 < response.completion_tokens <= request.max_new_tokens
    # one seed per request, whatever else shares the batch
    again = hf_backend.generate([requests[3], requests[0]])
    assert [a.text for a in again] == [responses[3].text, responses[0].text]
    other_seed = hf_backend.generate([LLMRequest(**{**requests[0].__dict__, "seed": 999})])
    assert other_seed[0].text != responses[0].text


def test_hf_free_text_and_truncation(hf_backend):
    free, short = hf_backend.generate([
        LLMRequest(messages=[{"role": "user", "content": "Tell me about rivers."}], max_new_tokens=12, seed=1),
        LLMRequest(messages=[{"role": "user", "content": "Tell me about rivers."}], max_new_tokens=5, seed=2,
                   json_schema={"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
    ])
    assert free.finish_reason in ("stop", "length") and free.parsed is None and free.error is None
    assert short.finish_reason == "length" and short.parsed is None and "truncated" in short.error


def test_identity_is_content_addressed(tiny_llama_dir, tmp_path, hf_backend):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_llama_dir, moved)
    local = ModelSpec(local="elsewhere")
    assert spec_identity(local, tmp_path) == hf_backend.identity()  # path does not matter, content does
    assert hf_backend.identity().startswith("transformers:dir-")
    lazy = LazyBackend(local, tmp_path, BackendOptions(device="cpu"))
    assert lazy.identity() == hf_backend.identity() and not lazy.loaded
    assert spec_identity(ModelSpec(path="gpt-4o", revision="2024-08-06", backend="openai")) == \
        "openai:gpt-4o@2024-08-06"
    with pytest.raises(FileNotFoundError, match="--models"):
        spec_identity(ModelSpec(local="tiny"))


# --- HTTP ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def server(hf_backend):
    from workflow_scripts.llm.server import ChatServer

    servers = []

    def start(**kwargs):
        srv = ChatServer(hf_backend, host="127.0.0.1", port=0, model_name="tiny", batch_size=4, **kwargs)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def _http_backend(srv, **options):
    return load_backend(ModelSpec(path="tiny", backend="openai", revision="r1"),
                        options=BackendOptions(**{"base_url": srv.base_url, "api_key_env": "GEN_TEST_KEY",
                                                  "max_concurrency": 4, "backoff_initial_s": 0.01,
                                                  "backoff_max_s": 0.05, "timeout_s": 60, **options}))


def test_http_backend_against_local_server(server, monkeypatch):
    monkeypatch.setenv("GEN_TEST_KEY", "secret-for-test")
    srv = server()
    with urllib.request.urlopen(srv.base_url + "/models") as reply:
        assert json.loads(reply.read())["data"][0]["id"] == "tiny"
    backend = _http_backend(srv)
    assert backend.identity() == "openai:tiny@r1"
    requests = _requests(n_per_template=1)
    responses = backend.generate(requests)
    assert srv.completion_calls == len(requests)
    for request, response in zip(requests, responses):
        assert response.finish_reason == "stop", response.error
        jsonschema.validate(response.parsed, request.json_schema)
        assert response.prompt_tokens > 0 and response.completion_tokens > 0


def test_http_backend_batch_mode_through_the_local_server(server, tmp_path):
    """The same schema-constrained requests through the Batch API stand-in: files up, batch, files down."""
    from workflow_scripts.llm.cache import CachedBackend, RequestCache
    from workflow_scripts.llm.loader import batch_state_dir

    srv = server()
    spec = ModelSpec(path="tiny", backend="openai", revision="r1")
    options = BackendOptions(base_url=srv.base_url, api_key_env=None, mode="batch", batch_poll_interval_s=0.05)
    requests = _requests(n_per_template=1)
    with RequestCache(tmp_path / "cache") as cache:
        cached = CachedBackend(LazyBackend(spec, None, options, state_dir=batch_state_dir(tmp_path / "cache")),
                               cache)
        responses = cached.generate(requests)
        assert srv.batch_creates == 1 and srv.completion_calls == 0 and len(cache) == len(requests)
    for request, response in zip(requests, responses):
        assert response.finish_reason == "stop", response.error
        jsonschema.validate(response.parsed, request.json_schema)
        assert response.prompt_tokens > 0 and response.completion_tokens > 0


@pytest.mark.parametrize("status", [429, 503])
def test_http_backend_retries_with_backoff(server, status):
    srv = server(fail_first=3, fail_status=status)
    backend = _http_backend(srv, max_concurrency=1)
    requests = _requests(n_per_template=1)[:2]
    responses = backend.generate(requests)
    assert all(r.finish_reason == "stop" and r.parsed is not None for r in responses)
    assert srv.completion_calls == len(requests) + 3 and backend.retries == 3


def test_http_backend_gives_up_as_transient(server):
    srv = server(fail_first=100, fail_status=503)
    backend = _http_backend(srv, max_retries=2)
    [response] = backend.generate(_requests(n_per_template=1)[:1])
    assert response.finish_reason == "error" and response.transient and "503" in response.error
    assert srv.completion_calls == 3


def test_http_backend_requires_a_key_for_remote_endpoints(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        load_backend(ModelSpec(path="gpt-4o", backend="openai"),
                     options=BackendOptions(base_url="https://api.example.com/v1", api_key_env="NO_SUCH_KEY_VAR"))


def test_server_binds_loopback_only(hf_backend):
    from workflow_scripts.llm.server import ChatServer

    with pytest.raises(ValueError, match="loopback"):
        ChatServer(hf_backend, host="0.0.0.0", port=0)


def test_vllm_backend_maps_onto_the_documented_offline_api(monkeypatch, tmp_path):
    """vLLM cannot be installed here: check the thin adapter against a stand-in with vLLM's API shape."""
    import sys
    import types

    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class StructuredOutputsParams:
        def __init__(self, json=None):
            self.json = json

    class LLM:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def chat(self, conversations, sampling_params, use_tqdm):
            calls["chat"] = (conversations, sampling_params)
            completion = types.SimpleNamespace(text='{"a": "x"}', finish_reason="stop", token_ids=[1, 2, 3])
            return [types.SimpleNamespace(prompt_token_ids=[0] * 7, outputs=[completion]) for _ in conversations]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = StructuredOutputsParams
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)

    backend = load_backend(ModelSpec(path="meta-llama/Llama-3.1-8B-Instruct", revision="0e9e39f", backend="vllm"),
                           options=BackendOptions(tensor_parallel_size=2, max_model_len=4096))
    assert backend.identity() == "vllm:meta-llama/Llama-3.1-8B-Instruct@0e9e39f"
    assert calls["init"]["tensor_parallel_size"] == 2 and calls["init"]["enable_prefix_caching"] is True
    assert calls["init"]["revision"] == "0e9e39f" and calls["init"]["max_model_len"] == 4096
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    [response] = backend.generate([LLMRequest(messages=[{"role": "user", "content": "hi"}], json_schema=schema,
                                              seed=9, temperature=0.7, top_p=0.9, max_new_tokens=64)])
    assert response.parsed == {"a": "x"} and response.prompt_tokens == 7 and response.completion_tokens == 3
    [params] = calls["chat"][1]
    assert params.kwargs["seed"] == 9 and params.kwargs["max_tokens"] == 64 and params.kwargs["top_p"] == 0.9
    assert params.kwargs["structured_outputs"].json == schema


def _openai(mode):
    from workflow_scripts.llm.backends.openai_api import OpenAIBackend

    return OpenAIBackend("gpt-4-0613", "0613", BackendOptions(base_url="http://127.0.0.1:9/v1"), mode)


def test_openai_structured_output_modes_shape_the_request():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    request = LLMRequest(messages=[{"role": "user", "content": "Answer in JSON."}], json_schema=schema)
    assert _openai("json_schema").body(request)["response_format"]["type"] == "json_schema"
    assert _openai("json_object").body(request)["response_format"] == {"type": "json_object"}
    assert "response_format" not in _openai("none").body(request)


def test_json_mode_without_the_word_json_is_refused_before_any_call():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    backend = _openai("json_object")
    [answer] = backend.generate([LLMRequest(messages=[{"role": "user", "content": "Say hi."}], json_schema=schema)])
    assert answer.finish_reason == "error" and "needs the word 'JSON'" in answer.error and backend.http_calls == 0


def test_fenced_json_from_a_plain_text_model_is_parsed_and_validated():
    from workflow_scripts.llm.types import parse_json_output

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert parse_json_output('```json\n{"a": "x"}\n```', schema) == ({"a": "x"}, None)
    value, error = parse_json_output('```\n{"b": 1}\n```', schema)
    assert value is None and "does not match the schema" in error
