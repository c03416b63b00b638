"""Jobs that share requests and a provider: requests paid once, requests in flight bounded across jobs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.project import copy_project, run
from workflow_scripts.core.api_limits import api_demand, api_providers, provider_resource
from workflow_scripts.llm.types import LLMRequest, LLMResponse


def test_provider_resource_names():
    assert provider_resource("https://api.openai.com/v1") == "api_openai_com"
    assert provider_resource("http://127.0.0.1:8011/v1") == "api_127_0_0_1_8011"
    assert provider_resource("https://My-Proxy.example.org/openai/v1") == "api_my_proxy_example_org"
    with pytest.raises(ValueError, match="names no host"):
        provider_resource("/v1")


def _api_config(project: Path, base_url: str, *, max_concurrency: int = 4) -> dict:
    """The tiny configuration plus two experiments on one API model that share some requests (same template,
    generator and seed; the 8-topic sample is part of the 12-topic one): T=8 x G=3 and T=12 x G=2 share the
    8 x 2 requests of each attempt, and each has requests of its own."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["models"]["api-gen"] = {"path": "fake-served", "revision": "test", "backend": "openai"}
    raw["generate"]["models"]["api-gen"] = {"backend": {
        "base_url": base_url, "api_key_env": None, "max_concurrency": max_concurrency, "backoff_initial_s": 0.01}}
    raw["generate"]["json_schema"]["string_mode"] = "free"
    raw["topics"]["extract_from_corpus"] = False
    for name, topics, generations in (("share_a", 8, 3), ("share_b", 12, 2)):
        raw["experiments"][name] = {"description": f"shares requests, T={topics}, G={generations}", "mix": {},
                                    "synthetic": {"topics": topics, "generations_per_topic": generations,
                                                  "template": "topic", "generator": "api-gen"}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(project, "python", "-m", "workflow_scripts.dvc_yaml")
    # the first plan of a fresh copy with two new experiments can miss the fingerprint stamps it writes while
    # planning (MissingInputException on .snakemake/fingerprints, Snakemake 9.27): it leaves them for the next
    run(project, "snakemake", "-n", "data/generations/share_a", "data/generations/share_b", check=False)
    return raw


def test_api_jobs_declare_their_requests_in_flight(tmp_path):
    from workflow_scripts.config import load_config

    project = copy_project(tmp_path / "p")
    _api_config(project, "http://127.0.0.1:8099/v1", max_concurrency=6)
    config = load_config(project / "params.yaml")
    assert api_providers(config) == ["api_127_0_0_1_8099"]
    assert api_demand(config, "generate", "share_a") == {"api_127_0_0_1_8099": 6}
    assert api_demand(config, "generate", "topic_t8_g2") == {}  # a local model asks for no API capacity
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["generate"]["models"]["api-gen"]["backend"]["mode"] = "batch"
    (project / "batch.yaml").write_text(yaml.safe_dump(raw))
    assert api_demand(load_config(project / "batch.yaml"), "generate", "share_a") == {"api_127_0_0_1_8099": 0}  # files, not connections
    result = run(project, "snakemake", "-n", "--cores", "2", "data/generations/share_a", "data/generations/share_b")
    blocks = [b for b in re.split(r"\n(?=\[)", result.stdout) if "rule generate:" in b]
    declared = {re.search(r"experiment=(\w+)", b).group(1): re.search(r"api_127_0_0_1_8099=(\d+)", b).group(1)
                for b in blocks}
    assert declared == {"share_a": "6", "share_b": "6"}
    sampling = [b for b in re.split(r"\n(?=\[)", result.stdout) if "rule sample_topics:" in b]
    assert sampling and all("api_127_0_0_1_8099" not in b for b in sampling)  # other stages declare nothing


class _SlowFake:
    """Answers every request after a delay, counting each distinct request and the requests in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.peak = 0
        self.lock = threading.Lock()

    def identity(self) -> str:
        return "fake:slow@1"

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        with self.lock:
            self.in_flight += len(requests)
            self.peak = max(self.peak, self.in_flight)
            self.seen.update(json.dumps(r.payload(), sort_keys=True) for r in requests)
        time.sleep(self.delay_s)
        with self.lock:
            self.in_flight -= len(requests)
        return [LLMResponse(text="not a document", prompt_tokens=5, completion_tokens=3) for _ in requests]


@pytest.mark.slow
def test_overlapping_experiments_send_each_request_once_and_share_the_cap(tmp_path):
    from workflow_scripts.llm.server import ChatServer

    fake = _SlowFake(delay_s=0.6)
    # the server hands the requests that arrived meanwhile to the backend as one batch: a batch's size is
    # the number of requests in flight
    server = ChatServer(fake, port=0, model_name="fake-served", batch_size=64, batch_wait_s=0.05)
    server.start()
    try:
        project = copy_project(tmp_path / "p")
        raw = _api_config(project, server.base_url, max_concurrency=4)
        provider = provider_resource(server.base_url)
        result = run(project, "snakemake", "--cores", "2", "data/generations/share_a", "data/generations/share_b",
                     "--resources", f"{provider}=8", check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        server.stop()
    attempts = raw["generate"]["max_attempts"]
    distinct = (8 * 3 + 4 * 2) * attempts  # the union of both experiments' (topic, generation, attempt)
    assert sum(fake.seen.values()) == len(fake.seen) == distinct  # every distinct request exactly once
    assert fake.peak <= 8, fake.peak  # the cap holds over both jobs
    counts = [{**json.loads((project / "data" / "generations" / name / "manifest.json").read_text())["counts"],
               **json.loads((project / "data" / "generations" / f"{name}.run.json").read_text())}
              for name in ("share_a", "share_b")]
    print("peak requests in flight", fake.peak, [(c["backend_requests"], c["cache_hits"]) for c in counts])
    assert sum(c["backend_requests"] for c in counts) == len(fake.seen)
    assert sum(c["requests"] - c["cache_hits"] for c in counts) == len(fake.seen)
