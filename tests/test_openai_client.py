"""The openai backend's retry semantics against a scripted local server, and its Batch API mode against the
project's server (files and batches endpoints) with a fast echo model."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest

from tests.fake_openai import EchoBackend, Reply, ScriptedServer, completion, error_reply
from workflow_scripts.config import ModelSpec
from workflow_scripts.config.generate import BackendOptions
from workflow_scripts.llm.backends import openai_batch
from workflow_scripts.llm.backends.openai_api import OpenAIBackend
from workflow_scripts.llm.backends.openai_errors import EndpointRefused, parse_duration, server_delay
from workflow_scripts.llm.cache import CachedBackend, RequestCache
from workflow_scripts.llm.loader import LazyBackend, batch_state_dir
from workflow_scripts.llm.types import LLMRequest

KEY = "sk-test-secret-never-shown"


def _ask(prompt: str, seed: int = 0) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": prompt}], seed=seed, max_new_tokens=8)


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)
    servers = []

    def start(script):
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _backend(server, **options) -> OpenAIBackend:
    settings = {"base_url": server.base_url, "api_key_env": "TEST_OPENAI_KEY", "max_concurrency": 4,
                "backoff_initial_s": 0.0, "backoff_max_s": 5.0, "timeout_s": 30, **options}
    return OpenAIBackend("m", "r1", BackendOptions(**settings))


# --- the server's hints -------------------------------------------------------------------------------------


def test_rate_limit_durations_and_retry_after_forms_are_parsed():
    assert parse_duration("1s") == 1 and parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("0.5") == 0.5
    assert parse_duration("soon") is None and parse_duration("") is None
    assert server_delay({"retry-after-ms": "250"}, 429) == 0.25
    assert server_delay({"retry-after-ms": "250", "retry-after": "9"}, 503) == 0.25  # the finer one wins
    assert server_delay({"retry-after": "2"}, 503) == 2
    now = time.time()
    assert server_delay({"retry-after": formatdate(now + 30, usegmt=True)}, 503, now=now) == pytest.approx(30, abs=1)
    resets = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert server_delay(resets, 429) == 1  # neither says it is exhausted: the sooner reset
    assert server_delay({**resets, "x-ratelimit-remaining-tokens": "0"}, 429) == 360
    assert server_delay(resets, 503) is None  # rate-limit resets mean nothing on a server error


# --- online retries -----------------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_ms_says(scripted):
    server = scripted(lambda prompt, n: error_reply(429, "slow down", "rate_limit_exceeded",
                                                    {"retry-after-ms": "300"}) if n == 1 else Reply())
    backend = _backend(server)
    [answer] = backend.generate([_ask("a")])
    assert answer.ok and answer.text == "ok" and backend.retries == 1 and backend.http_calls == 2
    (first, _), (second, _) = server.calls
    assert 0.3 <= second - first < 2.0


def test_429_without_retry_after_waits_for_the_rate_limit_reset(scripted):
    headers = {"x-ratelimit-reset-requests": "250ms", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-tokens": "10ms"}
    server = scripted(lambda prompt, n: error_reply(429, "slow down", "rate_limit_exceeded", headers)
                      if n == 1 else Reply())
    [answer] = _backend(server).generate([_ask("a")])
    assert answer.ok
    (first, _), (second, _) = server.calls
    assert 0.25 <= second - first < 2.0


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_and_timeouts_are_retried(scripted, status):
    server = scripted(lambda prompt, n: error_reply(status, "try later") if n <= 2 else Reply())
    backend = _backend(server)
    [answer] = backend.generate([_ask("a")])
    assert answer.ok and backend.retries == 2 and len(server.calls) == 3


def test_retries_run_out_as_a_transient_failure(scripted):
    server = scripted(lambda prompt, n: error_reply(503, "down for maintenance"))
    [answer] = _backend(server, max_retries=2).generate([_ask("a")])
    assert answer.transient and "503" in answer.error and "down for maintenance" in answer.error
    assert len(server.calls) == 3


def test_a_slow_connection_times_out_and_is_retried(scripted):
    server = scripted(lambda prompt, n: Reply(delay_s=2.0) if n == 1 else Reply())
    [answer] = _backend(server, timeout_s=0.5).generate([_ask("a")])
    assert answer.ok and len(server.calls) == 2


@pytest.mark.parametrize("reply, says", [
    (error_reply(429, "You exceeded your current quota", "insufficient_quota"), "quota"),
    (error_reply(401, "Incorrect API key provided", "invalid_api_key"), "authentication"),
    (error_reply(403, "Project does not have access", None), "permission"),
])
def test_quota_and_credential_errors_stop_at_once_with_a_clear_message(scripted, reply, says):
    server = scripted(lambda prompt, n: reply)
    backend = _backend(server, max_retries=5)
    with pytest.raises(EndpointRefused) as caught:
        backend.generate([_ask(f"q{i}") for i in range(3)])
    message = str(caught.value)
    assert says in message and server.base_url in message and "$TEST_OPENAI_KEY" in message
    assert KEY not in message and reply.body["error"]["message"] in message
    assert len(server.calls) <= 4  # no retries: one call each at most (three requests, up to four slots)
    assert caught.value.exit_code == 2  # run_main reports it in one line and stops the stage


def test_other_client_errors_are_failed_answers_with_the_servers_message(scripted):
    server = scripted(lambda prompt, n: error_reply(400, "max_tokens is too large", "invalid_value"))
    backend = _backend(server)
    [answer] = backend.generate([_ask("a")])
    assert answer.finish_reason == "error" and not answer.transient and "max_tokens is too large" in answer.error
    assert len(server.calls) == 1


def test_usage_with_cached_prompt_tokens_is_recorded(scripted):
    server = scripted(lambda prompt, n: Reply(body=completion("hi", prompt_tokens=1200, completion_tokens=5,
                                                              cached_tokens=1024)))
    [answer] = _backend(server).generate([_ask("a")])
    assert (answer.prompt_tokens, answer.completion_tokens, answer.cached_prompt_tokens) == (1200, 5, 1024)
    assert answer.to_dict()["cached_prompt_tokens"] == 1024


def test_no_more_than_max_concurrency_requests_are_in_flight(scripted):
    server = scripted(lambda prompt, n: Reply(delay_s=0.05))
    answers = _backend(server, max_concurrency=3).generate([_ask(f"q{i}") for i in range(24)])
    assert all(a.ok for a in answers) and len(server.calls) == 24
    assert server.max_in_flight == 3


def test_a_slow_request_does_not_hold_up_the_others(scripted):
    server = scripted(lambda prompt, n: Reply(body=completion(prompt), delay_s=1.5 if prompt == "slow" else 0.02))
    backend = _backend(server, max_concurrency=4)
    requests = [_ask("slow")] + [_ask(f"q{i}") for i in range(20)]
    started = time.monotonic()
    arrivals = []
    for index, answer in backend.generate_as_completed(requests):
        arrivals.append((index, time.monotonic() - started))
        assert answer.text == requests[index].messages[0]["content"]
    assert sorted(i for i, _ in arrivals) == list(range(21))
    assert arrivals[-1][0] == 0  # the slow one comes last ...
    assert max(t for i, t in arrivals if i != 0) < 1.2  # ... and the other twenty did not wait for it


def test_the_local_server_answers_through_the_sdk_with_usage_details():
    from workflow_scripts.llm.server import ChatServer

    server = ChatServer(EchoBackend(), model_name="echo")
    server.start()
    try:
        backend = OpenAIBackend("echo", None, BackendOptions(base_url=server.base_url, api_key_env=None))
        [answer] = backend.generate([_ask("hello", seed=3)])
        assert answer.text == "echo hello seed 3" and answer.cached_prompt_tokens == 4
    finally:
        server.stop()


# --- batch mode -----------------------------------------------------------------------------------------------


@pytest.fixture()
def batch_server():
    from workflow_scripts.llm.server import ChatServer

    servers = []

    def start(**kwargs):
        server = ChatServer(EchoBackend(), model_name="echo", **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _batch_backend(server, cache_dir, **options) -> LazyBackend:
    settings = {"base_url": server.base_url, "api_key_env": None, "mode": "batch", "batch_poll_interval_s": 0.05,
                **options}
    return LazyBackend(ModelSpec(path="echo", backend="openai", revision="r1"), None, BackendOptions(**settings),
                       state_dir=batch_state_dir(cache_dir))


def _records(cache_dir) -> dict:
    files = list(batch_state_dir(cache_dir).glob("*.json"))
    return {key: value for file in files for key, value in json.loads(file.read_text())["batches"].items()}


def test_batch_round_trip_lands_in_the_request_cache(batch_server, tmp_path):
    server = batch_server()
    requests = [_ask(f"q{i}", seed=i) for i in range(5)] + [_ask("q0", seed=0)]  # a duplicate is sent once
    with RequestCache(tmp_path) as cache:
        cached = CachedBackend(_batch_backend(server, tmp_path), cache)
        answers = cached.generate(requests)
        assert [a.text for a in answers[:5]] == [f"echo q{i} seed {i}" for i in range(5)]
        assert answers[5].text == answers[0].text and all(a.prompt_tokens == 11 for a in answers)
        assert server.batch_creates == 1 and server.batch_lines == 5 and server.completion_calls == 0
        assert len(cache) == 5
        again = CachedBackend(_batch_backend(server, tmp_path), cache).generate(requests)
        assert [a.text for a in again] == [a.text for a in answers] and server.batch_creates == 1


def test_batches_hold_at_most_batch_max_requests_lines(batch_server, tmp_path):
    server = batch_server()
    answers = _batch_backend(server, tmp_path, batch_max_requests=2).generate([_ask(f"q{i}") for i in range(5)])
    assert all(a.ok for a in answers) and server.batch_creates == 3


def test_a_killed_job_resumes_polling_its_batch_without_submitting_again(batch_server, tmp_path, monkeypatch):
    server = batch_server(batch_delay_s=0.3)
    requests = [_ask(f"q{i}", seed=i) for i in range(4)]

    def killed(batch_id):
        raise KeyboardInterrupt(f"killed after recording {batch_id}")

    monkeypatch.setattr(openai_batch, "after_recorded", killed)
    with RequestCache(tmp_path) as cache:
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(_batch_backend(server, tmp_path), cache).generate(requests)
        [batch_id] = _records(tmp_path)
        assert server.batch_creates == 1 and len(cache) == 0
    monkeypatch.undo()
    with RequestCache(tmp_path) as cache:  # a new job: a new backend, a new client, the same cache folder
        answers = CachedBackend(_batch_backend(server, tmp_path), cache).generate(requests)
        assert [a.text for a in answers] == [f"echo q{i} seed {i}" for i in range(4)]
        assert server.batch_creates == 1  # zero new submissions
        assert len(cache) == 4 and server.batch_lines == 4
    assert list(_records(tmp_path)) == [batch_id]  # dropped only once the next call shows the answers were kept


def test_two_jobs_asking_the_same_requests_at_once_submit_one_batch(batch_server, tmp_path):
    import threading

    server = batch_server(batch_delay_s=0.3)
    requests = [_ask(f"q{i}", seed=i) for i in range(3)]
    results = {}

    def job(name):
        results[name] = [a.text for a in _batch_backend(server, tmp_path).generate(requests)]

    threads = [threading.Thread(target=job, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results["a"] == results["b"] == [f"echo q{i} seed {i}" for i in range(3)]
    assert server.batch_creates == 1


def test_failed_batch_lines_are_resubmitted(batch_server, tmp_path):
    server = batch_server(batch_fail_lines=2)
    with RequestCache(tmp_path) as cache:
        answers = CachedBackend(_batch_backend(server, tmp_path), cache).generate([_ask(f"q{i}") for i in range(5)])
        assert all(a.ok for a in answers) and server.batch_creates == 2 and server.batch_lines == 5
        assert len(cache) == 5


def test_lines_failing_every_resubmission_are_transient_and_asked_again_on_a_rerun(batch_server, tmp_path):
    server = batch_server(batch_fail_lines=4)
    backend = _batch_backend(server, tmp_path, max_retries=1)
    answers = backend.generate([_ask("a"), _ask("b")])
    assert all(a.transient and "500" in a.error for a in answers) and server.batch_creates == 2
    assert _records(tmp_path) == {}  # given up: not recorded, so the rerun submits them again
    answers = backend.generate([_ask("a"), _ask("b")])
    assert all(a.ok for a in answers) and server.batch_creates == 3


def test_batch_mode_needs_a_state_directory():
    with pytest.raises(ValueError, match="state directory"):
        OpenAIBackend("m", None, BackendOptions(base_url="http://127.0.0.1:9/v1", mode="batch"))


def test_generation_stage_hands_a_whole_chunk_to_a_batch_mode_backend(tmp_path):
    """Online mode sends requests_per_batch at a time; batch mode all of a chunk's misses at once."""
    from tests.test_generate_units import TOPICS, raw_config
    from workflow_scripts.generate.stage import generate_experiment, split_config
    from workflow_scripts.llm.types import LLMResponse

    class Recording:
        def __init__(self):
            self.sizes = []

        def identity(self):
            return "fake:recording@1"

        def generate(self, requests):
            self.sizes.append(len(requests))
            return [LLMResponse(text="no", finish_reason="error", error="unusable") for _ in requests]

    # 2 topics x 10 generations in chunks of 8
    for mode, expected in (("online", [3, 3, 2, 3, 3, 2, 3, 1]), ("batch", [8, 8, 4])):
        raw = raw_config(requests_per_batch=3, plan_chunk_size=8, max_attempts=1,
                         models={"gen": {"backend": {"mode": mode}}})
        config, generation = split_config(raw)
        backend = Recording()
        with RequestCache(tmp_path / mode) as cache:
            generate_experiment(config, generation, "e10", TOPICS[:2], backend, cache, progress=False)
        assert backend.sizes == expected, mode
